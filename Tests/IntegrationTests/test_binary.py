"""Binary-safe keys and values."""

from resp_helpers import RawConn

ALL_BYTES = bytes(range(256))


def test_all_256_byte_values_as_value(r):
    assert r.set(b"bin", ALL_BYTES) is True
    assert r.get(b"bin") == ALL_BYTES
    assert r.strlen(b"bin") == 256
    assert r.getrange(b"bin", 250, -1) == ALL_BYTES[250:]
    assert r.append(b"bin", ALL_BYTES) == 512
    assert r.get(b"bin") == ALL_BYTES * 2


def test_every_single_byte_as_key_and_value(r):
    pipe = r.pipeline(transaction=False)
    for b in range(256):
        pipe.set(bytes([b]), bytes([255 - b]) * 3)
    pipe.execute()
    assert r.dbsize() == 256
    pipe = r.pipeline(transaction=False)
    for b in range(256):
        pipe.get(bytes([b]))
    assert pipe.execute() == [bytes([255 - b]) * 3 for b in range(256)]
    assert set(r.keys(b"*")) == {bytes([b]) for b in range(256)}


def test_all_256_byte_values_as_key(r):
    assert r.set(ALL_BYTES, b"v") is True
    assert r.get(ALL_BYTES) == b"v"
    assert r.exists(ALL_BYTES) == 1
    assert r.keys(b"*") == [ALL_BYTES]
    assert r.rename(ALL_BYTES, ALL_BYTES[::-1]) is True
    assert r.get(ALL_BYTES[::-1]) == b"v"


def test_embedded_crlf_and_nul(r):
    key = b"key\r\nwith\x00nul\r\n"
    value = b"\r\n\r\n\x00\x00$3\r\nfoo\r\n*1\r\n"
    assert r.set(key, value) is True
    assert r.get(key) == value
    assert r.mget([key, b"missing"]) == [value, None]
    assert r.get(b"key") is None
    assert r.append(key, b"\x00") == len(value) + 1
    assert r.get(key) == value + b"\x00"
    assert r.keys(b"key\r\n*") == [key]


def test_empty_key_and_empty_value(r):
    assert r.set(b"", b"empty-key") is True
    assert r.get(b"") == b"empty-key"
    assert r.exists(b"") == 1
    assert r.set(b"e", b"") is True
    assert r.get(b"e") == b""
    assert r.strlen(b"e") == 0
    assert r.exists(b"e") == 1
    assert r.delete(b"") == 1
    assert r.get(b"") is None


def test_empty_value_on_the_wire(server):
    with RawConn(server.port) as c:
        assert c.command_raw("SET", "e", "") == b"+OK\r\n"
        assert c.command_raw("GET", "e") == b"$0\r\n\r\n"
        assert c.command_raw("GET", "missing") == b"$-1\r\n"


def test_one_mib_values(r):
    big = bytes(range(256)) * 4096  # 1 MiB
    assert len(big) == 1 << 20
    assert r.set(b"big", big) is True
    assert r.get(b"big") == big
    assert r.strlen(b"big") == 1 << 20
    assert r.getrange(b"big", -3, -1) == big[-3:]
    big2 = b"\r\n" * (1 << 19)
    assert r.set(b"big2", big2) is True
    assert r.get(b"big2") == big2
    assert r.mget([b"big", b"big2"]) == [big, big2]


def test_eight_mib_value(r):
    big = b"\x00\xff" * (4 << 20)
    assert r.set(b"huge", big) is True
    assert r.get(b"huge") == big
