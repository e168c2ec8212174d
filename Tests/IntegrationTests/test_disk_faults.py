"""Disk faults injected into real nodes (tools/faults/faultfs.c, an LD_PRELOAD shim that makes
writes or syncs of the data directory's files fail on demand): while a fault lasts, writes get
-MISCONF on every path and the node does not crash; once it is cleared writes go on; after a
kill -9 and a restart every write that got +OK is there, and every write that got -MISCONF is
there or not, never half. Standalone and in a 3-node cluster, under fsync always and everysec.
ringcache only."""

import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
import redis

from conftest import _ringcache_bin
from test_cluster import NAMES, LocalCluster
from test_persistence import Node

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _ringcache_only(target):
    if target != "ringcache":
        pytest.skip("ringcache persistence")


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    compiler = shutil.which("cc") or shutil.which("clang") or shutil.which("gcc")
    if not compiler:
        pytest.skip("no C compiler for the fault shim")
    out = str(tmp_path_factory.mktemp("shim") / "libfaultfs.so")
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", out, os.path.join(REPO, "tools", "faults", "faultfs.c"), "-ldl"],
                   check=True)
    return out


class Faults:
    """The control file of the shim, for one node's data directory."""

    def __init__(self, shim, directory):
        self.control = os.path.join(directory, "faults.control")
        self.directory = directory
        self.set("none")
        self.env = {"LD_PRELOAD": shim, "RINGCACHE_FAULTS": self.control, "RINGCACHE_FAULTS_PATH": os.path.join(directory, "")}

    def set(self, line):
        tmp = self.control + ".tmp"
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.replace(tmp, self.control)


class Writers:
    """Threads that SET distinct keys through `clients`, remembering each reply: OK, MISCONF or
    another error (connection errors end a thread)."""

    def __init__(self, clients, prefix):
        self.results = {}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(c, f"{prefix}{i}:"), daemon=True) for i, c in enumerate(clients)]

    def run(self, client, prefix):
        i = 0
        while not self.stop.is_set():
            key = f"{prefix}{i}"
            try:
                client.set(key, f"value-of-{key}")
                self.results[key] = "ok"
            except redis.exceptions.ResponseError as e:
                self.results[key] = "misconf" if str(e).startswith("MISCONF") else f"error: {e}"
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                self.results[key] = "unknown"
                return
            i += 1
            time.sleep(0.002)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)

    def count(self, outcome):
        return sum(1 for v in list(self.results.values()) if v == outcome)


def wait_for(check, timeout=15, what="condition"):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not met in {timeout} s"
        time.sleep(0.05)


def check_after_restart(client, results):
    """Every +OK write is there; every MISCONF (or unknown) one is whole or absent."""
    keys = list(results)
    values = []
    for at in range(0, len(keys), 500):
        values += client.mget(keys[at:at + 500])
    lost = [k for k, v in zip(keys, values) if results[k] == "ok" and v != f"value-of-{k}".encode()]
    half = [k for k, v in zip(keys, values) if v is not None and v != f"value-of-{k}".encode()]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:3]}"
    assert not half, f"{len(half)} keys hold something else, e.g. {half[:3]}"


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) * 1024


@pytest.mark.parametrize("fsync,fault", [("always", "write ENOSPC"), ("always", "sync EIO"),
                                         ("everysec", "write ENOSPC"), ("everysec", "sync EIO")])
def test_a_failing_disk_refuses_writes_then_loses_nothing_acknowledged(tmp_path, shim, fsync, fault):
    faults = Faults(shim, str(tmp_path))
    n = Node(str(tmp_path), fsync)
    n.start(env=faults.env)
    try:
        with Writers([n.client(socket_timeout=10) for _ in range(3)], "k") as writers:
            wait_for(lambda: writers.count("ok") > 200, what="writes before the fault")
            faults.set(fault)
            wait_for(lambda: writers.count("misconf") > 20, what="MISCONF while the disk fails")
            assert n.info()["db_last_write_status"] == "err"
            peak = rss(n.proc.pid)
            time.sleep(1)
            assert n.proc.poll() is None, n.log()
            faults.set("none")
            before = writers.count("ok")
            wait_for(lambda: writers.count("ok") > before + 200, what="writes after the fault was cleared")
            assert rss(n.proc.pid) < peak + 64 * 1024 * 1024
        assert n.info()["db_last_write_status"] == "ok"
        if fsync == "everysec":
            time.sleep(1.5)   # what everysec promises is synced within a second
        n.stop(signal.SIGKILL)
        n.start()
        check_after_restart(n.client(), writers.results)
        assert writers.count("misconf") > 0 and writers.count("ok") > 400
    finally:
        n.stop(signal.SIGKILL)


class FaultyCluster(LocalCluster):
    """A persistent 3-node cluster whose node n1 runs with the fault shim."""

    def __init__(self, directory, shim, fsync):
        self.data = os.path.join(directory, "data")
        os.makedirs(self.data, exist_ok=True)
        super().__init__(directory, extra=f"persistence sqlite\ndir {self.data}\npersistence-fsync {fsync}\n")
        self.faults = Faults(shim, self.data)

    def start(self, name):
        if name != "n1":
            return super().start(name)
        log = open(os.path.join(self.directory, f"{name}.log"), "a")
        self.procs[name] = subprocess.Popen([_ringcache_bin(), "serve", "--config", self.conf, "--node", name],
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=dict(os.environ, **self.faults.env))
        self.wait_until(lambda: self.client(name).ping(), timeout=20)


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_a_cluster_node_whose_disk_fails_takes_no_write_and_loses_nothing(tmp_path, shim, fsync):
    c = FaultyCluster(str(tmp_path), shim, fsync).start_all()
    try:
        with Writers([c.client("n1"), c.client("n2"), c.client("n3")], "c") as writers:
            wait_for(lambda: writers.count("ok") > 300, what="writes before the fault")
            # Only n1 runs with the shim: only its files fail.
            c.faults.set("write ENOSPC" if fsync == "everysec" else "sync EIO")
            wait_for(lambda: writers.count("misconf") > 20, what="MISCONF through n1")
            assert c.client("n1").info("persistence")["db_last_write_status"] == "err"
            # Through n2 and n3 writes still reach W=2 (n2 and n3), n1's refusals counted as failures.
            before = writers.count("ok")
            wait_for(lambda: writers.count("ok") > before + 200, what="writes through the other nodes")
            assert all(c.procs[n].poll() is None for n in NAMES)
            c.faults.set("none")
            wait_for(lambda: c.client("n1").info("persistence")["db_last_write_status"] == "ok", what="n1 recovers")
        if fsync == "everysec":
            time.sleep(1.5)
        c.kill("n1")
        c.start("n1")
        c.wait_until(lambda: b"cluster_state:ok" in c.client("n1").execute_command("CLUSTER", "INFO"), timeout=20)
        check_after_restart(c.client("n2"), writers.results)
    finally:
        c.stop_all()
