"""A cluster-bus client for tests: the bus handshake (RC.HELLO / RC.PROVE, HMAC-SHA256 over
both nonces, the cluster name and both node names) and raw requests, as a peer node speaks
them. It is how tests reach a node's own copy of a key, and how they play an attacker."""

import hashlib
import hmac
import os
import socket
import struct
import time

from resp_helpers import encode_command as command


class BusError(Exception):
    """An error reply on the bus."""


def read_reply(reader):
    """One RESP reply from a file-like reader: bytes, int, list, None; errors as BusError values."""
    line = reader.readline()
    if not line:
        raise ConnectionError("the node closed the bus connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        return BusError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else reader.read(n + 2)[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [read_reply(reader) for _ in range(n)]
    raise ConnectionError(f"unexpected reply {line!r}")


def transcript(role, cluster, client, server, client_nonce, server_nonce):
    out = b"ringcache-bus-v2"
    for field in (role.encode(), cluster.encode(), client.encode(), server.encode(), client_nonce, server_nonce):
        out += struct.pack(">I", len(field)) + field
    return out


def proof(key, role, cluster, client, server, client_nonce, server_nonce):
    return hmac.new(key, transcript(role, cluster, client, server, client_nonce, server_nonce), hashlib.sha256).digest()


class BusClient:
    """A bus connection that has done the handshake as node `name` (raises if refused)."""

    def __init__(self, host, port, cluster, secret, name, timeout=5.0, handshake=True):
        self.cluster, self.name = cluster, name
        self.key = (secret or cluster).encode()
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = self.sock.makefile("rb")
        self.sent = b""
        if handshake:
            self.handshake()

    def handshake(self):
        nonce = os.urandom(32)
        hello = command("RC.HELLO", self.cluster, self.name, nonce)
        self.send(hello)
        challenge = read_reply(self.reader)
        if isinstance(challenge, BusError):
            raise challenge
        server, server_nonce, server_proof = challenge
        expected = proof(self.key, "server", self.cluster, self.name, server.decode(), nonce, server_nonce)
        if not hmac.compare_digest(expected, server_proof):
            raise BusError("the node's proof does not match the secret")
        prove = command("RC.PROVE", proof(self.key, "client", self.cluster, self.name, server.decode(), nonce, server_nonce))
        self.send(prove)
        ok = read_reply(self.reader)
        if isinstance(ok, BusError):
            raise ok
        assert ok == b"OK", ok

    def send(self, data):
        self.sent += data
        self.sock.sendall(data)

    def call(self, *args):
        self.send(command(*args))
        return read_reply(self.reader)

    def pipeline(self, requests):
        self.send(b"".join(command(*r) for r in requests))
        return [read_reply(self.reader) for _ in requests]

    def closed(self, timeout=5.0):
        """True once the node closed the connection (reads until EOF or timeout)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


STATUS = {"alive": 0, "suspect": 1, "dead": 2}


def gossip_packet(cluster, secret, sender, updates=(), kind=1, sequence=1, target="", stamp=None):
    """A signed gossip datagram (RCG2), as a member would send it. `updates` are
    (name, incarnation, status) triples; `stamp` defaults to now."""
    def string(text):
        data = text.encode()
        return bytes([len(data)]) + data
    if stamp is None:
        stamp = int(time.time() * 1000) << 16
    body = b"RCG2" + string(cluster) + string(sender) + struct.pack(">Q", stamp)
    body += bytes([kind]) + struct.pack(">Q", sequence) + string(target) + bytes([len(updates)])
    for name, incarnation, status in updates:
        body += string(name) + struct.pack(">Q", incarnation) + bytes([STATUS[status]])
    return body + hmac.new((secret or cluster).encode(), body, hashlib.sha256).digest()
