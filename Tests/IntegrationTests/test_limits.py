"""Connection limits: maxclients, idle timeout, and slow readers (output buffering)."""

import socket
import time

from resp_helpers import RawConn, encode_command


def test_maxclients(start_server):
    srv = start_server(maxclients="5")
    time.sleep(0.2)  # let the server notice that the startup probe connection closed
    conns = []
    try:
        for i in range(5):
            c = RawConn(srv.port)
            conns.append(c)
            assert c.command_raw("PING") == b"+PONG\r\n", i
        extra = RawConn(srv.port)
        try:
            extra.send_command("PING")
            data, closed = extra.read_until_close(timeout=3)
        finally:
            extra.close()
        assert data == b"-ERR max number of clients reached\r\n"
        assert closed
        # existing clients are unaffected
        for c in conns:
            assert c.command_raw("PING") == b"+PONG\r\n"
        # freeing a slot lets a new client in
        conns.pop().close()
        time.sleep(0.2)
        with RawConn(srv.port) as c:
            assert c.command_raw("PING") == b"+PONG\r\n"
    finally:
        for c in conns:
            c.close()


def test_idle_timeout_closes_connection(start_server):
    srv = start_server(timeout="1")
    idle = RawConn(srv.port)
    busy = RawConn(srv.port)
    try:
        assert idle.command_raw("PING") == b"+PONG\r\n"
        t0 = time.monotonic()
        closed_at = None
        # keep `busy` active while `idle` sits idle
        while time.monotonic() - t0 < 4.0:
            assert busy.command_raw("PING") == b"+PONG\r\n"
            data, closed = idle.read_until_close(timeout=0.2)
            assert data == b""  # closed silently, without an error reply
            if closed:
                closed_at = time.monotonic() - t0
                break
        assert closed_at is not None, "idle connection was not closed within 4 s"
        assert 0.9 <= closed_at <= 3.5, closed_at
        # the active connection survived
        assert busy.command_raw("PING") == b"+PONG\r\n"
    finally:
        idle.close()
        busy.close()
    # new connections still work
    with RawConn(srv.port) as c:
        assert c.command_raw("PING") == b"+PONG\r\n"


def test_no_timeout_by_default(server):
    with RawConn(server.port) as c:
        assert c.command_raw("PING") == b"+PONG\r\n"
        data, closed = c.read_until_close(timeout=2.5)
        assert (data, closed) == (b"", False)
        assert c.command_raw("PING") == b"+PONG\r\n"


def test_slow_reader_does_not_exhaust_memory(server, target):
    """A client pipelines GETs of a 1 MiB value and never reads the replies.

    The server must keep its memory bounded -- either by applying backpressure
    (no longer reading that client's requests while its replies are unsent) or by
    disconnecting it -- and must keep serving other clients meanwhile.
    """
    r = server.client()
    if target == "redis":
        # Redis does not bound normal clients' output buffers by default
        # (client-output-buffer-limit normal 0 0 0) and would buffer gigabytes here;
        # enable its own limit so the reference run models the required behaviour.
        r.config_set("client-output-buffer-limit", "normal 64mb 32mb 5")
    big = bytes(range(256)) * 4096  # 1 MiB
    r.set(b"big", big)
    r.set(b"small", b"ok")
    base_rss = server.rss()
    max_growth = 0

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.connect(("127.0.0.1", server.port))
    s.setblocking(False)
    one_get = encode_command("GET", "big")
    chunk = one_get * 64
    sent_gets = 0
    max_gets = 2000  # ~2 GiB of replies if the server buffered them all
    disconnected = False
    t0 = time.monotonic()
    last_probe = 0.0
    try:
        # Keep going for a fixed 5 s: flood while the server accepts data, and keep
        # watching its memory after the flood ended (buffering may lag behind).
        while time.monotonic() - t0 < 5.0:
            if sent_gets < max_gets and not disconnected:
                try:
                    n = s.send(chunk)
                    sent_gets += n // len(one_get)
                    if n < len(chunk):
                        time.sleep(0.01)
                except BlockingIOError:
                    time.sleep(0.01)  # the server stopped reading from us: backpressure
                except OSError:
                    disconnected = True  # the server dropped the slow client: also fine
            else:
                time.sleep(0.05)
            now = time.monotonic()
            if now - last_probe > 0.25:
                last_probe = now
                max_growth = max(max_growth, server.rss() - base_rss)
                assert max_growth < 300 * 1024 * 1024, f"RSS grew by {max_growth / 1e6:.0f} MB"
                p0 = time.monotonic()
                assert r.get(b"small") == b"ok"
                assert time.monotonic() - p0 < 2.0, "other clients are starved"
        max_growth = max(max_growth, server.rss() - base_rss)
        assert max_growth < 300 * 1024 * 1024, f"RSS grew by {max_growth / 1e6:.0f} MB"
        assert server.alive()
        assert r.ping() is True
        assert r.get(b"small") == b"ok"
    finally:
        s.close()
    assert time.monotonic() - t0 < 15
    # after the slow client is gone the server is fully usable
    r2 = server.client()
    assert r2.get(b"big") == big
    assert server.rss() - base_rss < 300 * 1024 * 1024


def test_config_set_limits_apply_to_open_connections(raw, server):
    r = server.client()
    assert r.config_set("proto-max-bulk-len", "1mb") is True
    raw.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n")
    assert raw.read_raw().startswith(b"-ERR Protocol error: invalid bulk length")
