"""Short fault runs in network namespaces (see chaos.py) while a client writes at QUORUM:
no acknowledged write may be lost, every replica's own copy must converge (hints and
anti-entropy; no reads) within CONVERGENCE_BOUND seconds of the last fault, and all members
must agree that all are alive. tools/chaos runs a longer random schedule. ringcache only;
needs root."""

import pytest

import chaos
from conftest import _ringcache_bin

# anti-entropy-interval is 500 ms in these runs: a few rounds, with room for a loaded machine.
CONVERGENCE_BOUND = 15


@pytest.fixture(autouse=True)
def _ringcache_only(target):
    if target != "ringcache":
        pytest.skip("ringcache cluster behaviour")


@pytest.fixture
def cluster(tmp_path):
    why = chaos.can_run()
    if why:
        pytest.skip(why)
    c = chaos.ChaosCluster(str(tmp_path), _ringcache_bin())
    try:
        c.setup()
        c.start_all()
        yield c
    finally:
        c.teardown()


def assert_converged(findings):
    seconds = findings["seconds to converge after the last fault"]
    assert seconds is not None and seconds < CONVERGENCE_BOUND, findings


def test_kill_9_and_restart_under_writes_lose_nothing_and_converge(cluster):
    findings = chaos.run(cluster, [(1.0, "wait", None), (2.0, "kill", "n2"), (2.0, "restart", "n2"),
                                   (2.0, "kill", "n3"), (2.0, "restart", "n3")])
    print(findings)
    assert findings["writes attempted"] > 100
    assert findings["acknowledged writes lost"] == 0, findings
    assert_converged(findings)
    assert findings["members agree, all alive"], findings


def test_a_partition_that_heals_leaves_every_member_alive(cluster):
    # Found by this test: each side used to keep the other dead for good (nobody pinged the
    # dead, and the cut-off node's gossip socket closed on ENETUNREACH).
    findings = chaos.run(cluster, [(1.0, "wait", None), (3.0, "cut", "n3"), (3.0, "heal", "n3")])
    print(findings)
    assert findings["acknowledged writes lost"] == 0, findings
    assert_converged(findings)
    assert findings["members agree, all alive"], findings


def test_a_member_joins_and_leaves_around_kill_9_under_writes_losing_nothing(cluster):
    findings = chaos.run(cluster, [(1.0, "wait", None), (2.0, "join", "n4"), (2.0, "kill", "n2"), (2.0, "restart", "n2"),
                                   (2.0, "leave", "n4")])
    print(findings)
    assert findings["acknowledged writes lost"] == 0, findings
    assert_converged(findings)
    assert findings["members agree, all alive"], findings
