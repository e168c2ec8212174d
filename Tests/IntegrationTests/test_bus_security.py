"""The cluster bus and gossip ports under attack, on real nodes: crafted messages that once
crashed a node, bounds on what a peer can make a node hold, the handshake and gossip
against replay, and a cluster on real (network-namespace) addresses that a node without the
secret cannot join, read or write. Each test checks that the node is still up, kept its
data and counted what it refused. ringcache only."""

import os
import socket
import subprocess
import threading
import time

import pytest
import redis

import chaos
from bus_client import BusClient, BusError, command, gossip_packet, read_reply
from conftest import _ringcache_bin, free_port
from test_cluster import NAMES, LocalCluster

SECRET = "s3cret"


@pytest.fixture(autouse=True)
def _ringcache_only(target):
    if target != "ringcache":
        pytest.skip("ringcache cluster behaviour")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(str(tmp_path_factory.mktemp("bus")), extra="cluster-bus-idle-timeout 3\nmax-siblings 4\n").start_all()
    c.client("n1").set("precious", "data")
    yield c
    c.stop_all()


def info(c, name="n1"):
    return c.client(name).info("cluster")


def counted(c, field, before, name="n1", at_least=1, timeout=5):
    """Waits until INFO's `field` on `name` rose by at least `at_least` since `before`."""
    c.wait_until(lambda: info(c, name)[field] >= before[field] + at_least, timeout=timeout)


def still_serving(c, name="n1"):
    """The node is up, answers PING on both ports, and kept its data."""
    assert c.procs[name].poll() is None, c.log(name)
    assert c.client(name).ping()
    assert c.client(name).get("precious") == b"data"
    with BusClient("127.0.0.1", c.bus_ports[name], "itest", SECRET, next(n for n in NAMES if n != name)) as bus:
        assert bus.call("PING") == b"PONG"


def peer(c, name="n1", as_="n2"):
    return BusClient("127.0.0.1", c.bus_ports[name], "itest", SECRET, as_)


# MARK: crafted messages that once crashed a node


def test_a_signed_gossip_update_with_the_largest_incarnation_is_dropped(cluster):
    before = info(cluster)
    packet = gossip_packet("itest", SECRET, "n2", updates=[("n1", 2**64 - 1, "suspect")])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(packet, ("127.0.0.1", cluster.bus_ports["n1"]))
    counted(cluster, "gossip_dropped_malformed", before)
    still_serving(cluster)


def test_member_versions_at_their_maximum_are_refused(cluster):
    before = info(cluster)
    members = (b"*4\r\n$2\r\nn2\r\n$1\r\n1\r\n*1\r\n*8\r\n$2\r\nn9\r\n$9\r\n127.0.0.1\r\n$4\r\n7999\r\n$4\r\n8999\r\n"
               b"$20\r\n18446744073709551615\r\n$1\r\n0\r\n$1\r\n0\r\n$5\r\nalive\r\n*0\r\n")
    with peer(cluster) as bus:
        reply = bus.call("RC.MEMBERS", members)
        assert isinstance(reply, BusError) and "2^62" in str(reply), reply
    counted(cluster, "bus_protocol_errors", before)
    assert info(cluster)["cluster_members"] == 3
    still_serving(cluster)


def test_a_chunk_claiming_a_huge_total_is_refused(cluster):
    with peer(cluster) as bus:
        reply = bus.call("RC.XFERPART", "n2", "k", str(int(time.time() * 1000) << 16), "1", "0", "0", str(2**63 - 1), "abc")
        assert isinstance(reply, BusError), reply
    still_serving(cluster)


def test_a_timestamp_far_in_the_future_is_refused_and_the_clock_stays(cluster):
    with peer(cluster) as bus:
        for timestamp in (2**63 - 1, 2**64 - 1, (int(time.time() * 1000) + 3_600_000) << 16):
            reply = bus.call("RC.PUT", "clock", str(timestamp), "1", "0", "v")
            assert isinstance(reply, BusError) and "ahead" in str(reply), reply
        cluster.client("n1").set("after", "x")
        # The node's next version is stamped with about now, not the forged future.
        version = bus.call("RC.GET", "after")[0]
        assert abs((version >> 16) - time.time() * 1000) < 60_000
    still_serving(cluster)


def test_exec_takes_only_read_modify_write_commands_and_sane_quorums(cluster):
    with peer(cluster) as bus:
        for args in (("RC.EXEC", str(2**63 - 1), "1", "INCR", "n"), ("RC.EXEC", "1", "1", "CONFIG", "GET", "requirepass"),
                     ("RC.EXEC", "1", "1", "FLUSHALL", "x"), ("RC.EXEC", "1", "1", "CLUSTER", "LEAVE")):
            reply = bus.call(*args)
            assert isinstance(reply, BusError), (args, reply)
        assert bus.call("RC.EXEC", "2", "2", "INCR", "counter") == 1
    still_serving(cluster)


# MARK: before the handshake


def raw(cluster, payload, name="n1", timeout=6):
    """Sends payload on a fresh bus connection; what came back, and whether it was closed."""
    with socket.create_connection(("127.0.0.1", cluster.bus_ports[name]), timeout=timeout) as s:
        try:
            s.sendall(payload)
        except OSError:
            return b"", True
        data = b""
        s.settimeout(timeout)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return data, True
                data += chunk
        except socket.timeout:
            return data, False
        except OSError:
            return data, True


def test_an_unauthenticated_peer_cannot_send_big_bulks_or_arrays(cluster):
    before = info(cluster)
    for payload in (b"*1000000\r\n", b"*2\r\n$8\r\nRC.HELLO\r\n$536870912\r\n" + b"x" * 10000, os.urandom(5000),
                    b"*1\r\n$4\r\nPING\r\n", b"*2\r\n$6\r\nRC.GET\r\n$1\r\nk\r\n"):
        start = time.monotonic()
        data, closed = raw(cluster, payload)
        assert closed and time.monotonic() - start < 5, (payload[:20], data)
        assert data == b"" or data.startswith(b"-"), data
    after = info(cluster)
    assert (after["bus_handshakes_refused"] + after["bus_closed_unauthenticated_oversize"]
            >= before["bus_handshakes_refused"] + before["bus_closed_unauthenticated_oversize"] + 5)
    still_serving(cluster)


def test_a_silent_connection_is_closed_at_the_handshake_deadline(cluster):
    before = info(cluster)
    start = time.monotonic()
    data, closed = raw(cluster, b"", timeout=8)
    assert closed and 2 < time.monotonic() - start < 6
    counted(cluster, "bus_handshake_timeouts", before)


def test_a_captured_handshake_replayed_on_a_new_connection_is_refused(cluster):
    with peer(cluster) as bus:
        captured = bus.sent
        assert bus.call("RC.GET", "precious")[3] == b"data"
    assert SECRET.encode() not in captured
    before = info(cluster)
    data, closed = raw(cluster, captured + command("RC.GET", "precious"))
    assert closed and b"data" not in data and b"-NOAUTH" in data, data
    counted(cluster, "bus_handshakes_refused", before)


def test_a_wrong_secret_and_the_old_clear_text_handshake_are_refused(cluster):
    with pytest.raises(BusError):
        BusClient("127.0.0.1", cluster.bus_ports["n1"], "itest", "guess", "n2")
    data, closed = raw(cluster, command("RC.AUTH", "itest", SECRET, "n2") + command("RC.GET", "precious"))
    assert closed and b"data" not in data


# MARK: after the handshake


def test_a_node_that_is_not_a_member_may_only_join(cluster):
    with peer(cluster, as_="stranger") as bus:
        reply = bus.call("RC.GET", "precious")
        assert isinstance(reply, BusError) and "NOPERM" in str(reply), reply
        assert isinstance(bus.call("RC.FLUSH"), BusError)
    with peer(cluster) as bus:
        # A member cannot speak for another.
        reply = bus.call("RC.TREE", "n3", "8")
        assert isinstance(reply, BusError) and "NOPERM" in str(reply), reply
    still_serving(cluster)


def test_an_idle_bus_connection_is_closed(cluster):
    before = info(cluster)
    with peer(cluster) as bus:
        assert bus.closed(timeout=10)
    counted(cluster, "bus_closed_idle", before)
    # The nodes' own links ping often enough to stay up.
    assert b"cluster_state:ok" in cluster.client("n1").execute_command("CLUSTER", "INFO")


def test_connections_per_peer_are_bounded(cluster):
    before = info(cluster)
    links = []
    try:
        refused = 0
        for _ in range(24):
            try:
                links.append(peer(cluster, as_="n3"))
            except (BusError, ConnectionError, OSError):
                refused += 1
        assert refused > 0
        counted(cluster, "bus_closed_connection_limit", before)
    finally:
        for link in links:
            link.close()
    still_serving(cluster)


def test_chunked_transfers_in_progress_are_bounded(cluster):
    before = info(cluster)
    stamp = str(int(time.time() * 1000) << 16)
    with peer(cluster) as bus:
        replies = bus.pipeline([("RC.XFERPART", "n2", f"big{i}", stamp, "1", "0", "0", str(100 * 1024 * 1024), "x" * 1024)
                                for i in range(80)])
    assert all(r == 1024 for r in replies[:64]), replies[:64]
    assert all(isinstance(r, BusError) for r in replies[64:]), replies[64:]
    counted(cluster, "bus_transfers_refused", before)
    still_serving(cluster)


def test_siblings_sent_to_a_replica_are_bounded(cluster):
    # 40 siblings (max-siblings 4 admits 64 on the wire at most: 4 x 4, at least 64): fine;
    # a causal context of 2,000 entries is not.
    def sibling(clock_entries, node):
        stamp = int(time.time() * 1000) << 16
        clock = b"".join(i.to_bytes(4, "big") + (1).to_bytes(8, "big") for i in range(clock_entries))
        return (len(clock).to_bytes(2, "big") + clock + stamp.to_bytes(8, "big") + node.to_bytes(4, "big")
                + (0).to_bytes(8, "big") + b"\x00" + (1).to_bytes(4, "big") + b"v")
    with peer(cluster) as bus:
        reply = bus.call("RC.VPUT", "sib", sibling(2000, 1))
        assert isinstance(reply, BusError), reply
        reply = bus.call("RC.VPUT", "sib", b"".join(sibling(1, n) for n in range(100)))
        assert isinstance(reply, BusError), reply
    still_serving(cluster)


def test_a_peer_that_does_not_read_its_replies_cannot_grow_the_node(cluster):
    c = cluster
    c.client("n1").set("big", b"x" * (1 << 20))
    pid = c.procs["n1"].pid

    def rss():
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) * 1024

    baseline = rss()
    bus = peer(c)
    try:
        bus.sock.settimeout(1)
        request = command("RC.GET", "big") * 256
        sent = 0
        try:
            for _ in range(16):          # up to 4,096 MiB of replies asked for, none read
                bus.sock.sendall(request)
                sent += 256
        except (socket.timeout, OSError):
            pass
        time.sleep(1)
        assert rss() - baseline < 400 * 1024 * 1024, (sent, rss() - baseline)
    finally:
        bus.close()
    still_serving(c)


# MARK: gossip


def test_replayed_stale_and_unknown_gossip_is_dropped(cluster):
    before = info(cluster)
    # The last stamp of this millisecond: above what n2 itself sent so far, so its copy is
    # inside the replay window rather than behind it.
    packet = gossip_packet("itest", SECRET, "n2", stamp=(int(time.time() * 1000) << 16) + 0xFFFF)
    old = gossip_packet("itest", SECRET, "n2", stamp=(int(time.time() * 1000) - 120_000) << 16)
    stranger = gossip_packet("itest", SECRET, "stranger", updates=[("ghost", 1, "alive")])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        # The copy goes right behind the original: a real packet from n2 in between would move
        # n2's window past the forged stamp, and the copy would count as stale, not replayed.
        udp.sendto(packet, ("127.0.0.1", cluster.bus_ports["n1"]))
        udp.sendto(packet, ("127.0.0.1", cluster.bus_ports["n1"]))
        for datagram in (old, stranger):
            time.sleep(0.05)
            udp.sendto(datagram, ("127.0.0.1", cluster.bus_ports["n1"]))
    counted(cluster, "gossip_dropped_replay", before)
    counted(cluster, "gossip_dropped_stale", before)
    counted(cluster, "gossip_dropped_unknown_sender", before)
    nodes = cluster.client("n1").execute_command("CLUSTER", "NODES").decode()
    assert "ghost" not in nodes and "stranger" not in nodes
    still_serving(cluster)


def test_a_coordinator_an_epoch_behind_is_fenced_until_it_catches_up(cluster):
    """A replica refuses reads and writes from a coordinator whose view of the ring is an
    epoch behind its own (it could write where a transfer has passed), answers STALEVIEW,
    and counts it; the same requests at its epoch are served."""
    epoch = int(info(cluster)["ring_epoch"])
    before = info(cluster)
    with peer(cluster) as bus:
        assert bus.call("RC.STAGE", str(epoch - 1), "1") == b"OK"
        replies = bus.pipeline([("RC.GET", "precious"), ("RC.PUT", "fenced", str(1 << 16), "2", "0", "x"),
                                ("RC.DEL", "precious", str(1 << 16), "2"), ("PING",)])
        for reply in replies[:3]:
            assert isinstance(reply, BusError) and str(reply).startswith("STALEVIEW"), reply
            assert f"epoch {epoch - 1}, this replica at {epoch}" in str(reply)
        assert replies[3] == b"PONG", "only replica requests are fenced"
        counted(cluster, "bus_requests_from_stale_views", before, at_least=3)
        assert bus.call("RC.STAGE", str(epoch), "0") == b"OK"
        entry = bus.call("RC.GET", "precious")
        assert isinstance(entry, list) and entry[3] == b"data", entry
    assert cluster.client("n1").get("fenced") is None, "the fenced write was not applied"
    still_serving(cluster)


# MARK: start-up


def test_a_node_bound_off_loopback_without_a_secret_refuses_to_start(tmp_path):
    conf = tmp_path / "open.conf"
    conf.write_text("cluster-name open\nreplicas 2\n"
                    f"node n1 0.0.0.0:{free_port()} {free_port()}\n"
                    f"node n2 127.0.0.1:{free_port()} {free_port()}\n")
    result = subprocess.run([_ringcache_bin(), "serve", "--config", str(conf), "--node", "n1"],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"{conf}:3" in output and "cluster-secret" in output, output


# MARK: a cluster on real addresses


@pytest.mark.skipif(chaos.can_run() is not None, reason=str(chaos.can_run()))
def test_a_node_without_the_secret_cannot_join_read_write_or_learn_it(tmp_path):
    c = chaos.ChaosCluster(str(tmp_path), _ringcache_bin())
    captured = []
    stop = threading.Event()
    try:
        c.setup()
        # The joiner has the wrong secret.
        joiner_conf = os.path.join(str(tmp_path), f"{chaos.JOINER}.conf")
        with open(joiner_conf) as f:
            text = f.read()
        with open(joiner_conf, "w") as f:
            f.write(text.replace(f"cluster-secret {chaos.SECRET}", "cluster-secret not-the-secret"))
        sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        # n1's end of its link: every frame between n1 and the others passes it.
        sniffer.bind((c.ports["n1"], 0))
        sniffer.settimeout(0.2)

        def sniff():
            while not stop.is_set():
                try:
                    captured.append(sniffer.recv(65536))
                except socket.timeout:
                    pass
        thread = threading.Thread(target=sniff, daemon=True)
        thread.start()
        c.start_all()
        c.client("n1").set("secret-data", "42")
        c.start(chaos.JOINER)
        c.wait_until(lambda: c.client(chaos.JOINER).ping())
        time.sleep(4)
        for n in chaos.NAMES:
            assert c.client(n).info("cluster")["cluster_members"] == 3
        # The joiner found the seed's proof wrong and gave up (the seed saw no proof at all).
        with open(os.path.join(str(tmp_path), f"{chaos.JOINER}.log")) as f:
            assert "handshake failed" in f.read()
        # Through the joiner, nothing of the cluster can be read or written.
        assert c.client(chaos.JOINER).get("secret-data") is None
        try:
            c.client(chaos.JOINER).set("intruder", "x")
        except redis.exceptions.ResponseError:
            pass
        time.sleep(1)
        assert c.client("n1").get("intruder") is None
        # Nor straight on a member's bus without the secret.
        for name in ("n4", "n2"):
            with pytest.raises(BusError):
                BusClient(c.address["n1"], chaos.BUS, "chaos", "not-the-secret", name)
        assert c.client("n2").get("secret-data") == b"42"
        stop.set()
        thread.join()
        wire = b"".join(captured)
        assert b"RC.HELLO" in wire and b"RC.PROVE" in wire, "the capture saw no handshake"
        assert chaos.SECRET.encode() not in wire
    finally:
        stop.set()
        c.teardown()
