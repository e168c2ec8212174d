"""Small raw-socket RESP helpers shared by the integration tests."""

import socket
import time


def encode_command(*args):
    """Encode a command as a RESP multibulk request."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RawConn:
    """A raw TCP connection that can read exact RESP replies."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def send_command(self, *args):
        self.sock.sendall(encode_command(*args))

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by server")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_raw(self):
        """Read one complete reply and return its exact wire bytes."""
        line = self._line()
        out = [line + b"\r\n"]
        t = line[:1]
        if t in (b"$", b"=", b"!"):
            n = int(line[1:])
            if n >= 0:
                out.append(self._exact(n + 2))
        elif t in (b"*", b"~", b">", b"%", b"|"):
            n = int(line[1:])
            if t in (b"%", b"|"):
                n *= 2
            for _ in range(max(n, 0)):
                out.append(self.read_raw())
        return b"".join(out)

    def command_raw(self, *args):
        self.send_command(*args)
        return self.read_raw()

    def read_until_close(self, timeout=2.0):
        """Read everything until the server closes the connection or `timeout` passes.

        Returns (data, closed)."""
        data, self.buf = self.buf, b""
        deadline = time.monotonic() + timeout
        closed = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
        return data, closed


def raw_exchange(port, payload, timeout=2.0):
    """Send payload on a fresh connection; return (all bytes received, closed_by_server).

    The server may close the connection before it has consumed the whole payload
    (e.g. right after a protocol error); that is not an error here."""
    with RawConn(port) as c:
        try:
            c.send(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return c.read_until_close(timeout)


def error_text(conn, *args):
    """Run a command on a RawConn and return the full error text (without '-' and CRLF).

    Fails if the reply is not a simple error."""
    reply = conn.command_raw(*args)
    assert reply.startswith(b"-") and reply.endswith(b"\r\n"), f"expected an error reply, got {reply!r}"
    return reply[1:-2].decode()


def call_raw(client, *args):
    """Execute a command through a redis-py client *without* redis-py's reply
    callbacks, so the reply is returned as parsed from the wire (bytes, ints,
    lists...)."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_command(*args)
        return conn.read_response()
    finally:
        pool.release(conn)
