"""Black-box integration tests for ringcache (a Redis-compatible server).

The same tests run against two targets:

* ``ringcache`` (default) -- the binary from ``RINGCACHE_BIN``, or
  ``<repo>/.build/debug/ringcache`` if unset, started as
  ``ringcache serve --port P --bind 127.0.0.1 [--<key> <value> ...]``.
* ``redis`` -- the real ``redis-server`` (7.0), started as
  ``redis-server --port P --bind 127.0.0.1 --save '' --appendonly no
  --daemonize no --databases 1 [--<key> <value> ...]``.  The tests were written
  and validated against this target, so they encode Redis's behaviour.
  (``--databases 1`` mirrors ringcache's single-database model, so that e.g.
  ``SELECT 1`` fails the same way on both targets.)

Run from the repository root::

    # against ringcache (build it first with `swift build`)
    python3 -m pytest Tests/IntegrationTests -q
    RINGCACHE_BIN=/path/to/ringcache python3 -m pytest Tests/IntegrationTests -q

    # against the real Redis (validates the tests themselves)
    python3 -m pytest Tests/IntegrationTests --target redis -q
    RINGCACHE_TARGET=redis python3 -m pytest Tests/IntegrationTests -q

Every test starts its own server process on a free loopback port (see the
``start_server`` / ``server`` fixtures), so tests are independent of each other.
Requirements: pytest, the ``redis`` Python package and ``redis-cli`` on PATH.
When a test fails, the tail of the server's stdout/stderr log is attached to
the failure report.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TARGETS = ("ringcache", "redis")
STARTUP_TIMEOUT = 20.0
STOP_GRACE = 5.0


def pytest_addoption(parser):
    parser.addoption(
        "--target",
        action="store",
        default=None,
        choices=TARGETS,
        help="server implementation to test: ringcache (default) or redis. "
        "The RINGCACHE_TARGET environment variable is honoured too.",
    )


def pytest_configure(config):
    # redis-py marks SETEX/PSETEX & co. as deprecated; we test them on purpose.
    config.addinivalue_line("filterwarnings", "ignore:Call to deprecated:DeprecationWarning")


def _resolve_target(config):
    target = config.getoption("--target") or os.environ.get("RINGCACHE_TARGET") or "ringcache"
    if target not in TARGETS:
        raise pytest.UsageError(f"unknown target {target!r}; expected one of {TARGETS}")
    return target


def pytest_report_header(config):
    target = _resolve_target(config)
    if target == "redis":
        return f"integration target: redis ({shutil.which('redis-server')})"
    return f"integration target: ringcache ({_ringcache_bin()})"


def _ringcache_bin():
    return os.environ.get("RINGCACHE_BIN") or os.path.join(REPO_ROOT, ".build", "debug", "ringcache")


_HANDED_OUT = set()


def free_port():
    """A port free on 127.0.0.1 for TCP and UDP (a node's bus port carries gossip too), never
    one handed out before in this run: the kernel may give a released port again at once,
    and two nodes of one cluster configured with the same port fail to start."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in _HANDED_OUT:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        _HANDED_OUT.add(port)
        return port


def _config_flags(config):
    flags = []
    for key, value in config.items():
        flags += ["--" + key.replace("_", "-"), str(value)]
    return flags


_REAPERS = []
_ALL_PROCS = []


@atexit.register
def _kill_leftovers():
    # Safety net (e.g. after Ctrl-C): SIGKILL any server *we* started that still runs.
    for proc in _ALL_PROCS:
        if proc.poll() is None:
            proc.kill()


def _reap(proc):
    """Wait for a SIGTERMed process; SIGKILL it (only this PID) after STOP_GRACE."""
    try:
        proc.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_GRACE)


def pytest_sessionfinish(session, exitstatus):
    for t in _REAPERS:
        t.join()


class ServerStartError(Exception):
    pass


class Server:
    """A server process started for one test."""

    def __init__(self, target, config, workdir, logdir):
        self.target = target
        self.config = dict(config)
        self.workdir = workdir
        self.logdir = logdir
        self.port = None
        self.proc = None
        self.log_path = None
        self._log_file = None
        self._clients = []

    # ----------------------------------------------------------- lifecycle
    def command_line(self, port):
        flags = _config_flags(self.config)
        if self.target == "redis":
            return [
                shutil.which("redis-server") or "redis-server",
                "--port", str(port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--databases", "1",
            ] + flags
        return [_ringcache_bin(), "serve", "--port", str(port), "--bind", "127.0.0.1"] + flags

    def start(self):
        if self.target == "ringcache" and not os.access(_ringcache_bin(), os.X_OK):
            raise ServerStartError(
                f"ringcache binary not found at {_ringcache_bin()} "
                "(build it, set RINGCACHE_BIN, or use --target redis)"
            )
        last_error = None
        for _attempt in range(3):  # retry: the free port may be taken by someone else
            self.port = free_port()
            fd, self.log_path = tempfile.mkstemp(
                prefix=f"{self.target}-{self.port}-", suffix=".log", dir=self.logdir
            )
            os.close(fd)
            self._log_file = open(self.log_path, "wb")
            cmd = self.command_line(self.port)
            self._log_file.write(("$ " + " ".join(repr(c) if c == "" else c for c in cmd) + "\n").encode())
            self._log_file.flush()
            self.proc = subprocess.Popen(
                cmd, stdout=self._log_file, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.workdir,
            )
            _ALL_PROCS.append(self.proc)
            try:
                self._wait_ready()
                return self
            except ServerStartError as e:
                last_error = e
                exited = self.proc.poll() is not None
                self.stop()
                if not exited:
                    break  # timed out while running: retrying will not help
        raise ServerStartError(f"{last_error}\n--- server log tail ({self.log_path}) ---\n{self.log_tail()}")

    def _wait_ready(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"server exited during startup with code {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                    s.sendall(b"*1\r\n$4\r\nPING\r\n")
                    data = b""
                    while not data.endswith(b"\r\n"):
                        chunk = s.recv(1024)
                        if not chunk:
                            break
                        data += chunk
                    # +PONG, or -NOAUTH when requirepass is configured
                    if data.startswith(b"+PONG") or data.startswith(b"-NOAUTH"):
                        return
            except OSError:
                pass
            time.sleep(0.01)
        raise ServerStartError(f"server did not answer PING within {STARTUP_TIMEOUT}s on port {self.port}")

    def stop(self, wait=True):
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        self._clients = []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if wait:
                _reap(self.proc)
            else:
                # Let the process finish shutting down in the background (SIGKILL
                # after STOP_GRACE); the session waits for all of them at the end.
                t = threading.Thread(target=_reap, args=(self.proc,), daemon=True)
                t.start()
                _REAPERS.append(t)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # ----------------------------------------------------------- helpers
    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kw):
        """A redis-py client for this server (bytes replies unless overridden)."""
        # No automatic retries: a dropped connection or a server crash must
        # surface as an error instead of being hidden by a silent reconnect.
        opts = dict(host="127.0.0.1", port=self.port, decode_responses=False,
                    socket_timeout=15, socket_connect_timeout=5,
                    retry=Retry(NoBackoff(), 0))
        opts.update(kw)
        c = redis.Redis(**opts)
        self._clients.append(c)
        return c

    def cli(self, *args, input=None, timeout=60):
        """Run `redis-cli -p PORT args...` and return its stdout (bytes)."""
        cmd = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port)] + [
            a if isinstance(a, (bytes, str)) else str(a) for a in args
        ]
        res = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        return res.stdout

    def connect(self, timeout=5.0):
        """A raw TCP socket connected to the server."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def rss(self):
        """Resident set size of the server process in bytes."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")

    def log_tail(self, lines=60):
        if not self.log_path or not os.path.exists(self.log_path):
            return "(no log)"
        if self._log_file is not None:
            self._log_file.flush()
        with open(self.log_path, "rb") as f:
            data = f.read()
        return b"\n".join(data.splitlines()[-lines:]).decode("utf-8", "replace")


@pytest.fixture(scope="session")
def target(pytestconfig):
    return _resolve_target(pytestconfig)


@pytest.fixture(scope="session")
def _server_dirs(tmp_path_factory):
    # under pytest's basetemp (/tmp/pytest-of-$USER/pytest-N), which pytest prunes itself
    return str(tmp_path_factory.mktemp("server-cwd")), str(tmp_path_factory.mktemp("server-logs"))


@pytest.fixture
def start_server(request, target, _server_dirs):
    """Factory: start_server(**config) -> Server.  Config keys become --key value flags."""
    started = []
    request.node._integration_servers = started

    def _start(**config):
        srv = Server(target, config, *_server_dirs)
        started.append(srv)
        error = None
        try:
            srv.start()
        except ServerStartError as e:
            error = str(e)
        if error is not None:
            pytest.fail(error, pytrace=False)
        return srv

    yield _start
    for srv in started:
        srv.stop(wait=False)


@pytest.fixture
def server(start_server):
    return start_server()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for srv in getattr(item, "_integration_servers", []):
            state = "running" if srv.alive() else f"exited with {srv.proc.returncode if srv.proc else '?'}"
            rep.sections.append(
                (f"{srv.target} server log tail (port {srv.port}, {state}, {srv.log_path})", srv.log_tail())
            )


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def r(server, request):
    """redis-py client on a fresh server, once per RESP protocol version."""
    return server.client(protocol=request.param)


@pytest.fixture
def raw(server):
    """A raw RESP2 socket connection (see resp_helpers.RawConn) to a fresh server."""
    from resp_helpers import RawConn

    conn = RawConn(server.port)
    yield conn
    conn.close()
