"""A real 3-node cluster on loopback (N=3, R=2, W=2): replication, quorums, node failure,
read repair, fan-out commands and the cluster bus handshake. ringcache only."""

import os
import signal
import socket
import subprocess
import time

import pytest

from bus_client import BusClient, BusError
import redis

from conftest import _ringcache_bin, free_port

NAMES = ["n1", "n2", "n3"]


@pytest.fixture(autouse=True)
def _ringcache_only(target):
    if target != "ringcache":
        pytest.skip("ringcache cluster behaviour")


class LocalCluster:
    def __init__(self, directory, secret="s3cret", extra="", tls_dir=None):
        """With `tls_dir` (certificates from `ringcache tls generate`): `port 0` and
        `tls-cluster yes`, so clients and the bus speak TLS only."""
        self.directory = directory
        self.tls_dir = tls_dir
        if tls_dir:
            extra = (f"port 0\ntls-cluster yes\ntls-cert-file {tls_dir}/{{node}}.crt\n"
                     f"tls-key-file {tls_dir}/{{node}}.key\ntls-ca-cert-file {tls_dir}/ca.crt\n") + extra
        self.ports = {name: free_port() for name in NAMES}
        self.bus_ports = {name: free_port() for name in NAMES}
        self.secret = secret
        self.conf = os.path.join(directory, "cluster.conf")
        with open(self.conf, "w") as f:
            f.write("cluster-name itest\n")
            f.write(f"cluster-secret {secret}\n")
            f.write("replicas 3\nread-quorum 2\nwrite-quorum 2\nrequest-timeout 500\n" + extra)
            for name in NAMES:
                f.write(f"node {name} 127.0.0.1:{self.ports[name]} {self.bus_ports[name]}\n")
        self.procs = {}

    def start(self, name):
        log = open(os.path.join(self.directory, f"{name}.log"), "a")
        self.procs[name] = subprocess.Popen(
            [_ringcache_bin(), "serve", "--config", self.conf, "--node", name],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            assert self.procs[name].poll() is None, f"{name} exited: {self.log(name)}"
            try:
                if self.client(name).ping():
                    return
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, f"{name} did not answer"
                time.sleep(0.05)

    def start_all(self):
        for name in NAMES:
            self.start(name)
        # Ready once every node's links to every peer are up.
        for name in NAMES:
            self.wait_until(lambda: b"cluster_state:ok" in self.client(name).execute_command("CLUSTER", "INFO"))
        return self

    def kill(self, name, sig=signal.SIGKILL):
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(timeout=10)

    def stop_all(self):
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM)

    def client(self, name, **kw):
        if self.tls_dir:
            kw = dict(ssl=True, ssl_ca_certs=f"{self.tls_dir}/ca.crt", ssl_certfile=f"{self.tls_dir}/client.crt",
                      ssl_keyfile=f"{self.tls_dir}/client.key", **kw)
        return redis.Redis(port=self.ports[name], socket_timeout=5, **kw)

    def log(self, name):
        with open(os.path.join(self.directory, f"{name}.log")) as f:
            return f.read()[-3000:]

    def wait_until(self, check, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except redis.exceptions.ResponseError:
                pass
            assert time.monotonic() < deadline, "condition not met in time"
            time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path):
    c = LocalCluster(str(tmp_path)).start_all()
    yield c
    c.stop_all()


def test_write_through_one_node_read_through_another(cluster):
    n1, n2, n3 = (cluster.client(n) for n in NAMES)
    assert n1.set("greeting", "hello") is True
    assert n3.get("greeting") == b"hello"
    assert n2.mset({"a": "1", "b": "2", "c": b"\x00\xff"}) is True
    assert n1.mget("a", "b", "c", "missing") == [b"1", b"2", b"\x00\xff", None]
    assert n3.set("ttl", "x", ex=100) is True
    assert 98 <= n2.ttl("ttl") <= 100
    assert n1.exists("a", "b", "missing", "a") == 3
    assert n2.delete("a", "missing") == 1
    assert n3.get("a") is None and n1.exists("a") == 0
    assert n2.strlen("greeting") == 5 and n3.type("greeting") == b"string"


def test_keyspace_commands_count_each_key_once(cluster):
    n1 = cluster.client("n1")
    n1.flushall()
    pipe = n1.pipeline(transaction=False)
    for i in range(300):
        pipe.set(f"key:{i}", i)
    pipe.execute()
    for name in NAMES:
        assert cluster.client(name).dbsize() == 300, name
        keys = cluster.client(name).keys("key:1*")
        assert sorted(keys) == sorted({f"key:{i}".encode() for i in range(300) if str(i).startswith("1")}), name


def test_quorum_survives_a_killed_node_and_all_does_not(cluster):
    n1, n3 = cluster.client("n1"), cluster.client("n3")
    cluster.kill("n2")
    for i in range(50):
        assert n1.set(f"k{i}", f"v{i}") is True
    assert [n3.get(f"k{i}") for i in range(50)] == [f"v{i}".encode() for i in range(50)]
    strict = cluster.client("n1", single_connection_client=True)
    assert strict.execute_command("CONSISTENCY", "READ", "ALL", "WRITE", "ALL") == b"OK"
    with pytest.raises(redis.exceptions.ResponseError, match="^NOQUORUM write needed 3 of 3"):
        strict.set("all", "x")
    with pytest.raises(redis.exceptions.ResponseError, match="^NOQUORUM read needed 3 of 3"):
        strict.get("k1")


def test_restarted_node_is_repaired_by_reads(cluster):
    n1 = cluster.client("n1")
    cluster.kill("n2")
    for i in range(20):
        assert n1.set(f"r{i}", f"v{i}") is True
    cluster.start("n2")  # back, empty: a cache loses its memory on kill -9
    n2 = cluster.client("n2", single_connection_client=True)
    n2.execute_command("CONSISTENCY", "READ", "ONE")
    strict = cluster.client("n1", single_connection_client=True)
    strict.execute_command("CONSISTENCY", "READ", "ALL")
    # A read at ALL reaches n2 once the links are back, and repairs it.
    cluster.wait_until(lambda: strict.get("r0") == b"v0")
    for i in range(20):
        assert strict.get(f"r{i}") == f"v{i}".encode()
    repairs = n1.info("replication")["read_repairs"]
    assert repairs >= 20
    cluster.wait_until(lambda: all(n2.get(f"r{i}") == f"v{i}".encode() for i in range(20)))


def test_cluster_commands_describe_the_ring(cluster):
    n1 = cluster.client("n1", decode_responses=True)
    info = n1.execute_command("CLUSTER", "INFO")
    assert "cluster_enabled:1" in info and "cluster_known_nodes:3" in info and "replicas:3" in info
    nodes = n1.execute_command("CLUSTER", "NODES").strip().split("\n")
    assert len(nodes) == 3 and sum("myself" in line for line in nodes) == 1
    ring = n1.execute_command("CLUSTER", "RING")
    assert int(ring[0][0]) == 0 and int(ring[-1][1]) == 2**64 - 1
    assert all(len(r[2]) == 3 and set(r[2]) == set(NAMES) for r in ring)
    assert n1.execute_command("CONSISTENCY") == {"read": "DEFAULT (2 of 3)", "write": "DEFAULT (2 of 3)", "replicas": 3}
    assert n1.execute_command("CONSISTENCY", "READ", "ONE", "WRITE", "ALL") == "OK"


def test_bus_requires_the_cluster_secret(cluster):
    port = cluster.bus_ports["n1"]

    def exchange(payload, expect_close):
        """Sends `payload`; returns what came back and whether the node closed the link."""
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(payload)
            data = b""
            while True:
                try:
                    chunk = s.recv(4096)
                except socket.timeout:
                    return data, False
                if not chunk:
                    return data, True
                data += chunk
                if not expect_close and data.endswith(b"+PONG\r\n"):
                    return data, False

    data, closed = exchange(b"*2\r\n$6\r\nRC.GET\r\n$1\r\nk\r\n", True)
    assert data.startswith(b"-NOAUTH") and closed
    # The old clear-text handshake is gone: a secret sent in the open is refused.
    data, closed = exchange(b"*4\r\n$7\r\nRC.AUTH\r\n$5\r\nitest\r\n$6\r\ns3cret\r\n$1\r\nx\r\n", True)
    assert data.startswith(b"-NOAUTH") and closed
    with pytest.raises(BusError):
        BusClient("127.0.0.1", port, "itest", "wrong", "n2")
    with BusClient("127.0.0.1", port, "itest", "s3cret", "n2") as bus:
        assert bus.call("PING") == b"PONG"
    assert "refused a handshake" in cluster.log("n1")


def test_cluster_up_and_down_manage_every_node(tmp_path):
    ports = [free_port() for _ in NAMES]
    conf = tmp_path / "c.conf"
    conf.write_text("cluster-name updown\n" + "".join(
        f"node {name} 127.0.0.1:{port} {free_port()}\n" for name, port in zip(NAMES, ports)))
    rundir = tmp_path / "run"
    up = subprocess.run([_ringcache_bin(), "cluster", "up", "--config", str(conf), "--dir", str(rundir)],
                        capture_output=True, text=True, timeout=60)
    try:
        assert up.returncode == 0, up.stderr
        assert "ready: 3 nodes, N=3 R=2 W=2" in up.stdout
        assert redis.Redis(port=ports[0]).set("k", "v") is True
        assert redis.Redis(port=ports[2]).get("k") == b"v"
        again = subprocess.run([_ringcache_bin(), "cluster", "up", "--config", str(conf), "--dir", str(rundir)],
                               capture_output=True, text=True, timeout=60)
        assert again.stdout.count("already running") == 3
    finally:
        down = subprocess.run([_ringcache_bin(), "cluster", "down", "--dir", str(rundir)],
                              capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and down.stdout.count("stopped") == 3, down.stdout
    for port in ports:
        with pytest.raises(redis.exceptions.ConnectionError):
            redis.Redis(port=port, socket_connect_timeout=1).ping()


def test_read_modify_write_commands_serialise_at_the_first_replica(cluster):
    import threading

    clients = [cluster.client(name) for name in NAMES]
    errors = []

    def bump(client, times):
        try:
            for _ in range(times):
                client.incr("counter")
                client.append("log", "x")
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(e)

    threads = [threading.Thread(target=bump, args=(clients[i % 3], 50)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # Every increment counted once, whichever node coordinated it.
    for client in clients:
        assert client.get("counter") == b"300"
        assert client.strlen("log") == 300
    n1, n2, n3 = clients
    assert n1.set("lock", "a", nx=True, ex=30) is True
    assert n2.set("lock", "b", nx=True) is None
    assert n3.set("lock", "c", xx=True, get=True) == b"a"
    assert n1.expire("lock", 100) is True and 98 <= n2.ttl("lock") <= 100
    assert n2.persist("lock") is True and n3.ttl("lock") == -1
    assert n3.getdel("lock") == b"c" and n1.get("lock") is None and n2.exists("lock") == 0
    assert n2.incrbyfloat("f", "1.5") == 1.5 and n3.getrange("log", 0, 2) == b"xxx"


def test_read_modify_write_moves_on_when_the_first_replica_dies(cluster):
    n1 = cluster.client("n1")
    assert n1.incr("survivor") == 1
    cluster.kill("n2")
    cluster.kill("n3")
    # One node left: quorum writes fail, ONE-level writes go on at the next replica.
    with pytest.raises(redis.exceptions.ResponseError, match="^NOQUORUM"):
        n1.incr("survivor")
    relaxed = cluster.client("n1", single_connection_client=True)
    relaxed.execute_command("CONSISTENCY", "READ", "ONE", "WRITE", "ONE")
    assert relaxed.incr("survivor") in (2, 3)


def test_keyspace_iteration_and_renames_across_nodes(cluster):
    n1, n2, n3 = (cluster.client(n) for n in NAMES)
    n1.flushall()
    pipe = n2.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"s:{i}", i)
    pipe.execute()
    for client in (n1, n3):
        seen = set(client.scan_iter(count=37))
        assert seen == {f"s:{i}".encode() for i in range(500)}
        assert set(client.scan_iter(match="s:1?", count=5)) == {f"s:1{d}".encode() for d in range(10)}
    assert n1.randomkey().startswith(b"s:")
    assert n2.msetnx({"m1": "a", "m2": "b"}) is True
    assert n3.msetnx({"m2": "x", "m3": "y"}) is False
    assert n1.mget("m1", "m2", "m3") == [b"a", b"b", None]
    assert n2.rename("m1", "m9") is True
    assert n3.get("m1") is None and n1.get("m9") == b"a"
    assert n1.renamenx("m9", "m2") is False
    assert n3.renamenx("m9", "m8") is True and n2.get("m8") == b"a"
    with pytest.raises(redis.exceptions.ResponseError, match="no such key"):
        n1.rename("nothing", "x")


@pytest.fixture
def vclock_cluster(tmp_path):
    c = LocalCluster(str(tmp_path), extra="reconcile vclock\nmax-siblings 3\n").start_all()
    yield c
    c.stop_all()


def test_vector_clocks_keep_concurrent_writes_as_siblings(vclock_cluster):
    n1, n2, n3 = (vclock_cluster.client(n) for n in NAMES)
    # Writes without a context are concurrent with everything: siblings.
    assert n1.execute_command("VSET", "k", "", "a") == b"OK"
    assert n2.execute_command("VSET", "k", "", "b") == b"OK"
    context, values = n3.execute_command("VGET", "k")
    assert sorted(values) == [b"a", b"b"] and context
    assert n1.get("k") in (b"a", b"b") and n2.get("k") == n3.get("k")
    assert n3.info("replication")["keys_with_siblings"] >= 1
    # A write with the context supersedes both.
    assert n3.execute_command("VSET", "k", context, "c") == b"OK"
    assert n1.execute_command("VGET", "k")[1] == [b"c"]
    # Plain SET reads the context first, so it replaces what it saw.
    assert n2.set("k", "d") is True
    assert n3.execute_command("VGET", "k")[1] == [b"d"]
    # Past max-siblings only the LWW winner is kept, and the overflow is counted.
    for i in range(4):
        n1.execute_command("VSET", "many", "", f"v{i}")
    assert len(n2.execute_command("VGET", "many")[1]) <= 3
    with pytest.raises(redis.exceptions.ResponseError, match="invalid causal context"):
        n1.execute_command("VSET", "k", "zz", "x")
    assert n1.incr("counter") == 1 and n2.incr("counter") == 2 and n3.get("counter") == b"2"
    assert n1.delete("k") == 1 and n2.get("k") is None


def test_quit_after_a_refused_command_still_closes(cluster):
    with socket.create_connection(("127.0.0.1", cluster.ports["n1"]), timeout=5) as s:
        s.sendall(b"SET k v bogus\r\nGET k\r\nQUIT\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"-ERR syntax error\r\n") and data.endswith(b"+OK\r\n")



def test_gossip_declares_a_killed_node_dead_and_a_restarted_one_alive(tmp_path):
    c = LocalCluster(str(tmp_path), extra="gossip-interval 200\ngossip-ping-timeout 80\n").start_all()
    try:
        def state_of(name, seen_from):
            lines = c.client(seen_from).execute_command("CLUSTER", "NODES").decode().strip().split("\n")
            line = next(l for l in lines if l.startswith(name + " "))
            return line.split()[3].split(",")[-1]

        # Nodes that started a moment apart may have suspected each other: wait for the refutations.
        c.wait_until(lambda: all(state_of(n, m) == "alive" for n in NAMES for m in NAMES if n != m), timeout=15)
        c.kill("n2")
        c.wait_until(lambda: state_of("n2", "n1") == "dead" and state_of("n2", "n3") == "dead", timeout=15)
        # Writes go on around the dead node.
        assert c.client("n1").set("k", "v") is True and c.client("n3").get("k") == b"v"
        status = subprocess.run([_ringcache_bin(), "cluster", "status", "--config", c.conf], capture_output=True, text=True, timeout=30)
        rows = {line.split()[0]: line for line in status.stdout.splitlines()[1:]}
        assert "dead (no answer)" in rows["n2"] and " alive " in rows["n1"], status.stdout
        c.start("n2")
        c.wait_until(lambda: state_of("n2", "n1") == "alive" and state_of("n2", "n3") == "alive", timeout=15)
        assert "member dead" in c.log("n1") and "member alive" in c.log("n1")
    finally:
        c.stop_all()
