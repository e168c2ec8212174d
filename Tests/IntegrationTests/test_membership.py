"""Joins and leaves on real processes: a node started with only `seeds` joins a running
3-node cluster (N=2, W=2) and receives the keys it now owns while a client keeps writing;
`ringcache cluster leave` makes a member hand its keys out and stop. After each change every
key sits on exactly its N replicas, every acknowledged write reads back from every node, and
all members agree on the ring. ringcache only."""

import os
import socket
import subprocess
import threading
import time

import pytest
import redis

from conftest import free_port
from chaos import _command, _read
from conftest import _ringcache_bin
from test_cluster import LocalCluster, NAMES


@pytest.fixture(autouse=True)
def _ringcache_only(target):
    if target != "ringcache":
        pytest.skip("ringcache cluster behaviour")


SETTINGS = "replicas 2\nread-quorum 1\nwrite-quorum 2\nanti-entropy-interval 0\n"


class GrowingCluster(LocalCluster):
    """A LocalCluster whose extra members start from a config with only their own `node`
    line and `seeds`."""

    def add(self, name, seed="n1"):
        self.ports[name] = free_port()
        self.bus_ports[name] = free_port()
        conf = os.path.join(self.directory, f"{name}.conf")
        with open(conf, "w") as f:
            f.write(f"cluster-name itest\ncluster-secret {self.secret}\nrequest-timeout 500\n" + SETTINGS)
            f.write(f"node {name} 127.0.0.1:{self.ports[name]} {self.bus_ports[name]}\n")
            f.write(f"seeds 127.0.0.1:{self.ports[seed]}@{self.bus_ports[seed]}\n")
        log = open(os.path.join(self.directory, f"{name}.log"), "a")
        self.procs[name] = subprocess.Popen([_ringcache_bin(), "serve", "--config", conf],
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.wait_until(lambda: self.client(name).ping())

    def info(self, name):
        return self.client(name).info("cluster")

    def settled(self, names):
        """Every node sees the same ring of `names`, and no data is moving."""
        infos = [self.info(n) for n in names]
        epochs = {i["ring_epoch"] for i in infos}
        return (len(epochs) == 1 and all(i["cluster_members"] == len(names) for i in infos)
                and all(i["ring_transition"] == 0 for i in infos))


def holders(c, names, keys):
    """For each key, the members whose own store has it (RC.GET on each bus port: no quorum,
    no repair)."""
    result = {k: [] for k in keys}
    for name in names:
        with socket.create_connection(("127.0.0.1", c.bus_ports[name]), timeout=5) as sock:
            sock.sendall(_command("RC.AUTH", "itest", c.secret, "probe") + b"".join(_command("RC.GET", k) for k in keys))
            reader = sock.makefile("rb")
            assert _read(reader) == b"OK"
            for k in keys:
                if _read(reader):
                    result[k].append(name)
    return result


class Writer(threading.Thread):
    """Writes at W=2 through n1 until stopped; remembers what was acknowledged."""

    def __init__(self, c, through="n1"):
        super().__init__(daemon=True)
        self.client = c.client(through)
        self.acked = {}
        self.failed = 0
        self.stopping = threading.Event()

    def run(self):
        i = 0
        while not self.stopping.is_set():
            key, value = f"live:{i}", f"v{i}"
            try:
                if self.client.set(key, value):
                    self.acked[key] = value.encode()
            except redis.exceptions.RedisError:
                self.failed += 1
            i += 1

    def stop(self):
        self.stopping.set()
        self.join(timeout=10)


def local_keys(c, name):
    return int(c.client(name).info("keyspace").get("db0", {}).get("keys", 0))


def check_placement(c, names, keys, expected):
    placed = holders(c, names, list(keys))
    for key in keys:
        replicas = [r.decode() for r in c.client(names[0]).execute_command("CLUSTER", "KEYNODES", key)]
        assert sorted(placed[key]) == sorted(replicas), (key, placed[key], replicas)
    for name in names:
        client = c.client(name)
        values = client.mget(list(keys))
        missing = [k for k, v in zip(keys, values) if v != expected[k]]
        assert not missing, f"{name} reads {len(missing)} keys wrong, e.g. {missing[:3]}"


def test_a_node_with_only_seeds_joins_takes_its_keys_and_a_member_leaves_handing_its_keys_out(tmp_path):
    c = GrowingCluster(str(tmp_path), extra=SETTINGS).start_all()
    try:
        n1 = c.client("n1")
        expected = {f"key:{i}": f"value-{i}".encode() for i in range(1500)}
        for start in range(0, 1500, 100):
            n1.mset({k: expected[k] for k in list(expected)[start:start + 100]})
        epoch_before = c.info("n1")["ring_epoch"]

        writer = Writer(c)
        writer.start()
        time.sleep(0.3)
        c.add("n4")
        members = NAMES + ["n4"]
        c.wait_until(lambda: c.settled(members), timeout=30)
        time.sleep(0.3)
        writer.stop()
        assert writer.failed == 0
        assert len(writer.acked) > 100
        expected.update(writer.acked)

        infos = {n: c.info(n) for n in members}
        assert infos["n1"]["ring_epoch"] > epoch_before
        received = infos["n4"]["rebalance_keys_received"]
        # n4 replicates about N/4 = half of the keys; only those moved.
        assert 0.3 * len(expected) < received < 0.75 * len(expected), received
        assert sum(infos[n]["rebalance_keys_sent"] for n in NAMES) == received
        # Old owners dropped what they no longer replicate.
        try:
            c.wait_until(lambda: sum(local_keys(c, n) for n in members) == 2 * len(expected), timeout=10)
        except AssertionError:
            raise AssertionError((len(expected), {n: local_keys(c, n) for n in members}, {n: c.info(n) for n in members}))
        check_placement(c, members, list(expected), expected)
        sizes = {n: c.client(n).dbsize() for n in members}
        assert all(size == len(expected) for size in sizes.values()), (
            len(expected), sizes, {n: local_keys(c, n) for n in members},
            {n: (c.client(n).execute_command("CLUSTER", "INFO"), c.client(n).execute_command("CLUSTER", "NODES")) for n in members})
        nodes = c.client("n4").execute_command("CLUSTER", "NODES").decode()
        assert sorted(line.split()[0] for line in nodes.splitlines()) == members

        # n2 leaves through the CLI, with writes still coming.
        writer = Writer(c)
        writer.start()
        time.sleep(0.3)
        leave = subprocess.run([_ringcache_bin(), "cluster", "leave", "--port", str(c.ports["n2"]), "--wait", "60"],
                               capture_output=True, text=True, timeout=90)
        assert leave.returncode == 0, leave.stdout + leave.stderr
        assert c.procs["n2"].wait(timeout=20) == 0
        c.procs.pop("n2")
        remaining = ["n1", "n3", "n4"]
        c.wait_until(lambda: c.settled(remaining), timeout=30)
        time.sleep(0.3)
        writer.stop()
        expected.update(writer.acked)
        check_placement(c, remaining, list(expected), expected)
        for n in remaining:
            nodes = c.client(n).execute_command("CLUSTER", "NODES").decode()
            assert sorted(line.split()[0] for line in nodes.splitlines()) == remaining
    finally:
        c.stop_all()
