"""Passive (on access) and active (background) expiration."""

import time


def test_px_keys_disappear(server):
    r = server.client()
    r.set(b"short", b"v", px=100)
    r.set(b"keep", b"v")
    assert r.get(b"short") == b"v"
    time.sleep(0.3)
    assert r.get(b"short") is None
    assert r.exists(b"short") == 0
    assert r.ttl(b"short") == -2
    assert r.get(b"keep") == b"v"


def test_expired_key_invisible_to_every_command(server):
    r = server.client()
    for k in [b"a", b"b", b"c", b"d", b"e"]:
        r.set(k, b"5", px=50)
    time.sleep(0.2)
    assert r.mget([b"a", b"b"]) == [None, None]
    assert r.incr(b"c") == 1  # starts from scratch, without TTL
    assert r.ttl(b"c") == -1
    assert r.append(b"d", b"x") == 1
    assert r.set(b"e", b"new", nx=True) is True
    assert r.strlen(b"a") == 0
    assert r.renamenx(b"c", b"b") is True  # expired destination counts as missing
    assert r.expire(b"a", 10) is False


def test_expire_then_persist_survives(server):
    r = server.client()
    r.set(b"k", b"v", px=200)
    assert r.persist(b"k") is True
    time.sleep(0.35)
    assert r.get(b"k") == b"v"


def test_active_expiry_without_access(server):
    r = server.client()
    n = 2000
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set(b"vol:%d" % i, b"x" * 10, px=200)
    for i in range(100):
        pipe.set(b"perm:%d" % i, b"x")
    pipe.execute()
    assert r.dbsize() == n + 100
    time.sleep(2.5)  # no access to the volatile keys: only active expiry can remove them
    assert r.dbsize() <= 100 + n // 100
    assert all(v == b"x" for v in r.mget([b"perm:%d" % i for i in range(100)]))
    info = r.info("stats")
    assert info["expired_keys"] >= n - n // 100
