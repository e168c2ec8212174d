"""maxmemory and eviction policies (allkeys-lru, noeviction, volatile-lru, volatile-ttl)."""

import time

import pytest
import redis

from resp_helpers import RawConn, error_text

OOM = "OOM command not allowed when used memory > 'maxmemory'."
VALUE = b"v" * 100


def _write(r, prefix, start, count, batch=1000, **set_kw):
    """SET prefix:i for i in [start, start+count) in pipelined batches; return error replies."""
    errors = []
    for lo in range(start, start + count, batch):
        pipe = r.pipeline(transaction=False)
        for i in range(lo, min(lo + batch, start + count)):
            pipe.set(b"%s:%d" % (prefix, i), VALUE, **set_kw)
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, Exception):
                errors.append(reply)
    return errors


def _assert_oom(err):
    # redis-py maps the "OOM" error prefix to OutOfMemoryError and strips it
    assert isinstance(err, redis.exceptions.OutOfMemoryError), repr(err)
    assert "OOM " + str(err) == OOM


def _write_until_oom(r, prefix, limit=100000, **set_kw):
    """SET prefix:i one by one until the first error; return (number written, error)."""
    for i in range(limit):
        try:
            r.set(b"%s:%d" % (prefix, i), VALUE, **set_kw)
        except redis.ResponseError as e:
            return i, e
    return limit, None


def test_allkeys_lru_evicts_instead_of_failing(start_server):
    srv = start_server(**{"maxmemory": "2mb", "maxmemory-policy": "allkeys-lru"})
    r = srv.client()
    errors = _write(r, b"bulk", 0, 50000)
    assert errors == []
    size = r.dbsize()
    assert 0 < size < 30000, size
    # the most recently written keys must be present
    time.sleep(1.1)  # let the server's LRU clock (1 s resolution in Redis) move on
    assert _write(r, b"recent", 0, 200, batch=20) == []
    assert all(v == VALUE for v in r.mget([b"recent:%d" % i for i in range(200)]))
    size = r.dbsize()
    evicted = r.info("stats")["evicted_keys"]
    assert 50200 <= size + evicted <= 50200 + 1000, (size, evicted)
    # the server still answers normally
    assert r.ping() is True
    assert r.get(b"bulk:0") in (None, VALUE)


def test_allkeys_lru_keeps_recently_used_keys(start_server):
    """Keys that are read regularly survive while far more than maxmemory is written.

    Sizing works for both targets: Redis counts its ~1 MB baseline in used_memory,
    ringcache counts only its store, so the capacities differ.  With 8 MB and ~1 KB
    values each round (4,000 keys) stays well below either capacity (~6,500 keys in
    Redis, ~7,500 in ringcache), so older rounds always provide colder keys to evict
    -- Redis's LRU clock has a 1 s resolution, and keys touched in the same second
    tie -- while 4 rounds write about twice the capacity of either.
    """
    srv = start_server(**{"maxmemory": "8mb", "maxmemory-policy": "allkeys-lru"})
    r = srv.client()
    value = b"v" * 1000
    hot = [b"hot:%d" % i for i in range(50)]
    for k in hot:
        r.set(k, value)
    for round_ in range(4):
        time.sleep(1.05)
        assert r.mget(hot) == [value] * len(hot), round_  # touch the hot keys
        pipe = r.pipeline(transaction=False)
        for i in range(4000):
            pipe.set(b"cold%d:%d" % (round_, i), value)
        assert all(reply is True for reply in pipe.execute(raise_on_error=False))
    assert r.info("stats")["evicted_keys"] > 0
    assert r.dbsize() < 16000
    assert r.mget(hot) == [value] * len(hot)


def test_noeviction_returns_oom_error(start_server):
    srv = start_server(**{"maxmemory": "2mb", "maxmemory-policy": "noeviction"})
    r = srv.client()
    written, err = _write_until_oom(r, b"k")
    assert err is not None, "writes never failed under noeviction"
    _assert_oom(err)
    assert written > 0
    assert r.dbsize() == written
    with RawConn(srv.port) as c:  # exact wire text
        assert c.command_raw("SET", "x", "y" * 100) == b"-" + OOM.encode() + b"\r\n"
    # reads and deletes still work while out of memory
    assert r.get(b"k:0") == VALUE
    assert r.exists(b"k:1") == 1
    with RawConn(srv.port) as c:
        assert error_text(c, "SET", "another", "x" * 100) == OOM
        assert error_text(c, "APPEND", "k:0", "x" * 100) == OOM
        assert c.command_raw("GET", "k:0") == b"$100\r\n" + VALUE + b"\r\n"
        assert c.command_raw("PING") == b"+PONG\r\n"
    # freeing memory makes writes possible again
    assert r.flushall() is True
    assert r.set(b"after", VALUE) is True
    assert r.info("stats")["evicted_keys"] == 0


@pytest.mark.parametrize("policy", ["volatile-lru", "volatile-ttl"])
def test_volatile_policy_without_volatile_keys_is_oom(start_server, policy):
    srv = start_server(**{"maxmemory": "2mb", "maxmemory-policy": policy})
    r = srv.client()
    written, err = _write_until_oom(r, b"persistent")
    assert err is not None, "writes never failed although no key has a TTL"
    _assert_oom(err)
    assert r.dbsize() == written  # nothing was evicted
    assert r.get(b"persistent:0") == VALUE


@pytest.mark.parametrize("policy", ["volatile-lru", "volatile-ttl"])
def test_volatile_policy_evicts_only_volatile_keys(start_server, policy):
    srv = start_server(**{"maxmemory": "2mb", "maxmemory-policy": policy})
    r = srv.client()
    assert _write(r, b"keep", 0, 300) == []
    errors = _write(r, b"vol", 0, 20000, ex=3600)
    assert errors == []
    assert r.dbsize() < 20300
    assert r.info("stats")["evicted_keys"] > 0
    # every non-volatile key survived
    assert r.mget([b"keep:%d" % i for i in range(300)]) == [VALUE] * 300
    # once no volatile keys are left to evict, writes of non-volatile keys hit OOM
    written, err = _write_until_oom(r, b"more")
    assert err is not None
    _assert_oom(err)
    assert r.mget([b"keep:%d" % i for i in range(300)]) == [VALUE] * 300
    assert r.mget([b"more:%d" % i for i in range(written)]) == [VALUE] * written


def test_volatile_ttl_prefers_shortest_ttl(start_server):
    srv = start_server(**{"maxmemory": "2mb", "maxmemory-policy": "volatile-ttl"})
    r = srv.client()
    assert _write(r, b"long", 0, 200, ex=100000) == []
    assert _write(r, b"short", 0, 20000, ex=1000) == []
    assert r.info("stats")["evicted_keys"] > 0
    survivors = sum(1 for v in r.mget([b"long:%d" % i for i in range(200)]) if v is not None)
    assert survivors >= 190, survivors
