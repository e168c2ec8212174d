"""Hinted handoff (`sloppy-quorum yes`) on a real 3-node cluster with N=2, W=2: a write for a
dead replica goes to a stand-in as a hint, and reaches the replica once it is back.
ringcache only."""

import pytest
import redis

from test_cluster import LocalCluster


@pytest.fixture(autouse=True)
def _ringcache_only(target):
    if target != "ringcache":
        pytest.skip("ringcache cluster behaviour")


def _sum(c, names, field):
    return sum(int(c.client(n).info("cluster")[field]) for n in names)


def _write_with_n2_dead(tmp_path, sloppy, extra="", px=None):
    c = LocalCluster(str(tmp_path), extra=f"replicas 2\nread-quorum 1\nwrite-quorum 2\nsloppy-quorum {sloppy}\n" + extra).start_all()
    c.kill("n2")
    n1 = c.client("n1")
    c.wait_until(lambda: b"cluster_state:degraded" in n1.execute_command("CLUSTER", "INFO"))
    failed = 0
    for i in range(300):
        try:
            assert n1.set(f"key:{i}", f"v{i}", px=px)
        except redis.exceptions.ResponseError as e:
            assert str(e).startswith("NOQUORUM"), e
            failed += 1
    return c, failed


def test_without_a_sloppy_quorum_writes_for_a_dead_replica_fail(tmp_path):
    c, failed = _write_with_n2_dead(tmp_path, "no")
    try:
        assert failed > 100, "about two thirds of the keys have n2 as a replica"
        assert _sum(c, ["n1", "n3"], "hints_pending") == 0
    finally:
        c.stop_all()


def test_hints_keep_writes_for_a_dead_replica_and_reach_it_when_it_returns(tmp_path):
    c, failed = _write_with_n2_dead(tmp_path, "yes")
    try:
        assert failed == 0
        pending = _sum(c, ["n1", "n3"], "hints_pending")
        assert 100 < pending < 300
        c.start("n2")
        c.wait_until(lambda: _sum(c, ["n1", "n3"], "hints_pending") == 0, timeout=20)
        assert _sum(c, ["n1", "n3"], "hints_delivered") == pending
        assert _sum(c, ["n1", "n3"], "hints_dropped") == 0
        # Read at ONE through n2: where n2 is a replica its own copy answers first, so this
        # sees what the hints brought it (no read repair has touched these keys).
        n2 = c.client("n2")
        n2.execute_command("CONSISTENCY", "READ", "ONE")
        assert int(n2.info("replication")["read_repairs"]) == 0
        for i in range(300):
            assert n2.get(f"key:{i}") == f"v{i}".encode()
    finally:
        c.stop_all()


def test_hints_are_bounded_and_dropped_once_their_entries_expire_while_the_owner_stays_away(tmp_path):
    c, failed = _write_with_n2_dead(tmp_path, "yes", extra="hint-max-count 40\n", px=2500)
    n1 = c.client("n1")
    try:
        # Each stand-in (n1 for n2's keys shared with n3, n3 for those shared with n1) keeps
        # at most 40 hints; a refused hint is no acknowledgement, so the write fails.
        pending = _sum(c, ["n1", "n3"], "hints_pending")
        assert pending == 80, pending
        assert failed > 0
        assert _sum(c, ["n1", "n3"], "hints_dropped") == failed
        # n2 stays down: the hints go once their entries expire, not when n2 comes back.
        c.wait_until(lambda: _sum(c, ["n1", "n3"], "hints_pending") == 0, timeout=10)
        assert _sum(c, ["n1", "n3"], "hints_dropped") == failed + pending
        c.start("n2")
        c.wait_until(lambda: b"cluster_state:ok" in n1.execute_command("CLUSTER", "INFO"), timeout=20)
        assert _sum(c, ["n1", "n3"], "hints_delivered") == 0
    finally:
        c.stop_all()


def _local_keys(c, name):
    info = c.client(name).info("keyspace")
    return int(info.get("db0", {}).get("keys", 0))


def _without_n3(tmp_path, extra=""):
    """A cluster with anti-entropy every 300 ms, no hints, and n3 down; and a client of n1."""
    c = LocalCluster(str(tmp_path), extra="sloppy-quorum no\nanti-entropy-interval 300\n" + extra).start_all()
    try:
        c.kill("n3")
        n1 = c.client("n1")
        c.wait_until(lambda: b"cluster_state:degraded" in n1.execute_command("CLUSTER", "INFO"))
    except BaseException:
        c.stop_all()
        raise
    return c, n1


def test_anti_entropy_brings_back_a_replica_that_missed_writes_without_any_read(tmp_path):
    c, n1 = _without_n3(tmp_path)
    try:
        for i in range(200):
            assert n1.set(f"key:{i}", f"v{i}")
        n1.delete("key:0")
        c.start("n3")
        # No read touches these keys: n3 converges through the Merkle exchange alone. Its
        # local copy counts live keys (key:0 is a tombstone there, not a key).
        c.wait_until(lambda: _local_keys(c, "n3") == 199, timeout=20)
        info = c.client("n3").info("cluster")
        pulled = int(info["anti_entropy_pulled"]) + sum(int(c.client(n).info("cluster")["anti_entropy_pushed"]) for n in ["n1", "n2"])
        assert pulled >= 200
        assert int(c.client("n3").info("replication")["read_repairs"]) == 0
        n3 = c.client("n3")
        n3.execute_command("CONSISTENCY", "READ", "ONE")
        for i in range(1, 200):
            assert n3.get(f"key:{i}") == f"v{i}".encode()
        assert n3.get("key:0") is None
    finally:
        c.stop_all()


def test_under_vector_clocks_anti_entropy_brings_back_siblings_a_replica_missed(tmp_path):
    c, n1 = _without_n3(tmp_path, "reconcile vclock\n")
    try:
        for i in range(100):
            assert n1.set(f"key:{i}", f"v{i}")
        # Two writes from the same (empty) context: concurrent, kept as two siblings.
        for i in range(20):
            n1.execute_command("VSET", f"twins:{i}", "", "left")
            n1.execute_command("VSET", f"twins:{i}", "", "right")
        c.start("n3")
        # No read touches these keys: n3 gets them, siblings and clocks, from the exchange.
        c.wait_until(lambda: _local_keys(c, "n3") == 120, timeout=20)
        assert int(c.client("n3").info("replication")["read_repairs"]) == 0
        n3 = c.client("n3", single_connection_client=True)
        n3.execute_command("CONSISTENCY", "READ", "ONE")
        assert n3.get("key:7") == b"v7"
        c.kill("n1")
        c.kill("n2")
        for i in range(20):
            context, values = n3.execute_command("VGET", f"twins:{i}")
            assert sorted(values) == [b"left", b"right"], (i, values)
    finally:
        c.stop_all()
