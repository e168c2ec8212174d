"""Keyspace commands: DEL/UNLINK/EXISTS, expirations, TYPE, KEYS/SCAN, RENAME, FLUSH*."""

import time

import pytest

from resp_helpers import error_text

NOT_INT = "ERR value is not an integer or out of range"


def test_del_unlink(r):
    r.mset({b"a": b"1", b"b": b"2", b"c": b"3", b"d": b"4"})
    assert r.delete(b"a") == 1
    assert r.delete(b"a") == 0
    assert r.delete(b"b", b"c", b"missing", b"b") == 2
    assert r.unlink(b"d", b"missing") == 1
    assert r.unlink(b"d") == 0
    assert r.dbsize() == 0


def test_del_arity(raw):
    assert error_text(raw, "DEL") == "ERR wrong number of arguments for 'del' command"
    assert error_text(raw, "UNLINK") == "ERR wrong number of arguments for 'unlink' command"
    assert error_text(raw, "EXISTS") == "ERR wrong number of arguments for 'exists' command"


def test_exists_counts_duplicates(r):
    assert r.exists(b"a") == 0
    assert r.exists(b"a", b"a", b"a") == 0
    r.set(b"a", b"1")
    r.set(b"b", b"")
    assert r.exists(b"a") == 1
    assert r.exists(b"a", b"a", b"a") == 3
    assert r.exists(b"a", b"b", b"c", b"a") == 3


def test_type(r):
    r.set(b"s", b"v")
    assert r.type(b"s") == b"string"
    assert r.type(b"missing") == b"none"
    r.set(b"n", b"123")
    assert r.type(b"n") == b"string"


def test_type_wire_format(raw):
    raw.command_raw("SET", "s", "v")
    assert raw.command_raw("TYPE", "s") == b"+string\r\n"
    assert raw.command_raw("TYPE", "nokey") == b"+none\r\n"


# -------------------------------------------------------------- expirations


def test_ttl_pttl_persist(r):
    assert r.ttl(b"missing") == -2
    assert r.pttl(b"missing") == -2
    r.set(b"k", b"v")
    assert r.ttl(b"k") == -1
    assert r.pttl(b"k") == -1
    assert r.persist(b"k") is False
    assert r.persist(b"missing") is False
    assert r.expire(b"k", 100) is True
    assert 99 <= r.ttl(b"k") <= 100
    assert 99000 <= r.pttl(b"k") <= 100000
    assert r.persist(b"k") is True
    assert r.ttl(b"k") == -1
    assert r.get(b"k") == b"v"


def test_expire_family_basic(r):
    assert r.expire(b"missing", 10) is False
    assert r.pexpire(b"missing", 10000) is False
    assert r.expireat(b"missing", int(time.time()) + 10) is False
    assert r.pexpireat(b"missing", int(time.time() * 1000) + 10000) is False
    r.set(b"k", b"v")
    assert r.pexpire(b"k", 200000) is True
    assert 199000 <= r.pttl(b"k") <= 200000
    at = int(time.time()) + 500
    assert r.expireat(b"k", at) is True
    assert r.expiretime(b"k") == at
    assert r.pexpiretime(b"k") == at * 1000
    at_ms = int(time.time() * 1000) + 700000
    assert r.pexpireat(b"k", at_ms) is True
    assert r.pexpiretime(b"k") == at_ms
    assert r.get(b"k") == b"v"


def test_ttl_and_expiretime_round_to_nearest_second(r):
    r.set(b"k", b"v")
    sec = int(time.time()) + 700
    assert r.pexpireat(b"k", sec * 1000 + 623) is True
    assert r.expiretime(b"k") == sec + 1  # (ms + 500) / 1000
    assert r.pexpireat(b"k", sec * 1000 + 400) is True
    assert r.expiretime(b"k") == sec
    assert r.pexpire(b"k", 100600) is True
    assert r.ttl(b"k") == 101
    assert r.pexpire(b"k", 100400) is True
    assert r.ttl(b"k") == 100


def test_expiretime_pexpiretime_special_values(r):
    assert r.expiretime(b"missing") == -2
    assert r.pexpiretime(b"missing") == -2
    r.set(b"k", b"v")
    assert r.expiretime(b"k") == -1
    assert r.pexpiretime(b"k") == -1


def test_expire_non_positive_deletes(r):
    r.set(b"a", b"v")
    assert r.expire(b"a", -1) is True
    assert r.exists(b"a") == 0
    r.set(b"b", b"v")
    assert r.pexpire(b"b", 0) is True
    assert r.exists(b"b") == 0
    r.set(b"c", b"v")
    assert r.expireat(b"c", 1) is True
    assert r.get(b"c") is None
    r.set(b"d", b"v")
    assert r.pexpireat(b"d", int(time.time() * 1000) - 1000) is True
    assert r.ttl(b"d") == -2


def test_expire_nx_xx_gt_lt(r):
    r.set(b"k", b"v")  # no TTL: behaves like an infinite TTL for GT/LT
    assert r.expire(b"k", 100, xx=True) is False
    assert r.expire(b"k", 100, gt=True) is False
    assert r.ttl(b"k") == -1
    assert r.expire(b"k", 100, nx=True) is True
    assert r.expire(b"k", 200, nx=True) is False
    assert 99 <= r.ttl(b"k") <= 100
    assert r.expire(b"k", 50, gt=True) is False
    assert r.expire(b"k", 200, gt=True) is True
    assert 199 <= r.ttl(b"k") <= 200
    assert r.expire(b"k", 300, lt=True) is False
    assert r.expire(b"k", 150, lt=True) is True
    assert 149 <= r.ttl(b"k") <= 150
    assert r.expire(b"k", 120, xx=True) is True
    assert 119 <= r.ttl(b"k") <= 120
    r.set(b"n", b"v")
    assert r.expire(b"n", 100, lt=True) is True  # any TTL is less than "none"
    assert 99 <= r.ttl(b"n") <= 100
    # same options on the millisecond / absolute variants
    r.set(b"p", b"v")
    assert r.pexpire(b"p", 100000, xx=True) is False
    assert r.pexpire(b"p", 100000, nx=True) is True
    assert r.pexpire(b"p", 50000, gt=True) is False
    now = int(time.time())
    assert r.expireat(b"p", now + 1000, gt=True) is True
    assert r.expiretime(b"p") == now + 1000
    assert r.expireat(b"p", now + 2000, lt=True) is False
    now_ms = int(time.time() * 1000)
    assert r.pexpireat(b"p", now_ms + 500000, lt=True) is True
    assert r.pexpiretime(b"p") == now_ms + 500000


def test_expire_options_case_insensitive_and_repeatable(r):
    r.set(b"k", b"v")
    assert r.execute_command("EXPIRE", "k", "100", "nx") == 1
    assert r.execute_command("EXPIRE", "k", "200", "Gt") == 1
    assert r.execute_command("EXPIRE", "k", "300", "xx", "xx") == 1
    assert r.execute_command("EXPIRE", "k", "400", "xx", "gt") == 1
    assert r.execute_command("EXPIRE", "k", "10", "xx", "gt") == 0
    assert 399 <= r.ttl(b"k") <= 400


@pytest.mark.parametrize("cmd", ["EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT"])
def test_expire_option_errors(raw, cmd):
    raw.command_raw("SET", "k", "v")
    incompatible = "ERR NX and XX, GT or LT options at the same time are not compatible"
    assert error_text(raw, cmd, "k", "100", "NX", "XX") == incompatible
    assert error_text(raw, cmd, "k", "100", "NX", "GT") == incompatible
    assert error_text(raw, cmd, "k", "100", "lt", "nx") == incompatible
    assert error_text(raw, cmd, "k", "100", "GT", "LT") == "ERR GT and LT options at the same time are not compatible"
    assert error_text(raw, cmd, "k", "100", "FOO") == "ERR Unsupported option FOO"
    assert error_text(raw, cmd, "k", "100", "NX", "bar") == "ERR Unsupported option bar"
    assert error_text(raw, cmd, "k", "abc") == NOT_INT
    assert error_text(raw, cmd, "k", "1.5") == NOT_INT
    assert error_text(raw, cmd, "k") == f"ERR wrong number of arguments for '{cmd.lower()}' command"
    assert raw.command_raw("TTL", "k") == b":-1\r\n"


def test_expire_overflow_errors(raw):
    raw.command_raw("SET", "k", "v")
    assert error_text(raw, "EXPIRE", "k", "9223372036854775807") == "ERR invalid expire time in 'expire' command"
    assert error_text(raw, "EXPIRE", "k", "9223372036854770") == "ERR invalid expire time in 'expire' command"
    assert error_text(raw, "PEXPIRE", "k", "9223372036854775807") == "ERR invalid expire time in 'pexpire' command"
    assert (
        error_text(raw, "EXPIREAT", "k", "9223372036854775807") == "ERR invalid expire time in 'expireat' command"
    )
    assert raw.command_raw("TTL", "k") == b":-1\r\n"


def test_ttl_arity(raw):
    assert error_text(raw, "TTL") == "ERR wrong number of arguments for 'ttl' command"
    assert error_text(raw, "PTTL", "a", "b") == "ERR wrong number of arguments for 'pttl' command"
    assert error_text(raw, "PERSIST") == "ERR wrong number of arguments for 'persist' command"


# ----------------------------------------------------------------- KEYS


KEYS_FIXTURE = [
    b"hello", b"hallo", b"hxllo", b"hllo", b"heeeello", b"h*llo", b"h?llo", b"h[a]llo",
    b"a\\b", b"x", b"", b"ab", b"ac", b"ad", b"Hello",
]


@pytest.mark.parametrize(
    "pattern,expected",
    [
        (b"*", KEYS_FIXTURE),
        (b"h?llo", [b"hello", b"hallo", b"hxllo", b"h*llo", b"h?llo"]),
        (b"h*llo", [b"hello", b"hallo", b"hxllo", b"hllo", b"heeeello", b"h*llo", b"h?llo", b"h[a]llo"]),
        (b"h[ae]llo", [b"hello", b"hallo"]),
        (b"h[^e]llo", [b"hallo", b"hxllo", b"h*llo", b"h?llo"]),
        (b"h[a-b]llo", [b"hallo"]),
        (b"a[b-c]", [b"ab", b"ac"]),
        (b"a[c-b]", [b"ab", b"ac"]),  # reversed ranges are accepted
        (b"[a-c]", []),
        (b"h\\*llo", [b"h*llo"]),
        (b"h\\?llo", [b"h?llo"]),
        (b"h\\[a\\]llo", [b"h[a]llo"]),
        (b"a\\\\b", [b"a\\b"]),
        (b"\\x", [b"x"]),
        (b"?", [b"x"]),
        (b"", [b""]),
        (b"H*", [b"Hello"]),  # case-sensitive
        (b"*llo", [b"hello", b"hallo", b"hxllo", b"hllo", b"heeeello", b"h*llo", b"h?llo", b"h[a]llo", b"Hello"]),
        (b"nomatch*", []),
    ],
)
def test_keys_glob(r, pattern, expected):
    for k in KEYS_FIXTURE:
        r.set(k, b"1")
    assert sorted(r.keys(pattern)) == sorted(expected)


def test_keys_skips_expired(r):
    r.set(b"live", b"1")
    r.set(b"dead", b"1", px=50)
    time.sleep(0.15)
    assert r.keys(b"*") == [b"live"]


# ----------------------------------------------------------------- SCAN


def _scan_all(r, **kw):
    seen = []
    cursor = 0
    calls = 0
    while True:
        cursor, keys = r.scan(cursor=cursor, **kw)
        seen.extend(keys)
        calls += 1
        assert calls < 100000, "SCAN does not terminate"
        if cursor == 0:
            return seen, calls


def test_scan_iterates_everything(r):
    n = 5000
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set(b"key:%d" % i, b"v")
    pipe.execute()
    seen, calls = _scan_all(r, count=100)
    assert set(seen) == {b"key:%d" % i for i in range(n)}
    assert calls > 1  # a COUNT of 100 over 5000 keys cannot finish in one call
    # default COUNT also iterates everything
    seen, _ = _scan_all(r)
    assert set(seen) == {b"key:%d" % i for i in range(n)}


def test_scan_match_and_type(r):
    pipe = r.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(b"user:%d" % i, b"v")
        pipe.set(b"item:%d" % i, b"v")
    pipe.execute()
    seen, _ = _scan_all(r, match=b"user:1*", count=50)
    expected = {b"user:%d" % i for i in range(2000) if str(i).startswith("1")}
    assert set(seen) == expected
    seen, _ = _scan_all(r, match=b"item:*", count=1000, _type=b"string")
    assert set(seen) == {b"item:%d" % i for i in range(2000)}
    seen, _ = _scan_all(r, match=b"nothing*", count=100)
    assert seen == []


def test_scan_empty_db_and_wire_format(raw):
    assert raw.command_raw("SCAN", "0") == b"*2\r\n$1\r\n0\r\n*0\r\n"
    raw.command_raw("SET", "k", "v")
    assert raw.command_raw("SCAN", "0") == b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n"
    assert raw.command_raw("SCAN", "0", "MATCH", "k", "COUNT", "10", "TYPE", "string") == (
        b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n"
    )


def test_scan_errors(raw):
    assert error_text(raw, "SCAN", "abc") == "ERR invalid cursor"
    assert error_text(raw, "SCAN", "18446744073709551616") == "ERR invalid cursor"
    assert error_text(raw, "SCAN", "1x") == "ERR invalid cursor"
    assert error_text(raw, "SCAN", "0", "COUNT", "0") == "ERR syntax error"
    assert error_text(raw, "SCAN", "0", "COUNT", "abc") == NOT_INT
    assert error_text(raw, "SCAN", "0", "MATCH") == "ERR syntax error"
    assert error_text(raw, "SCAN", "0", "FOO", "bar") == "ERR syntax error"
    assert error_text(raw, "SCAN") == "ERR wrong number of arguments for 'scan' command"


# ------------------------------------------------------------ RANDOMKEY


def test_randomkey(r):
    assert r.randomkey() is None
    r.set(b"only", b"1")
    assert r.randomkey() == b"only"
    for i in range(20):
        r.set(b"k%d" % i, b"1")
    keys = set(r.keys(b"*"))
    for _ in range(20):
        assert r.randomkey() in keys


# --------------------------------------------------------------- RENAME


def test_rename(r):
    r.set(b"a", b"1", ex=100)
    assert r.rename(b"a", b"b") is True
    assert r.exists(b"a") == 0
    assert r.get(b"b") == b"1"
    assert 99 <= r.ttl(b"b") <= 100  # TTL moves with the key
    r.set(b"c", b"3", ex=500)
    r.set(b"d", b"4")
    assert r.rename(b"d", b"c") is True  # overwrites destination, drops its TTL
    assert r.get(b"c") == b"4"
    assert r.ttl(b"c") == -1
    assert r.rename(b"c", b"c") is True  # renaming to itself is OK
    assert r.get(b"c") == b"4"


def test_renamenx(r):
    r.set(b"a", b"1")
    r.set(b"b", b"2")
    assert r.renamenx(b"a", b"b") is False
    assert r.get(b"a") == b"1"
    assert r.renamenx(b"a", b"c") is True
    assert r.exists(b"a") == 0
    assert r.get(b"c") == b"1"
    assert r.renamenx(b"c", b"c") is False


def test_rename_errors(raw):
    assert error_text(raw, "RENAME", "nokey", "x") == "ERR no such key"
    assert error_text(raw, "RENAMENX", "nokey", "x") == "ERR no such key"
    assert error_text(raw, "RENAME", "a") == "ERR wrong number of arguments for 'rename' command"
    assert raw.command_raw("EXISTS", "x") == b":0\r\n"


# --------------------------------------------------------- DBSIZE/FLUSH


def test_dbsize_flushall_flushdb(r):
    assert r.dbsize() == 0
    r.mset({b"a%d" % i: b"1" for i in range(100)})
    assert r.dbsize() == 100
    assert r.flushdb() is True
    assert r.dbsize() == 0
    r.mset({b"a%d" % i: b"1" for i in range(100)})
    assert r.flushall() is True
    assert r.dbsize() == 0
    assert r.get(b"a1") is None
    r.set(b"x", b"1")
    assert r.flushall(asynchronous=True) is True
    assert r.dbsize() == 0
    r.set(b"x", b"1")
    assert r.execute_command("FLUSHALL", "SYNC") in (True, b"OK", "OK")
    assert r.execute_command("FLUSHDB", "ASYNC") in (True, b"OK", "OK")
    assert r.dbsize() == 0


def test_flush_errors(raw):
    assert error_text(raw, "FLUSHALL", "FOO") == "ERR syntax error"
    assert error_text(raw, "FLUSHDB", "FOO") == "ERR syntax error"
    assert error_text(raw, "DBSIZE", "x") == "ERR wrong number of arguments for 'dbsize' command"
