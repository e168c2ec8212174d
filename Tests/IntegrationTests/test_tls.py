"""TLS with real certificates made by `ringcache tls generate`: redis-cli --tls and redis-py
ssl against a node (the standalone tests run against redis-server too, `--target redis`),
client-certificate modes, reloading certificates with CONFIG SET, a 3-node cluster whose
clients and bus speak TLS only running the quorum tests of test_cluster.py, bus peers with
the wrong certificate refused and counted, and the ringcache CLI and cluster commands."""

import os
import socket
import ssl
import subprocess
import time

import pytest
import redis

from bus_client import BusError, command, read_reply
from conftest import _ringcache_bin, free_port
from test_cluster import NAMES, LocalCluster

# The quorum tests of test_cluster.py, run here against the TLS cluster of this module's
# `cluster` fixture.
from test_cluster import (  # noqa: F401
    test_keyspace_commands_count_each_key_once,
    test_keyspace_iteration_and_renames_across_nodes,
    test_quorum_survives_a_killed_node_and_all_does_not,
    test_read_modify_write_commands_serialise_at_the_first_replica,
    test_restarted_node_is_repaired_by_reads,
    test_write_through_one_node_read_through_another,
)


def generate(directory, nodes="n1,n2,n3"):
    subprocess.run([_ringcache_bin(), "tls", "generate", "--dir", directory, "--nodes", nodes],
                   check=True, stdout=subprocess.DEVNULL, timeout=60)
    return directory


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory):
    """Certificates from another CA, with the same names."""
    return generate(str(tmp_path_factory.mktemp("other-certs")))


@pytest.fixture
def cluster(tmp_path, certs, target):
    if target != "ringcache":
        pytest.skip("ringcache cluster behaviour")
    c = LocalCluster(str(tmp_path), tls_dir=certs).start_all()
    yield c
    c.stop_all()


def tls_server(start_server, certs, **config):
    """A node (or redis-server) with a TLS port beside its plain one (the readiness check
    uses the plain port)."""
    port = free_port()
    server = start_server(tls_port=port, tls_cert_file=f"{certs}/n1.crt", tls_key_file=f"{certs}/n1.key",
                          tls_ca_cert_file=f"{certs}/ca.crt", **config)
    server.tls_port = port
    return server


def tls_client(server, certs, client_cert=True, ca=None, **kw):
    extra = dict(ssl_certfile=f"{certs}/client.crt", ssl_keyfile=f"{certs}/client.key") if client_cert else {}
    return redis.Redis(host="127.0.0.1", port=server.tls_port, ssl=True, ssl_ca_certs=ca or f"{certs}/ca.crt",
                       socket_timeout=5, **extra, **kw)


def redis_cli(port, certs, *args, client_cert=True):
    flags = ["--tls", "--cacert", f"{certs}/ca.crt"]
    if client_cert:
        flags += ["--cert", f"{certs}/client.crt", "--key", f"{certs}/client.key"]
    result = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + flags + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    return result.stdout.decode(errors="replace").strip()


# MARK: one node (ringcache and redis-server alike)


def test_redis_cli_and_redis_py_speak_tls(start_server, certs):
    server = tls_server(start_server, certs)
    assert redis_cli(server.tls_port, certs, "SET", "greeting", "over tls") == "OK"
    assert redis_cli(server.tls_port, certs, "GET", "greeting") == "over tls"
    r = tls_client(server, certs)
    assert r.set("k", b"\x00\xff") is True and r.get("k") == b"\x00\xff"
    pipe = r.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"p{i}", "x" * 100)
    assert all(pipe.execute())
    assert r.dbsize() == 502
    # The plain port serves the same data.
    assert server.client().get("greeting") == b"over tls"


def test_a_client_without_a_certificate_is_refused_when_tls_auth_clients_is_yes(start_server, certs):
    server = tls_server(start_server, certs)
    with pytest.raises(redis.exceptions.ConnectionError):
        tls_client(server, certs, client_cert=False).ping()
    assert "PONG" not in redis_cli(server.tls_port, certs, "PING", client_cert=False)
    assert tls_client(server, certs).ping()


def test_optional_and_no_client_certificates(start_server, certs, other_certs):
    optional = tls_server(start_server, certs, tls_auth_clients="optional")
    assert tls_client(optional, certs, client_cert=False).ping()
    assert tls_client(optional, certs).ping()
    # Optional: a certificate shown must still chain to the CA.
    stranger = redis.Redis(host="127.0.0.1", port=optional.tls_port, ssl=True, ssl_ca_certs=f"{certs}/ca.crt",
                           ssl_certfile=f"{other_certs}/client.crt", ssl_keyfile=f"{other_certs}/client.key", socket_timeout=5)
    with pytest.raises(redis.exceptions.ConnectionError):
        stranger.ping()
    off = tls_server(start_server, certs, tls_auth_clients="no")
    assert tls_client(off, certs, client_cert=False).ping()


def test_a_client_that_does_not_trust_the_ca_cannot_connect(start_server, certs, other_certs):
    server = tls_server(start_server, certs)
    with pytest.raises(redis.exceptions.ConnectionError):
        tls_client(server, certs, ca=f"{other_certs}/ca.crt").ping()


def test_tls_protocols_limit_the_versions(start_server, certs):
    server = tls_server(start_server, certs, tls_protocols="TLSv1.3")
    context = ssl.create_default_context(cafile=f"{certs}/ca.crt")
    context.load_cert_chain(f"{certs}/client.crt", f"{certs}/client.key")
    context.check_hostname = False
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", server.tls_port), timeout=5) as sock:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(sock).do_handshake()
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection(("127.0.0.1", server.tls_port), timeout=5) as sock:
        with context.wrap_socket(sock) as tls:
            assert tls.version() == "TLSv1.3"
            tls.sendall(b"PING\r\n")
            assert tls.recv(64) == b"+PONG\r\n"


def served_certificate(port, ca):
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with context.wrap_socket(sock) as tls:
            return tls.getpeercert(binary_form=True)


def test_config_set_reloads_certificates_and_keeps_the_old_ones_on_a_bad_file(start_server, certs, other_certs, target):
    server = tls_server(start_server, certs, tls_auth_clients="no")
    before = served_certificate(server.tls_port, f"{certs}/ca.crt")
    plain = server.client()
    # A file that is not there, and a key that does not match: refused, the old ones stay.
    with pytest.raises(redis.exceptions.ResponseError):
        plain.config_set("tls-cert-file", "/nonexistent/cert.pem")
    if target == "ringcache":
        with pytest.raises(redis.exceptions.ResponseError, match="is not the key of"):
            plain.config_set("tls-key-file", f"{other_certs}/n1.key")
    (kept,) = plain.config_get("tls-cert-file").values()
    assert (kept.decode() if isinstance(kept, bytes) else kept) == f"{certs}/n1.crt"
    assert served_certificate(server.tls_port, f"{certs}/ca.crt") == before
    assert tls_client(server, certs, client_cert=False).ping()
    # Certificate, key and CA changed at once: new connections get the new certificate.
    assert plain.execute_command("CONFIG", "SET", "tls-cert-file", f"{other_certs}/n1.crt",
                                 "tls-key-file", f"{other_certs}/n1.key", "tls-ca-cert-file", f"{other_certs}/ca.crt") == b"OK"
    after = served_certificate(server.tls_port, f"{other_certs}/ca.crt")
    assert after != before
    assert tls_client(server, other_certs, client_cert=False).ping()
    with pytest.raises(redis.exceptions.ConnectionError):
        tls_client(server, certs, client_cert=False).ping()


# MARK: ringcache only


def test_port_0_turns_plain_tcp_off(tmp_path, certs, target):
    if target != "ringcache":
        pytest.skip("started by hand")
    tls_port, plain_port = free_port(), free_port()
    proc = subprocess.Popen(
        [_ringcache_bin(), "serve", "--port", "0", "--tls-port", str(tls_port), "--tls-cert-file", f"{certs}/n1.crt",
         "--tls-key-file", f"{certs}/n1.key", "--tls-ca-cert-file", f"{certs}/ca.crt"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=str(tmp_path))
    try:
        r = redis.Redis(host="127.0.0.1", port=tls_port, ssl=True, ssl_ca_certs=f"{certs}/ca.crt",
                        ssl_certfile=f"{certs}/client.crt", ssl_keyfile=f"{certs}/client.key", socket_timeout=5)
        deadline = time.monotonic() + 20
        while True:
            try:
                if r.ping():
                    break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "the node did not answer on its TLS port"
                time.sleep(0.05)
        # A plain client on the TLS port gets nothing it can read, and the node goes on.
        with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as sock:
            sock.sendall(b"PING\r\n")
            assert not sock.recv(64).startswith(b"+PONG")
        assert r.ping()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("lines, message", [
    ("tls-port {port}\ntls-cert-file /nonexistent/n1.crt\ntls-key-file {certs}/n1.key\ntls-ca-cert-file {certs}/ca.crt\n",
     "x.conf:2: tls-cert-file '/nonexistent/n1.crt' cannot be read"),
    ("tls-port {port}\ntls-cert-file {certs}/n1.crt\ntls-key-file {certs}/n2.key\ntls-ca-cert-file {certs}/ca.crt\n",
     "x.conf:3: tls-key-file '{certs}/n2.key' is not the key of tls-cert-file '{certs}/n1.crt'"),
    ("tls-port {port}\ntls-cert-file {certs}/n1.crt\ntls-key-file {certs}/n1.key\n",
     "'tls-ca-cert-file' must be set when tls-cluster or tls-auth-clients is on"),
    ("tls-port {port}\ntls-protocols TLSv1.9\n", "x.conf:2: 'tls-protocols' knows TLSv1, TLSv1.1, TLSv1.2, TLSv1.3"),
    ("port 0\n", "'port 0' turns plain TCP off, and no 'tls-port' is set"),
])
def test_bad_tls_lines_stop_start_up_with_the_line_named(tmp_path, certs, target, lines, message):
    if target != "ringcache":
        pytest.skip("ringcache configuration")
    conf = tmp_path / "x.conf"
    conf.write_text(lines.format(port=free_port(), certs=certs))
    result = subprocess.run([_ringcache_bin(), "serve", "--config", "x.conf"], cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert result.returncode != 0
    assert message.format(certs=certs) in result.stdout.decode(), result.stdout.decode()


def test_the_cluster_runs_tls_only_with_every_bus_link_up(cluster):
    for name in NAMES:
        with pytest.raises(redis.exceptions.ConnectionError):
            redis.Redis(port=cluster.ports[name], socket_timeout=3).ping()
        cluster_info = cluster.client(name).info("cluster")
        assert cluster_info["bus_tls_handshakes_refused"] == 0
        assert cluster_info["bus_certificate_names_refused"] == 0
    assert b"cluster_known_nodes:3" in cluster.client("n2").execute_command("CLUSTER", "INFO")


def bus_tls(cluster, certs, name="n1"):
    context = ssl.create_default_context(cafile=f"{certs}/ca.crt")
    context.check_hostname = False
    context.load_cert_chain(f"{certs}/client.crt", f"{certs}/client.key")
    sock = socket.create_connection(("127.0.0.1", cluster.bus_ports[name]), timeout=5)
    return context.wrap_socket(sock)


def test_a_bus_peer_with_a_certificate_from_another_ca_is_refused_and_counted(cluster, other_certs):
    before = cluster.client("n1").info("cluster")["bus_tls_handshakes_refused"]
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with bus_tls(cluster, other_certs) as tls:
            tls.sendall(command("PING"))
            if not tls.recv(64):
                raise ConnectionError("closed")
    # Plain TCP on the TLS bus is refused too: no handshake answer comes back.
    with socket.create_connection(("127.0.0.1", cluster.bus_ports["n1"]), timeout=5) as sock:
        sock.sendall(command("RC.HELLO", "itest", "n2", os.urandom(32)))
        assert b"RC.HELLO" not in sock.recv(4096) and not isinstance(sock, ssl.SSLSocket)
    cluster.wait_until(lambda: cluster.client("n1").info("cluster")["bus_tls_handshakes_refused"] >= before + 2)
    assert cluster.client("n1").get("nothing") is None


def test_a_bus_peer_claiming_a_name_its_certificate_does_not_give_is_refused(cluster, certs):
    before = cluster.client("n1").info("cluster")["bus_certificate_names_refused"]
    # The client certificate chains to the right CA, but names "client", not "n2".
    with bus_tls(cluster, certs) as tls:
        tls.sendall(command("RC.HELLO", "itest", "n2", os.urandom(32)))
        reply = read_reply(tls.makefile("rb"))
        assert isinstance(reply, BusError) and "NOAUTH" in str(reply)
    assert cluster.client("n1").info("cluster")["bus_certificate_names_refused"] == before + 1
    assert cluster.client("n1").set("still", "serving") is True


def test_ringcache_cli_and_the_cluster_commands_speak_tls(cluster, certs):
    cli = [_ringcache_bin(), "cli", "--seeds", f"127.0.0.1:{cluster.ports['n2']}", "--cacert", f"{certs}/ca.crt",
           "--cert", f"{certs}/client.crt", "--key", f"{certs}/client.key"]
    assert subprocess.run(cli + ["SET", "via", "client"], capture_output=True, timeout=30).stdout.strip() == b"OK"
    assert subprocess.run(cli + ["GET", "via"], capture_output=True, timeout=30).stdout.strip() == b'"client"'
    assert cluster.client("n3").get("via") == b"client"
    # Without a client certificate the nodes refuse it.
    bare = subprocess.run(cli[:5] + ["GET", "via"], capture_output=True, timeout=30)
    assert bare.returncode != 0
    status = subprocess.run([_ringcache_bin(), "cluster", "status", "--config", cluster.conf], capture_output=True, timeout=60)
    # Every node answered over TLS: its keys are counted (gossip may still call one suspect
    # for a moment on a loaded machine).
    rows = [line.split() for line in status.stdout.decode().splitlines()[1:]]
    assert status.returncode == 0 and [row[0] for row in rows] == NAMES, status.stdout.decode()
    assert all(row[2] in ("alive", "suspect") and row[5] == "1" and "answer" not in " ".join(row) for row in rows), status.stdout.decode()


def test_cluster_up_and_down_with_a_tls_cluster_conf(tmp_path, certs, target):
    if target != "ringcache":
        pytest.skip("ringcache cluster behaviour")
    ports = [free_port() for _ in NAMES]
    conf = tmp_path / "cluster.conf"
    conf.write_text(
        "cluster-name tlsup\nreplicas 3\nread-quorum 2\nwrite-quorum 2\nport 0\ntls-cluster yes\n"
        f"tls-cert-file {certs}/{{node}}.crt\ntls-key-file {certs}/{{node}}.key\ntls-ca-cert-file {certs}/ca.crt\n"
        + "".join(f"node {name} 127.0.0.1:{port} {free_port()}\n" for name, port in zip(NAMES, ports)))
    run = str(tmp_path / "run")
    up = subprocess.run([_ringcache_bin(), "cluster", "up", "--config", str(conf), "--dir", run],
                        capture_output=True, timeout=120)
    try:
        assert up.returncode == 0, up.stdout.decode() + up.stderr.decode()
        assert b"ready: 3 nodes" in up.stdout
        assert redis_cli(ports[0], certs, "SET", "up", "tls") == "OK"
        assert redis_cli(ports[2], certs, "GET", "up") == "tls"
    finally:
        subprocess.run([_ringcache_bin(), "cluster", "down", "--dir", run], capture_output=True, timeout=120)
