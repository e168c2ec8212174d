"""String commands: SET and friends, counters, ranges.

Value tests run through redis-py over RESP2 and RESP3 (fixture `r`); exact error
texts are checked on a raw socket (fixture `raw`) so the full "ERR ..." prefix
is asserted, exactly as Redis 7.0 sends it.
"""

import time

import pytest
import redis

from resp_helpers import call_raw, error_text

NOT_INT = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"
SYNTAX = "ERR syntax error"


# --------------------------------------------------------------------- SET


def test_set_get_basic(r):
    assert r.get(b"missing") is None
    assert r.set(b"k", b"v") is True
    assert r.get(b"k") == b"v"
    assert r.set(b"k", b"v2") is True
    assert r.get(b"k") == b"v2"
    assert r.ttl(b"k") == -1


def test_set_integer_like_values_roundtrip(r):
    for v in [b"0", b"-1", b"12345678901234567890", b"007", b"1.50", b" 1"]:
        r.set(b"k", v)
        assert r.get(b"k") == v


def test_set_ex_px_exat_pxat(r):
    assert r.set(b"a", b"1", ex=100) is True
    assert 99 <= r.ttl(b"a") <= 100
    assert r.set(b"b", b"1", px=100000) is True
    assert 99000 <= r.pttl(b"b") <= 100000
    now = int(time.time())
    assert r.set(b"c", b"1", exat=now + 100) is True
    assert 98 <= r.ttl(b"c") <= 100
    assert r.expiretime(b"c") == now + 100
    now_ms = int(time.time() * 1000)
    assert r.set(b"d", b"1", pxat=now_ms + 100000) is True
    assert 98000 <= r.pttl(b"d") <= 100000
    assert r.pexpiretime(b"d") == now_ms + 100000


def test_set_exat_in_the_past_deletes(r):
    r.set(b"k", b"old")
    assert r.execute_command("SET", "k", "v", "EXAT", "1") in (True, b"OK", "OK")
    assert r.get(b"k") is None
    assert r.exists(b"k") == 0
    assert r.execute_command("SET", "k2", "v", "PXAT", "1") in (True, b"OK", "OK")
    assert r.exists(b"k2") == 0


def test_set_nx_xx(r):
    assert r.set(b"k", b"1", xx=True) is None
    assert r.get(b"k") is None
    assert r.set(b"k", b"1", nx=True) is True
    assert r.set(b"k", b"2", nx=True) is None
    assert r.get(b"k") == b"1"
    assert r.set(b"k", b"3", xx=True) is True
    assert r.get(b"k") == b"3"


def test_set_clears_ttl_unless_keepttl(r):
    r.set(b"k", b"v", ex=100)
    r.set(b"k", b"v2", keepttl=True)
    assert 99 <= r.ttl(b"k") <= 100
    assert r.get(b"k") == b"v2"
    r.set(b"k", b"v3")
    assert r.ttl(b"k") == -1
    # KEEPTTL on a missing key just sets it without a TTL
    r.set(b"n", b"v", keepttl=True)
    assert r.ttl(b"n") == -1


def test_set_get_option(r):
    assert r.set(b"k", b"v1", get=True) is None
    assert r.get(b"k") == b"v1"
    assert r.set(b"k", b"v2", get=True) == b"v1"
    assert r.get(b"k") == b"v2"
    # NX + GET (allowed since 7.0): returns the old value and does not overwrite
    assert r.set(b"k", b"v3", nx=True, get=True) == b"v2"
    assert r.get(b"k") == b"v2"
    assert r.set(b"new", b"x", nx=True, get=True) is None
    assert r.get(b"new") == b"x"
    # XX + GET on a missing key: nil and nothing is set
    assert r.set(b"nokey", b"x", xx=True, get=True) is None
    assert r.exists(b"nokey") == 0
    # GET + EX: value returned, TTL set
    assert r.set(b"k", b"v4", ex=50, get=True) == b"v2"
    assert 49 <= r.ttl(b"k") <= 50


def test_set_option_case_insensitive(r):
    assert r.execute_command("set", "k", "v", "ex", "100", "nx") in (True, b"OK", "OK")
    assert 99 <= r.ttl(b"k") <= 100
    assert r.execute_command("SeT", "k", "w", "Xx", "KeepTtl") in (True, b"OK", "OK")
    assert r.get(b"k") == b"w"
    assert 99 <= r.ttl(b"k") <= 100


@pytest.mark.parametrize(
    "args,expected",
    [
        (("EX", "0"), "ERR invalid expire time in 'set' command"),
        (("EX", "-1"), "ERR invalid expire time in 'set' command"),
        (("PX", "0"), "ERR invalid expire time in 'set' command"),
        (("PX", "-100"), "ERR invalid expire time in 'set' command"),
        (("EXAT", "0"), "ERR invalid expire time in 'set' command"),
        (("PXAT", "0"), "ERR invalid expire time in 'set' command"),
        (("EX", "9999999999999999"), "ERR invalid expire time in 'set' command"),
        (("PX", "9223372036854775807"), "ERR invalid expire time in 'set' command"),
        (("EX", "abc"), NOT_INT),
        (("EX", "1.5"), NOT_INT),
        (("EX", "10", "PX", "10"), SYNTAX),
        (("EX", "10", "EXAT", "99999999999"), SYNTAX),
        (("NX", "XX"), SYNTAX),
        (("KEEPTTL", "EX", "10"), SYNTAX),
        (("PX", "10", "KEEPTTL"), SYNTAX),
        (("EX",), SYNTAX),
        (("FOO",), SYNTAX),
        (("GET", "GET", "NX", "BAR"), SYNTAX),
    ],
)
def test_set_errors(raw, args, expected):
    assert error_text(raw, "SET", "k", "v", *args) == expected
    # a failed SET must not create the key
    assert raw.command_raw("EXISTS", "k") == b":0\r\n"


def test_set_wrong_arity(raw):
    assert error_text(raw, "SET", "k") == "ERR wrong number of arguments for 'set' command"
    assert error_text(raw, "SET") == "ERR wrong number of arguments for 'set' command"


# ------------------------------------------------------ SETNX/SETEX/PSETEX


def test_setnx(r):
    assert r.setnx(b"k", b"1") is True
    assert r.setnx(b"k", b"2") is False
    assert r.get(b"k") == b"1"


def test_setex_psetex(r):
    assert r.setex(b"k", 100, b"v") is True
    assert r.get(b"k") == b"v"
    assert 99 <= r.ttl(b"k") <= 100
    assert r.psetex(b"p", 100000, b"v") is True
    assert 99000 <= r.pttl(b"p") <= 100000


def test_setex_psetex_errors(raw):
    assert error_text(raw, "SETEX", "k", "0", "v") == "ERR invalid expire time in 'setex' command"
    assert error_text(raw, "SETEX", "k", "-5", "v") == "ERR invalid expire time in 'setex' command"
    assert error_text(raw, "SETEX", "k", "abc", "v") == NOT_INT
    assert error_text(raw, "PSETEX", "k", "0", "v") == "ERR invalid expire time in 'psetex' command"
    assert error_text(raw, "PSETEX", "k", "-1", "v") == "ERR invalid expire time in 'psetex' command"
    assert error_text(raw, "SETEX", "k", "10") == "ERR wrong number of arguments for 'setex' command"
    assert error_text(raw, "SETNX", "k") == "ERR wrong number of arguments for 'setnx' command"
    assert raw.command_raw("EXISTS", "k") == b":0\r\n"


# ----------------------------------------------------- GETSET/GETDEL/GETEX


def test_getset(r):
    assert r.getset(b"k", b"1") is None
    assert r.get(b"k") == b"1"
    r.expire(b"k", 100)
    assert r.getset(b"k", b"2") == b"1"
    assert r.get(b"k") == b"2"
    assert r.ttl(b"k") == -1  # GETSET discards the TTL


def test_getdel(r):
    assert r.getdel(b"k") is None
    r.set(b"k", b"v")
    assert r.getdel(b"k") == b"v"
    assert r.exists(b"k") == 0
    assert r.getdel(b"k") is None


def test_getex(r):
    assert r.getex(b"missing") is None
    assert r.getex(b"missing", ex=10) is None
    assert r.exists(b"missing") == 0
    r.set(b"k", b"v", ex=100)
    assert r.getex(b"k") == b"v"
    assert 99 <= r.ttl(b"k") <= 100  # no option: TTL untouched
    assert r.getex(b"k", ex=500) == b"v"
    assert 499 <= r.ttl(b"k") <= 500
    assert r.getex(b"k", px=300000) == b"v"
    assert 299000 <= r.pttl(b"k") <= 300000
    now = int(time.time())
    assert r.getex(b"k", exat=now + 1000) == b"v"
    assert r.expiretime(b"k") == now + 1000
    now_ms = int(time.time() * 1000)
    assert r.getex(b"k", pxat=now_ms + 2000000) == b"v"
    assert r.pexpiretime(b"k") == now_ms + 2000000
    assert r.getex(b"k", persist=True) == b"v"
    assert r.ttl(b"k") == -1
    assert r.get(b"k") == b"v"


def test_getex_errors(raw):
    raw.command_raw("SET", "k", "v")
    assert error_text(raw, "GETEX", "k", "EX", "0") == "ERR invalid expire time in 'getex' command"
    assert error_text(raw, "GETEX", "k", "PX", "-1") == "ERR invalid expire time in 'getex' command"
    assert error_text(raw, "GETEX", "k", "EX", "abc") == NOT_INT
    assert error_text(raw, "GETEX", "k", "PERSIST", "EX", "10") == SYNTAX
    assert error_text(raw, "GETEX", "k", "EX", "10", "PX", "100") == SYNTAX
    assert error_text(raw, "GETEX", "k", "EX") == SYNTAX
    assert error_text(raw, "GETEX", "k", "BOGUS") == SYNTAX
    assert error_text(raw, "GETEX") == "ERR wrong number of arguments for 'getex' command"
    assert raw.command_raw("TTL", "k") == b":-1\r\n"


# ------------------------------------------------------------ MGET/MSET


def test_mget_mset(r):
    assert r.mset({b"a": b"1", b"b": b"2", b"c": b""}) is True
    assert r.mget([b"a", b"missing", b"b", b"c", b"a"]) == [b"1", None, b"2", b"", b"1"]
    # MSET overwrites and clears TTLs
    r.expire(b"a", 100)
    r.mset({b"a": b"x"})
    assert r.get(b"a") == b"x"
    assert r.ttl(b"a") == -1
    # later duplicate wins
    r.execute_command("MSET", "d", "1", "d", "2")
    assert r.get(b"d") == b"2"


def test_msetnx(r):
    assert r.msetnx({b"a": b"1", b"b": b"2"}) is True
    assert r.msetnx({b"b": b"x", b"c": b"3"}) is False
    assert r.mget([b"a", b"b", b"c"]) == [b"1", b"2", None]  # all or nothing


def test_mget_mset_errors(raw):
    assert error_text(raw, "MSET", "a") == "ERR wrong number of arguments for 'mset' command"
    assert error_text(raw, "MSET", "a", "1", "b") == "ERR wrong number of arguments for 'mset' command"
    assert error_text(raw, "MSETNX", "a", "1", "b") == "ERR wrong number of arguments for 'msetnx' command"
    assert error_text(raw, "MGET") == "ERR wrong number of arguments for 'mget' command"
    assert raw.command_raw("EXISTS", "a") == b":0\r\n"


# ------------------------------------------------------------- counters


def test_incr_decr(r):
    assert r.incr(b"n") == 1
    assert r.incr(b"n") == 2
    assert r.get(b"n") == b"2"
    assert r.decr(b"n") == 1
    assert r.incrby(b"n", 10) == 11
    assert r.decrby(b"n", 20) == -9
    assert r.incrby(b"n", -1) == -10
    assert r.get(b"n") == b"-10"
    assert r.decr(b"fresh") == -1
    assert r.incrby(b"big", 9223372036854775806) == 9223372036854775806
    assert r.incr(b"big") == 9223372036854775807


def test_incr_keeps_ttl(r):
    r.set(b"n", b"5", ex=100)
    assert r.incr(b"n") == 6
    assert 99 <= r.ttl(b"n") <= 100


def test_incr_errors(raw):
    raw.command_raw("SET", "s", "abc")
    assert error_text(raw, "INCR", "s") == NOT_INT
    for bad in [" 1", "1 ", "01", "+5", "-0", "1.0", "", "9223372036854775808", "0x10"]:
        raw.command_raw("SET", "b", bad)
        assert error_text(raw, "INCR", "b") == NOT_INT, bad
    raw.command_raw("SET", "n", "5")
    assert error_text(raw, "INCRBY", "n", "abc") == NOT_INT
    assert error_text(raw, "INCRBY", "n", "+5") == NOT_INT
    assert error_text(raw, "INCRBY", "n", "1.5") == NOT_INT
    assert error_text(raw, "DECRBY", "n", "9223372036854775808") == NOT_INT
    assert raw.command_raw("GET", "n") == b"$1\r\n5\r\n"
    assert error_text(raw, "INCR") == "ERR wrong number of arguments for 'incr' command"
    assert error_text(raw, "INCRBY", "n") == "ERR wrong number of arguments for 'incrby' command"


def test_incr_overflow(raw):
    raw.command_raw("SET", "max", "9223372036854775807")
    assert error_text(raw, "INCR", "max") == "ERR increment or decrement would overflow"
    assert error_text(raw, "INCRBY", "max", "1") == "ERR increment or decrement would overflow"
    assert error_text(raw, "DECRBY", "max", "-1") == "ERR increment or decrement would overflow"
    raw.command_raw("SET", "min", "-9223372036854775808")
    assert error_text(raw, "DECR", "min") == "ERR increment or decrement would overflow"
    assert error_text(raw, "INCRBY", "min", "-1") == "ERR increment or decrement would overflow"
    assert error_text(raw, "DECRBY", "min", "1") == "ERR increment or decrement would overflow"
    # DECRBY by LLONG_MIN cannot be negated: a dedicated message
    raw.command_raw("SET", "z", "0")
    assert error_text(raw, "DECRBY", "z", "-9223372036854775808") == "ERR decrement would overflow"
    # values are unchanged after the errors
    assert raw.command_raw("GET", "max") == b"$19\r\n9223372036854775807\r\n"
    assert raw.command_raw("GET", "min") == b"$20\r\n-9223372036854775808\r\n"
    assert raw.command_raw("INCRBY", "min", "9223372036854775807") == b":-1\r\n"


@pytest.mark.parametrize(
    "start,incr,expected",
    [
        (b"10.5", b"0.1", b"10.6"),
        (b"0.1", b"0.2", b"0.3"),
        (None, b"5", b"5"),
        (None, b"1.5", b"1.5"),
        (b"3", b"1.5", b"4.5"),
        (b"3", b"-4.5", b"-1.5"),
        (b"5.0e3", b"200", b"5200"),
        (b"1", b"1.0e1", b"11"),
        (b"10", b"-10", b"0"),
        (None, b"1e20", b"100000000000000000000"),
        (b"2.5", b"2.5", b"5"),
        (b"-1", b"0.25", b"-0.75"),
        (b"1", b"1.23456789012345678", b"2.23456789012345678"),
        (b"1", b".5", b"1.5"),
        (b"1", b"5.", b"6"),
        (b"1", b"+1", b"2"),
        (b"+1.5", b"1", b"2.5"),
    ],
)
def test_incrbyfloat_formatting(r, start, incr, expected):
    if start is not None:
        r.set(b"f", start)
    reply = call_raw(r, "INCRBYFLOAT", b"f", incr)
    assert reply == expected
    assert r.get(b"f") == expected


def test_incrbyfloat_reply_is_bulk_string_on_the_wire(raw):
    raw.command_raw("SET", "f", "10.5")
    assert raw.command_raw("INCRBYFLOAT", "f", "0.1") == b"$4\r\n10.6\r\n"
    raw.command_raw("HELLO", "3")
    assert raw.command_raw("INCRBYFLOAT", "f", "0.4") == b"$2\r\n11\r\n"


def test_incrbyfloat_keeps_ttl(r):
    r.set(b"f", b"1", ex=100)
    assert r.incrbyfloat(b"f", 1.5) == 2.5
    assert 99 <= r.ttl(b"f") <= 100


def test_incrbyfloat_errors(raw):
    raw.command_raw("SET", "f", "1")
    for bad in ["abc", "", " 1", "1 ", "1.5x", "1e", "nan"]:
        assert error_text(raw, "INCRBYFLOAT", "f", bad) == NOT_FLOAT, bad
    raw.command_raw("SET", "s", "hello")
    assert error_text(raw, "INCRBYFLOAT", "s", "1") == NOT_FLOAT
    assert error_text(raw, "INCRBYFLOAT", "f", "inf") == "ERR increment would produce NaN or Infinity"
    assert error_text(raw, "INCRBYFLOAT", "f", "-inf") == "ERR increment would produce NaN or Infinity"
    assert raw.command_raw("GET", "f") == b"$1\r\n1\r\n"
    assert error_text(raw, "INCRBYFLOAT", "f") == "ERR wrong number of arguments for 'incrbyfloat' command"


# ------------------------------------------------------- APPEND / STRLEN


def test_append_strlen(r):
    assert r.strlen(b"k") == 0
    assert r.append(b"k", b"Hello") == 5
    assert r.append(b"k", b" World") == 11
    assert r.get(b"k") == b"Hello World"
    assert r.strlen(b"k") == 11
    assert r.append(b"k", b"") == 11
    assert r.append(b"e", b"") == 0
    assert r.exists(b"e") == 1  # APPEND of "" still creates the key
    r.set(b"n", b"10")
    assert r.append(b"n", b"5") == 3
    assert r.incr(b"n") == 106


def test_append_keeps_ttl(r):
    r.set(b"k", b"a", ex=100)
    r.append(b"k", b"b")
    assert 99 <= r.ttl(b"k") <= 100


# ------------------------------------------------------------ GETRANGE


@pytest.mark.parametrize(
    "start,end,expected",
    [
        (0, 4, b"Hello"),
        (6, 10, b"World"),
        (0, -1, b"Hello World"),
        (-5, -1, b"World"),
        (-3, -2, b"rl"),
        (-100, 3, b"Hell"),
        (0, 100, b"Hello World"),
        (5, 2, b""),
        (-1, -5, b""),
        (100, 200, b""),
        (10, 10, b"d"),
        (0, 0, b"H"),
        (-1, -1, b"d"),
        (-11, -11, b"H"),
        (-12, -12, b"H"),
    ],
)
def test_getrange(r, start, end, expected):
    r.set(b"k", b"Hello World")
    assert r.getrange(b"k", start, end) == expected


def test_getrange_missing_and_errors(raw):
    assert raw.command_raw("GETRANGE", "nokey", "0", "-1") == b"$0\r\n\r\n"
    raw.command_raw("SET", "k", "abc")
    assert error_text(raw, "GETRANGE", "k", "a", "1") == NOT_INT
    assert error_text(raw, "GETRANGE", "k", "0") == "ERR wrong number of arguments for 'getrange' command"


# ------------------------------------------------------------ SETRANGE


def test_setrange(r):
    r.set(b"k", b"Hello World")
    assert r.setrange(b"k", 6, b"Redis") == 11
    assert r.get(b"k") == b"Hello Redis"
    assert r.setrange(b"k", 6, b"Ringcache!") == 16
    assert r.get(b"k") == b"Hello Ringcache!"
    # padding with zero bytes, on a missing key and past the end
    assert r.setrange(b"p", 5, b"x") == 6
    assert r.get(b"p") == b"\x00\x00\x00\x00\x00x"
    assert r.setrange(b"k", 20, b"!") == 21
    assert r.get(b"k") == b"Hello Ringcache!\x00\x00\x00\x00!"
    # empty value: no-op, returns current length; does not create missing keys
    assert r.setrange(b"k", 100, b"") == 21
    assert r.setrange(b"none", 3, b"") == 0
    assert r.exists(b"none") == 0


def test_setrange_errors(raw):
    raw.command_raw("SET", "k", "abc")
    assert error_text(raw, "SETRANGE", "k", "-1", "x") == "ERR offset is out of range"
    assert error_text(raw, "SETRANGE", "k", "abc", "x") == NOT_INT
    assert (
        error_text(raw, "SETRANGE", "k", "536870912", "x")
        == "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
    )
    assert error_text(raw, "SETRANGE", "k", "0") == "ERR wrong number of arguments for 'setrange' command"
    assert raw.command_raw("GET", "k") == b"$3\r\nabc\r\n"


# ------------------------------------------------------- redis-py errors


def test_errors_surface_as_response_errors_in_redis_py(r):
    r.set(b"s", b"abc")
    with pytest.raises(redis.ResponseError, match="^value is not an integer or out of range$"):
        r.incr(b"s")
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        r.execute_command("SET", "k", "v", "NX", "XX")
    with pytest.raises(redis.ResponseError, match="^value is not a valid float$"):
        r.incrbyfloat(b"s", 1)


def test_setrange_with_a_huge_offset_is_an_error_not_a_crash(server):
    r = server.client()
    with pytest.raises(redis.exceptions.ResponseError, match="string exceeds maximum allowed size"):
        r.setrange(b"k", 9223372036854775807, b"x")
    assert r.ping() is True


def test_client_input_in_error_replies_cannot_split_them(server):
    r = server.client()
    r.set(b"k", b"v")
    with pytest.raises(redis.exceptions.ResponseError, match="Unsupported option"):
        r.execute_command("EXPIRE", "k", "10", "a\r\n:1")
    assert r.ping() is True and r.get(b"k") == b"v"
