"""Large pipelines: redis-py pipelines and `redis-cli --pipe` mass insertion."""

import re

from resp_helpers import RawConn, encode_command


def test_redis_py_pipeline_10k_sets_then_10k_gets(server):
    r = server.client()
    n = 10000
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set(b"key:%d" % i, b"value:%d" % i)
    assert pipe.execute() == [True] * n
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.get(b"key:%d" % i)
    assert pipe.execute() == [b"value:%d" % i for i in range(n)]
    assert r.dbsize() == n


def test_pipeline_mixed_commands_with_errors_keep_order(server):
    r = server.client(protocol=2)
    pipe = r.pipeline(transaction=False)
    for i in range(3000):
        pipe.set(b"n%d" % i, b"abc" if i % 3 == 0 else b"%d" % i)
        pipe.incr(b"n%d" % i)
        pipe.get(b"n%d" % i)
    replies = pipe.execute(raise_on_error=False)
    assert len(replies) == 9000
    for i in range(3000):
        s, inc, get = replies[3 * i: 3 * i + 3]
        assert s is True
        if i % 3 == 0:
            assert str(inc) == "value is not an integer or out of range"
            assert get == b"abc"
        else:
            assert inc == i + 1
            assert get == b"%d" % (i + 1)


def test_raw_pipeline_in_one_write(server):
    """10,000 commands written in a single sendall; replies must come back in order."""
    n = 10000
    payload = b"".join(encode_command("SET", "k%d" % i, "v%d" % i) for i in range(n))
    payload += b"".join(encode_command("GET", "k%d" % i) for i in range(n))
    with RawConn(server.port, timeout=30) as c:
        c.send(payload)
        for i in range(n):
            assert c.read_raw() == b"+OK\r\n"
        for i in range(n):
            v = b"v%d" % i
            assert c.read_raw() == b"$%d\r\n%s\r\n" % (len(v), v)


def test_redis_cli_pipe_mass_insert(server):
    n = 20000
    stream = b"".join(encode_command("SET", "mass:%d" % i, "value-%d" % i) for i in range(n))
    out = server.cli("--pipe", input=stream, timeout=60)
    m = re.search(rb"errors: (\d+), replies: (\d+)", out)
    assert m, out
    assert (int(m.group(1)), int(m.group(2))) == (0, n), out
    r = server.client()
    assert r.dbsize() == n
    assert r.get(b"mass:0") == b"value-0"
    assert r.get(b"mass:19999") == b"value-19999"


def test_redis_cli_pipe_counts_errors(server):
    stream = b"".join(
        encode_command("SET", "c%d" % i, "x") + encode_command("INCR", "c%d" % i) for i in range(1000)
    )
    out = server.cli("--pipe", input=stream, timeout=60)
    m = re.search(rb"errors: (\d+), replies: (\d+)", out)
    assert m, out
    assert (int(m.group(1)), int(m.group(2))) == (1000, 2000), out
