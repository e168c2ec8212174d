"""Fault injection on a real cluster in network namespaces: three nodes on their own
addresses, a bridge the harness owns, and faults it applies (cut a node's link, kill -9 and
restart, a fourth node joining through a seed and leaving) while clients write at QUORUM. Used by test_chaos.py (a short fixed schedule) and
tools/chaos (a longer random one). Needs root (ip netns)."""

import os
import random
import shutil
import socket
import subprocess
import threading
import time

import redis

from bus_client import BusClient

NAMES = ["n1", "n2", "n3"]
# The node that joins (through n1 as its seed) and leaves during a run.
JOINER = "n4"
ALL = NAMES + [JOINER]
PORT = 7600
BUS = 17600
SECRET = "chaos-8d1f0c47e2b9"


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def can_run():
    """None if namespaces work here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not (shutil.which("ip") and shutil.which("bridge")):
        return "iproute2 (ip, bridge) is not installed: tools/install-deps installs it"
    probe = _ip("netns", "add", f"rcchaos{os.getpid()}", check=False)
    if probe.returncode != 0:
        return f"cannot create network namespaces here: {probe.stderr.strip()}"
    _ip("netns", "del", f"rcchaos{os.getpid()}", check=False)
    return None


def create_network(bridge, gateway, namespaces, ports, addresses):
    """A bridge with address `gateway` (a /24) in the root namespace, and per node a namespace
    joined to it by a veth pair, its end named eth0 with the node's address."""
    _ip("link", "add", bridge, "type", "bridge")
    _ip("addr", "add", f"{gateway}/24", "dev", bridge)
    _ip("link", "set", bridge, "up")
    for n in namespaces:
        ns, port = namespaces[n], ports[n]
        _ip("netns", "add", ns)
        _ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", port, "master", bridge)
        _ip("link", "set", port, "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{addresses[n]}/24", "dev", "eth0")
        _ip("netns", "exec", ns, "ip", "link", "set", "eth0", "up")


def remove_network(bridge, namespaces, ports):
    for n in namespaces:
        _ip("link", "del", ports[n], check=False)
        _ip("netns", "del", namespaces[n], check=False)
    _ip("link", "del", bridge, check=False)


class ChaosCluster:
    def __init__(self, directory, binary, extra=""):
        tag = os.getpid() % 10000
        self.bridge = f"rccb{tag}"
        self.namespaces = {n: f"rcc{tag}{n}" for n in ALL}
        self.ports = {n: f"rccv{tag}{n}" for n in ALL}
        self.subnet = 10 + (os.getpid() + 77) % 200
        self.address = {n: f"10.232.{self.subnet}.{i + 1}" for i, n in enumerate(ALL)}
        # The ring's members now.
        self.members = list(NAMES)
        self.directory = directory
        self.binary = binary
        self.extra = extra
        self.procs = {}
        self.conf = os.path.join(directory, "chaos.conf")

    def setup(self):
        create_network(self.bridge, f"10.232.{self.subnet}.254", self.namespaces, self.ports, self.address)
        with open(self.conf, "w") as f:
            f.write(f"cluster-name chaos\ncluster-secret {SECRET}\nreplicas 3\nread-quorum 2\nwrite-quorum 2\n")
            f.write("request-timeout 300\nsloppy-quorum yes\nanti-entropy-interval 500\n")
            f.write("gossip-interval 200\ngossip-ping-timeout 80\n" + self.extra)
            for n in NAMES:
                f.write(f"node {n} {self.address[n]}:{PORT} {BUS}\n")
        # The joiner knows only itself and a seed.
        with open(os.path.join(self.directory, f"{JOINER}.conf"), "w") as f:
            f.write(f"cluster-name chaos\ncluster-secret {SECRET}\nreplicas 3\nread-quorum 2\nwrite-quorum 2\n")
            f.write("request-timeout 300\nsloppy-quorum yes\nanti-entropy-interval 500\n")
            f.write("gossip-interval 200\ngossip-ping-timeout 80\n" + self.extra)
            f.write(f"node {JOINER} {self.address[JOINER]}:{PORT} {BUS}\n")
            f.write(f"seeds {self.address['n1']}:{PORT}@{BUS}\n")

    def teardown(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        remove_network(self.bridge, self.namespaces, self.ports)

    def start(self, n):
        log = open(os.path.join(self.directory, f"{n}.log"), "a")
        conf = ["--config", self.conf, "--node", n] if n != JOINER else ["--config", os.path.join(self.directory, f"{JOINER}.conf")]
        self.procs[n] = subprocess.Popen(
            ["ip", "netns", "exec", self.namespaces[n], self.binary, "serve", *conf],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def join(self):
        """Starts the joiner; returns once every member counts it in the ring."""
        self.start(JOINER)
        self.members = NAMES + [JOINER]
        self.wait_until(lambda: all(self.client(n).info("cluster")["cluster_members"] == 4 for n in self.members), timeout=30)

    def leave(self):
        """CLUSTER LEAVE on the joiner; returns once it has handed its keys out and stopped."""
        assert self.client(JOINER).execute_command("CLUSTER", "LEAVE") == b"OK"
        self.procs[JOINER].wait(timeout=60)
        self.members = list(NAMES)

    def start_all(self):
        for n in NAMES:
            self.start(n)
        for n in NAMES:
            self.wait_until(lambda: b"cluster_state:ok" in self.client(n).execute_command("CLUSTER", "INFO"))

    def kill(self, n):
        self.procs[n].kill()
        self.procs[n].wait()

    def cut(self, n, on):
        _ip("netns", "exec", self.namespaces[n], "ip", "link", "set", "eth0", "down" if on else "up")

    def client(self, n, timeout=2):
        return redis.Redis(host=self.address[n], port=PORT, socket_timeout=timeout, socket_connect_timeout=timeout)

    def local(self, n, key):
        """A node's own copy of key (bus RC.GET: no quorum, no repair), as (version, value)."""
        # The probe speaks as another member: only members may read a node's copies.
        probe = next(m for m in self.address if m != n)
        with BusClient(self.address[n], BUS, "chaos", SECRET, probe, timeout=2) as bus:
            reply = bus.call("RC.GET", key)
        if not reply:
            return None
        return (reply[0], reply[3])

    def wait_until(self, check, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return time.monotonic()
            except (redis.exceptions.ConnectionError, redis.exceptions.ResponseError, redis.exceptions.TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            time.sleep(0.1)


class Writer(threading.Thread):
    """Writes increasing values to a few keys at QUORUM through n1 and n2, remembering the
    last value each key was acknowledged with."""

    def __init__(self, cluster, keys=20):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.keys = [f"chaos:{i}" for i in range(keys)]
        self.acked = {}
        self.attempts = 0
        self.failures = 0
        self.stopping = False

    def run(self):
        clients = [self.cluster.client("n1", timeout=1), self.cluster.client("n2", timeout=1)]
        value = 0
        while not self.stopping:
            value += 1
            key = self.keys[value % len(self.keys)]
            self.attempts += 1
            try:
                if clients[value % 2].set(key, value):
                    self.acked[key] = value
            except (redis.exceptions.ConnectionError, redis.exceptions.ResponseError, redis.exceptions.TimeoutError):
                self.failures += 1
                clients[value % 2] = self.cluster.client(["n1", "n2"][value % 2], timeout=1)
                time.sleep(0.01)


def run(cluster, schedule, log=print):
    """Runs `schedule` ([(seconds, action, node)], action in cut/heal/kill/restart/join/leave/
    wait) under a writer, then checks. Returns the findings as a dict."""
    writer = Writer(cluster)
    writer.start()
    for seconds, action, node in schedule:
        if action == "cut":
            cluster.cut(node, True)
        elif action == "heal":
            cluster.cut(node, False)
        elif action == "kill":
            cluster.kill(node)
        elif action == "restart":
            cluster.start(node)
        elif action == "join":
            cluster.join()
        elif action == "leave":
            cluster.leave()
        log(f"  {action} {node or ''}".rstrip() + f", then {seconds:.1f} s")
        time.sleep(seconds)
    writer.stopping = True
    writer.join()
    healed = time.monotonic()
    # First, with no client read at all (a read would repair), every replica's own copy
    # converges to the same version: by hints and anti-entropy alone.
    def converged():
        for key in writer.keys:
            replicas = [r.decode() for r in cluster.client("n1").execute_command("CLUSTER", "KEYNODES", key)]
            copies = {cluster.local(n, key) for n in replicas}
            if len(copies) != 1 or None in copies:
                return False
        return True

    try:
        converged_after = round(cluster.wait_until(converged, timeout=30) - healed, 2)
    except AssertionError:
        converged_after = None

    # Then every acknowledged write is there (a key's value only grows).
    lost = []
    reader = cluster.client("n1", timeout=5)
    reader.execute_command("CONSISTENCY", "READ", "ALL")
    for key, value in writer.acked.items():
        got = reader.get(key)
        if got is None or int(got) < value:
            lost.append((key, value, got))

    def agree():
        views = []
        for n in cluster.members:
            lines = cluster.client(n).execute_command("CLUSTER", "NODES").decode().split("\n")
            views.append(sorted((l.split()[0], l.split()[3].split(",")[-1]) for l in lines if l.strip()))
        return (all(v == views[0] for v in views) and all(state == "alive" for _, state in views[0])
                and [name for name, _ in views[0]] == sorted(cluster.members))

    try:
        cluster.wait_until(agree, timeout=30)
        members_agree = True
    except AssertionError:
        members_agree = False
    return {
        "writes attempted": writer.attempts,
        "writes acknowledged": writer.attempts - writer.failures,
        "writes failed": writer.failures,
        "acknowledged writes lost": len(lost),
        "lost": lost[:5],
        "seconds to converge after the last fault": converged_after,
        "members agree, all alive": members_agree,
    }


def random_schedule(duration, rng):
    schedule = []
    elapsed = 0.0
    joined = False
    while elapsed < duration:
        if rng.random() < 0.25:
            # Now and then the fourth node joins, or leaves again.
            settle = rng.uniform(2.0, 4.0)
            schedule.append((settle, "leave" if joined else "join", JOINER))
            joined = not joined
            elapsed += settle
            continue
        node = rng.choice(NAMES)
        fault = rng.choice(["cut", "kill"])
        hold = rng.uniform(1.0, 4.0)
        settle = rng.uniform(1.0, 3.0)
        schedule += [(hold, fault, node), (settle, "heal" if fault == "cut" else "restart", node)]
        elapsed += hold + settle
    return schedule
