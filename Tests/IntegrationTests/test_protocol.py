"""RESP protocol handling on raw sockets: protocol errors, inline commands, fuzzing."""

import random
import select
import socket
import time

import pytest

from resp_helpers import RawConn, encode_command, raw_exchange


def _assert_server_healthy(server):
    assert server.alive(), "server process died"
    with RawConn(server.port) as c:
        assert c.command_raw("PING") == b"+PONG\r\n"


@pytest.mark.parametrize(
    "payload,expected",
    [
        (b"*abc\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\n$4\r\nPING\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n$-5\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n$abc\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n$600000000\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\nfoo\r\n", b"-ERR Protocol error: expected '$', got 'f'\r\n"),
        (b"*2\r\n$4\r\nECHO\r\n:1\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
        (b'SET "a b\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n"),
        (b"SET 'a b\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n"),
        (b'SET "a"b c\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    ],
    ids=[
        "bad-multibulk-len", "multibulk-len-lf-only", "negative-bulk-len", "non-numeric-bulk-len",
        "bulk-len-over-512mb", "expected-dollar", "integer-instead-of-bulk", "unbalanced-double-quote",
        "unbalanced-single-quote", "closing-quote-not-followed-by-space",
    ],
)
def test_protocol_error_closes_connection(server, payload, expected):
    data, closed = raw_exchange(server.port, payload, timeout=3)
    assert data == expected
    assert closed, "server must close the connection after a protocol error"
    _assert_server_healthy(server)


def test_replies_before_protocol_error_are_delivered(server):
    data, closed = raw_exchange(server.port, b"*1\r\n$4\r\nPING\r\nPING\r\n*1\r\n*abc\r\n", timeout=3)
    assert data == b"+PONG\r\n+PONG\r\n-ERR Protocol error: expected '$', got '*'\r\n"
    assert closed


def test_too_big_inline_request(server):
    data, closed = raw_exchange(server.port, b"x" * (70 * 1024), timeout=5)  # no newline at all
    assert data == b"-ERR Protocol error: too big inline request\r\n"
    assert closed
    _assert_server_healthy(server)


def test_bulk_length_above_proto_max_bulk_len(start_server):
    srv = start_server(**{"proto-max-bulk-len": "1mb"})
    data, closed = raw_exchange(srv.port, b"*2\r\n$3\r\nGET\r\n$2000000\r\n", timeout=3)
    assert data == b"-ERR Protocol error: invalid bulk length\r\n"
    assert closed
    data, closed = raw_exchange(srv.port, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048577\r\n", timeout=3)
    assert data == b"-ERR Protocol error: invalid bulk length\r\n"
    assert closed
    _assert_server_healthy(srv)
    # exactly proto-max-bulk-len is still accepted
    r = srv.client()
    assert r.set(b"k", b"x" * (1 << 20)) is True
    assert r.strlen(b"k") == 1 << 20


def test_incomplete_request_waits_for_more_data(server):
    with RawConn(server.port) as c:
        c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhel")
        data, closed = c.read_until_close(timeout=0.3)
        assert (data, closed) == (b"", False)
        c.send(b"lo\r\n")
        assert c.read_raw() == b"+OK\r\n"
        # byte-by-byte delivery
        for byte in encode_command("GET", "k"):
            c.send(bytes([byte]))
        assert c.read_raw() == b"$5\r\nhello\r\n"


def test_empty_multibulk_and_blank_lines_are_ignored(server):
    with RawConn(server.port) as c:
        c.send(b"*0\r\n\r\n\r\n*-1\r\nPING\r\n")
        assert c.read_raw() == b"+PONG\r\n"
        data, closed = c.read_until_close(timeout=0.3)
        assert (data, closed) == (b"", False)


# ----------------------------------------------------------------- inline


def test_inline_commands(server):
    with RawConn(server.port) as c:
        c.send(b"PING\r\n")
        assert c.read_raw() == b"+PONG\r\n"
        c.send(b'SET k "hello world"\r\n')
        assert c.read_raw() == b"+OK\r\n"
        c.send(b"GET k\r\n")
        assert c.read_raw() == b"$11\r\nhello world\r\n"
        c.send(b"ping\n")  # a bare LF also terminates inline commands
        assert c.read_raw() == b"+PONG\r\n"
        c.send(b"  SET   k2    v2  \r\nGET k2\r\n")  # extra whitespace is ignored
        assert c.read_raw() == b"+OK\r\n"
        assert c.read_raw() == b"$2\r\nv2\r\n"
        c.send(b"SET k3 ''\r\nSTRLEN k3\r\n")
        assert c.read_raw() == b"+OK\r\n"
        assert c.read_raw() == b":0\r\n"
        c.send(b"NOSUCH a\r\n")
        assert c.read_raw() == b"-ERR unknown command 'NOSUCH', with args beginning with: 'a' \r\n"


def test_inline_quoting_and_escapes(server):
    with RawConn(server.port) as c:
        c.send(b'ECHO "a\\x41b\\n\\t\\"q\\""\r\n')  # escapes are interpreted inside double quotes
        assert c.read_raw() == b'$8\r\naAb\n\t"q"\r\n'
        c.send(b"ECHO 'a\\x41b'\r\n")  # but not inside single quotes
        assert c.read_raw() == b"$6\r\na\\x41b\r\n"
        c.send(b"ECHO 'it\\'s'\r\n")
        assert c.read_raw() == b"$4\r\nit's\r\n"


def test_inline_and_multibulk_can_be_mixed_in_one_write(server):
    with RawConn(server.port) as c:
        c.send(b"SET a 1\r\n" + encode_command("INCR", "a") + b"GET a\r\n")
        assert c.read_raw() == b"+OK\r\n"
        assert c.read_raw() == b":2\r\n"
        assert c.read_raw() == b"$1\r\n2\r\n"


# ----------------------------------------------------------------- fuzzing


def _garbage(rng):
    kind = rng.random()
    n = rng.randint(1, 2048)
    if kind < 0.4:
        return bytes(rng.getrandbits(8) for _ in range(n))
    if kind < 0.8:
        # RESP-looking garbage: valid-ish tokens glued together randomly
        tokens = [b"*", b"$", b"\r\n", b"\n", b"-1", b"0", b"1", b"3", b"99999999999999999999", b"PING",
                  b"GET", b"SET", b"ECHO", b'"', b"'", b"\\x", b" ", b"\x00", b"%2", b"~", b"_", b"+OK"]
        return b"".join(rng.choice(tokens) for _ in range(rng.randint(1, 200)))
    # a valid command followed by junk
    return encode_command("SET", "fuzz", "x" * rng.randint(0, 100)) + bytes(
        rng.getrandbits(8) for _ in range(rng.randint(1, 256))
    )


def test_random_garbage_does_not_crash_server(server):
    r = server.client()
    r.set(b"sentinel", b"still-here")
    rng = random.Random(1234)
    pid_before = server.pid
    for batch in range(4):
        socks = []
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            try:
                s.sendall(_garbage(rng))
            except OSError:
                pass  # the server may already have closed it: fine
            socks.append(s)
        # drain whatever the server answers for a short while, then close
        deadline = time.monotonic() + 0.3
        open_socks = list(socks)
        while open_socks and time.monotonic() < deadline:
            readable, _, _ = select.select(open_socks, [], [], 0.05)
            for s in readable:
                try:
                    if not s.recv(65536):
                        open_socks.remove(s)
                except OSError:
                    open_socks.remove(s)
        for s in socks:
            s.close()
        assert server.alive(), f"server died during fuzz batch {batch}"
    assert server.pid == pid_before and server.alive()
    _assert_server_healthy(server)
    r2 = server.client()
    assert r2.ping() is True
    assert r2.get(b"sentinel") == b"still-here"
