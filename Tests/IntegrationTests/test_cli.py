"""The ringcache command line: configuration files, bad input at startup, graceful stop.

ringcache only: these exercise the CLI and cluster.conf handling, not Redis behaviour.
"""

import contextlib
import signal
import socket
import subprocess
import time

import pytest
import redis

from conftest import _ringcache_bin, free_port


@pytest.fixture(autouse=True)
def _ringcache_only(target):
    if target != "ringcache":
        pytest.skip("ringcache CLI behaviour")


def _run(args, timeout=20):
    return subprocess.run([_ringcache_bin()] + args, capture_output=True, timeout=timeout, text=True)


@contextlib.contextmanager
def _node(args, port, log_path, password=None):
    """Runs `ringcache ARGS` until it answers PING on `port`; yields a client and the process.
    The process is killed at the end if the test did not stop it (only this PID)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen([_ringcache_bin()] + args, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while True:
                assert proc.poll() is None, f"node exited with {proc.returncode}"
                try:
                    client = redis.Redis(port=port, password=password, socket_timeout=2)
                    client.ping()
                    break
                except redis.exceptions.ConnectionError:
                    assert time.monotonic() < deadline, "node did not answer PING"
                    time.sleep(0.05)
            yield client, proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_help_documents_every_option():
    top = _run(["--help"])
    assert top.returncode == 0 and "serve" in top.stdout
    serve = _run(["serve", "--help"])
    assert serve.returncode == 0
    for option in ["--config", "--node", "--port", "--bind", "--maxmemory", "--maxmemory-policy", "--requirepass",
                   "--timeout", "--maxclients", "--proto-max-bulk-len", "--client-output-buffer-limit"]:
        assert option in serve.stdout, option


@pytest.mark.parametrize("body, message", [
    ("port 7001\nbogus-directive 1\n", ":2: unknown directive 'bogus-directive'"),
    ("maxmemory lots\n", ":1: 'maxmemory' needs a size such as 100mb or 1gb, got 'lots'"),
    ("node n1 127.0.0.1:70000\n", ":1: 'node n1' needs host:port, got '127.0.0.1:70000'"),
    ("\n# comment\nmaxmemory-policy sometimes\n", ":3: 'maxmemory-policy' must be one of"),
])
def test_bad_config_line_stops_startup_with_file_and_line(tmp_path, body, message):
    conf = tmp_path / "bad.conf"
    conf.write_text(body)
    result = _run(["serve", "--config", str(conf)])
    assert result.returncode != 0
    assert f"{conf}{message}" in result.stderr, result.stderr


def test_unknown_node_and_missing_file_are_errors(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("node n1 127.0.0.1:7001\nnode n2 127.0.0.1:7002\n")
    result = _run(["serve", "--config", str(conf), "--node", "n9"])
    assert result.returncode != 0 and "no node named 'n9'" in result.stderr
    result = _run(["serve", "--config", str(conf)])
    assert result.returncode != 0 and "choose one with --node" in result.stderr
    result = _run(["serve", "--config", str(tmp_path / "missing.conf")])
    assert result.returncode != 0 and "cannot read configuration file" in result.stderr
    result = _run(["serve", "--port", "1", "--maxmemory", "-5"])
    assert result.returncode != 0 and "--maxmemory" in result.stderr


def test_port_in_use_is_a_clear_error():
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = _run(["serve", "--port", str(port)])
        assert result.returncode != 0
        assert f"could not listen on 127.0.0.1:{port}" in result.stderr


def test_node_from_config_file_then_graceful_sigterm(tmp_path):
    port = free_port()
    conf = tmp_path / "cluster.conf"
    conf.write_text(f"cluster-name t\nnode n1 127.0.0.1:{port}\nmaxmemory 10mb\nrequirepass sesame\n")
    with _node(["serve", "--config", str(conf), "--node", "n1"], port, tmp_path / "node.log", "sesame") as (client, proc):
        assert client.config_get("maxmemory") == {"maxmemory": "10485760"}
        assert client.info("server")["node_name"] == "n1"
        idle = redis.Redis(port=port, password="sesame")
        idle.ping()  # a connected client must not keep the node from stopping
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    text = (tmp_path / "node.log").read_text()
    assert "ready to accept connections" in text and "stopped" in text


def test_flags_override_the_file(tmp_path):
    port = free_port()
    conf = tmp_path / "c.conf"
    conf.write_text(f"node n1 127.0.0.1:{port}\nmaxmemory 10mb\n")
    with _node(["serve", "--config", str(conf), "--maxmemory", "20mb"], port, tmp_path / "node.log") as (client, proc):
        assert client.config_get("maxmemory") == {"maxmemory": "20971520"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
