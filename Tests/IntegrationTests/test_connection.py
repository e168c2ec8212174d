"""Connection and server commands: PING/ECHO/HELLO/SELECT/CLIENT/COMMAND/INFO/CONFIG/TIME/QUIT,
and the generic unknown-command / wrong-arity errors."""

import time

import pytest

from resp_helpers import RawConn, call_raw, error_text

HELLO_KEYS = {b"server", b"version", b"proto", b"id", b"mode", b"role", b"modules"}


# ------------------------------------------------------------ PING / ECHO

# ringcache is a cache first: it evicts by default (allkeys-lru); Redis defaults to noeviction.
DEFAULT_POLICY = {"redis": "noeviction", "ringcache": "allkeys-lru"}


def test_ping_echo_redis_py(r):
    assert r.ping() is True
    assert call_raw(r, "PING", "hello") == b"hello"
    assert r.echo(b"hi there") == b"hi there"
    assert r.echo(b"") == b""


def test_ping_echo_wire(raw):
    assert raw.command_raw("PING") == b"+PONG\r\n"
    assert raw.command_raw("ping", "hello world") == b"$11\r\nhello world\r\n"
    assert raw.command_raw("ECHO", "x\r\ny") == b"$4\r\nx\r\ny\r\n"
    assert error_text(raw, "PING", "a", "b") == "ERR wrong number of arguments for 'ping' command"
    assert error_text(raw, "ECHO") == "ERR wrong number of arguments for 'echo' command"
    assert error_text(raw, "ECHO", "a", "b") == "ERR wrong number of arguments for 'echo' command"


# ------------------------------------------------------------------ HELLO


def _map_from_flat(items):
    return dict(zip(items[0::2], items[1::2]))


def test_hello3_wire_format_and_fields(raw):
    raw.send_command("HELLO", "3")
    reply = raw.read_raw()
    assert reply.startswith(b"%7\r\n"), reply
    assert b"$5\r\nproto\r\n:3\r\n" in reply
    assert b"$4\r\nmode\r\n$10\r\nstandalone\r\n" in reply
    assert b"$4\r\nrole\r\n$6\r\nmaster\r\n" in reply
    assert reply.endswith(b"$7\r\nmodules\r\n*0\r\n")
    # subsequent replies use RESP3 encodings
    assert raw.command_raw("GET", "missing") == b"_\r\n"
    assert raw.command_raw("PING") == b"+PONG\r\n"
    assert raw.command_raw("CONFIG", "GET", "maxmemory") == b"%1\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n"
    # and back to RESP2
    assert raw.command_raw("HELLO", "2").startswith(b"*14\r\n")
    assert raw.command_raw("GET", "missing") == b"$-1\r\n"
    assert raw.command_raw("CONFIG", "GET", "maxmemory") == b"*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n"


def test_hello3_via_redis_py(server):
    r3 = server.client(protocol=3)
    info = call_raw(r3, "HELLO", "3")
    assert isinstance(info, dict)
    assert set(info) == HELLO_KEYS
    assert info[b"proto"] == 3
    assert isinstance(info[b"server"], bytes) and info[b"server"]
    assert isinstance(info[b"version"], bytes) and info[b"version"]
    assert info[b"id"] == r3.client_id()
    assert info[b"mode"] == b"standalone"
    assert info[b"role"] == b"master"
    assert info[b"modules"] == []


def test_hello2_is_flat_array(server):
    r2 = server.client(protocol=2)
    reply = call_raw(r2, "HELLO", "2")
    assert isinstance(reply, list) and len(reply) == 14
    m = _map_from_flat(reply)
    assert set(m) == HELLO_KEYS
    assert m[b"proto"] == 2
    # HELLO without arguments keeps the current protocol
    assert _map_from_flat(call_raw(r2, "HELLO"))[b"proto"] == 2


def test_hello_setname_and_auth_without_requirepass(server):
    with RawConn(server.port) as c:
        reply = c.command_raw("HELLO", "3", "AUTH", "default", "anything", "SETNAME", "myconn")
        assert reply.startswith(b"%7\r\n"), reply
        assert c.command_raw("CLIENT", "GETNAME") == b"$6\r\nmyconn\r\n"
        reply = c.command_raw("HELLO", "2", "SETNAME", "other")
        assert reply.startswith(b"*14\r\n")
        assert c.command_raw("CLIENT", "GETNAME") == b"$5\r\nother\r\n"


def test_hello_errors(raw):
    assert error_text(raw, "HELLO", "4") == "NOPROTO unsupported protocol version"
    assert error_text(raw, "HELLO", "1") == "NOPROTO unsupported protocol version"
    assert error_text(raw, "HELLO", "abc") == "ERR Protocol version is not an integer or out of range"
    assert error_text(raw, "HELLO", "3", "FOO") == "ERR Syntax error in HELLO option 'FOO'"
    assert error_text(raw, "HELLO", "3", "AUTH", "default") == "ERR Syntax error in HELLO option 'AUTH'"
    assert (
        error_text(raw, "HELLO", "3", "SETNAME", "a b")
        == "ERR Client names cannot contain spaces, newlines or special characters."
    )
    # failed HELLO leaves the protocol unchanged
    assert raw.command_raw("GET", "missing") == b"$-1\r\n"


# ----------------------------------------------------------------- SELECT


def test_select(raw):
    assert raw.command_raw("SELECT", "0") == b"+OK\r\n"
    assert error_text(raw, "SELECT", "1") == "ERR DB index is out of range"
    assert error_text(raw, "SELECT", "-1") == "ERR DB index is out of range"
    assert error_text(raw, "SELECT", "abc") == "ERR value is not an integer or out of range"
    assert error_text(raw, "SELECT") == "ERR wrong number of arguments for 'select' command"
    assert raw.command_raw("PING") == b"+PONG\r\n"


def test_redis_py_db0_works(server):
    r = server.client(db=0)
    assert r.set(b"k", b"v") is True
    assert r.get(b"k") == b"v"


# ----------------------------------------------------------------- CLIENT


def test_client_setname_getname(r):
    assert call_raw(r, "CLIENT", "GETNAME") is None
    assert r.client_setname("my-conn_1") is True
    assert call_raw(r, "CLIENT", "GETNAME") == b"my-conn_1"
    assert call_raw(r, "CLIENT", "SETNAME", "") == b"OK"
    assert call_raw(r, "CLIENT", "GETNAME") is None


def test_client_setname_errors(raw):
    bad_name = "ERR Client names cannot contain spaces, newlines or special characters."
    assert error_text(raw, "CLIENT", "SETNAME", "a b") == bad_name
    assert error_text(raw, "CLIENT", "SETNAME", "a\nb") == bad_name
    assert error_text(raw, "CLIENT", "SETNAME", "h\xe9llo") == bad_name
    assert error_text(raw, "CLIENT", "SETNAME") == "ERR wrong number of arguments for 'client|setname' command"
    assert error_text(raw, "CLIENT", "FOO") == "ERR unknown subcommand 'FOO'. Try CLIENT HELP."
    assert raw.command_raw("CLIENT", "GETNAME") == b"$-1\r\n"


def test_client_id_list_info(server):
    a = server.client(protocol=2)
    b = server.client(protocol=3)
    a.client_setname("alpha")
    b.client_setname("beta")
    id_a, id_b = a.client_id(), b.client_id()
    assert isinstance(id_a, int) and isinstance(id_b, int)
    assert id_a != id_b
    assert a.client_id() == id_a  # stable for the connection
    listing = a.client_list()
    by_id = {int(c["id"]): c for c in listing}
    assert id_a in by_id and id_b in by_id
    assert by_id[id_a]["name"] == "alpha"
    assert by_id[id_b]["name"] == "beta"
    assert by_id[id_a]["addr"].startswith("127.0.0.1:")
    info = b.client_info()
    assert int(info["id"]) == id_b
    assert info["name"] == "beta"
    assert info["addr"].startswith("127.0.0.1:")


def test_client_list_shows_each_connections_last_command_and_idle_time(server):
    watcher = server.client(protocol=2)
    worker = server.client(protocol=2)
    worker_id = worker.client_id()
    worker.set("k", "v")
    worker.get("k")
    entry = {int(c["id"]): c for c in watcher.client_list()}[worker_id]
    assert entry["cmd"] == "get"
    assert entry["idle"] == "0"
    worker.ping()
    time.sleep(1.1)
    entry = {int(c["id"]): c for c in watcher.client_list()}[worker_id]
    assert entry["cmd"] == "ping"
    assert int(entry["idle"]) >= 1


def test_client_list_and_info_wire_format(raw):
    raw.command_raw("CLIENT", "SETNAME", "rawconn")
    my_id = int(raw.command_raw("CLIENT", "ID")[1:-2])
    listing = raw.command_raw("CLIENT", "LIST")
    assert listing.startswith(b"$")
    body = listing.split(b"\r\n", 1)[1][:-2]
    lines = body.decode().split("\n")
    assert lines[-1] == ""  # every line is newline-terminated
    mine = [ln for ln in lines if ln.startswith(f"id={my_id} ")]
    assert len(mine) == 1
    fields = dict(f.split("=", 1) for f in mine[0].split(" "))
    assert fields["name"] == "rawconn"
    assert fields["addr"].startswith("127.0.0.1:")
    info = raw.command_raw("CLIENT", "INFO")
    body = info.split(b"\r\n", 1)[1][:-2].decode()
    assert body.startswith(f"id={my_id} ") and body.endswith("\n") and body.count("\n") == 1
    assert " name=rawconn " in body


# ---------------------------------------------------------------- COMMAND


def test_command_count_info_docs(server):
    r = server.client(protocol=2)
    assert r.command_count() > 0
    info = call_raw(r, "COMMAND", "INFO", "get")
    assert isinstance(info, list) and len(info) == 1 and info[0]
    entry = info[0]
    assert entry[0] == b"get"
    assert entry[1] == 2  # arity
    assert entry[3:6] == [1, 1, 1]  # first key, last key, step
    info = call_raw(r, "COMMAND", "INFO", "set", "nosuchcommand")
    assert info[0][0] == b"set" and info[0][1] == -3
    assert info[1] is None
    docs = call_raw(r, "COMMAND", "DOCS", "get")
    assert docs and docs[0] == b"get" and docs[1]
    r3 = server.client(protocol=3)
    docs3 = call_raw(r3, "COMMAND", "DOCS", "get")
    assert isinstance(docs3, dict) and docs3.get(b"get")


# ------------------------------------------------------------------- INFO


def test_info_sections(server):
    r = server.client()
    r.set(b"a", b"1")
    r.set(b"b", b"2", ex=100)
    info = r.info()
    for field in ["redis_version", "tcp_port", "uptime_in_seconds", "process_id"]:
        assert field in info, field  # server
    assert info["tcp_port"] == server.port
    assert info["connected_clients"] >= 1  # clients
    for field in ["used_memory", "maxmemory", "maxmemory_policy"]:
        assert field in info, field  # memory
    assert info["maxmemory_policy"] == DEFAULT_POLICY[server.target]
    for field in ["total_connections_received", "total_commands_processed", "expired_keys",
                  "evicted_keys", "keyspace_hits", "keyspace_misses"]:
        assert field in info, field  # stats
    assert info["db0"]["keys"] == 2  # keyspace
    assert info["db0"]["expires"] == 1


def test_info_single_sections(server):
    r = server.client()
    assert "redis_version" in r.info("server")
    assert "used_memory" not in r.info("server")
    assert "connected_clients" in r.info("clients")
    assert "used_memory" in r.info("memory")
    assert "total_commands_processed" in r.info("stats")
    assert r.info("keyspace") == {}
    r.set(b"k", b"v")
    assert r.info("keyspace")["db0"]["keys"] == 1
    # stats count hits and misses
    before = r.info("stats")
    r.get(b"k")
    r.get(b"missing")
    after = r.info("stats")
    assert after["keyspace_hits"] == before["keyspace_hits"] + 1
    assert after["keyspace_misses"] == before["keyspace_misses"] + 1


def test_info_wire_format(raw):
    reply = raw.command_raw("INFO", "server")
    assert reply.startswith(b"$")
    body = reply.split(b"\r\n", 1)[1]
    assert body.startswith(b"# Server\r\n")
    assert b"redis_version:" in body
    raw.command_raw("HELLO", "3")
    reply = raw.command_raw("INFO", "server")
    assert reply.startswith(b"=")  # RESP3 verbatim string
    assert reply.split(b"\r\n", 1)[1].startswith(b"txt:# Server\r\n")


# ----------------------------------------------------------------- CONFIG


def test_config_get_set_maxmemory(server):
    r = server.client()
    assert r.config_get("maxmemory") == {"maxmemory": "0"}
    assert r.config_set("maxmemory", "10mb") is True
    assert r.config_get("maxmemory") == {"maxmemory": "10485760"}
    assert r.info("memory")["maxmemory"] == 10485760
    for value, expected in [("1k", "1000"), ("1kb", "1024"), ("1KB", "1024"), ("1m", "1000000"),
                            ("1gb", "1073741824"), ("12345", "12345"), ("0", "0")]:
        assert r.config_set("maxmemory", value) is True
        assert r.config_get("maxmemory") == {"maxmemory": expected}, value


def test_config_get_set_maxmemory_policy(server):
    r = server.client()
    assert r.config_get("maxmemory-policy") == {"maxmemory-policy": DEFAULT_POLICY[server.target]}
    for policy in ["allkeys-lru", "volatile-lru", "volatile-ttl", "noeviction"]:
        assert r.config_set("maxmemory-policy", policy) is True
        assert r.config_get("maxmemory-policy") == {"maxmemory-policy": policy}


def test_config_reflects_command_line(start_server):
    srv = start_server(**{"maxmemory": "2mb", "maxmemory-policy": "allkeys-lru"})
    r = srv.client()
    assert r.config_get("maxmemory") == {"maxmemory": "2097152"}
    assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}


def test_config_errors(raw):
    assert (
        error_text(raw, "CONFIG", "SET", "maxmemory", "lots")
        == "ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value"
    )
    assert (
        error_text(raw, "CONFIG", "SET", "maxmemory", "-1")
        == "ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value"
    )
    assert error_text(raw, "CONFIG", "SET", "maxmemory-policy", "bogus").startswith(
        "ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - "
        "argument(s) must be one of the following: "
    )
    assert (
        error_text(raw, "CONFIG", "SET", "no-such-option", "1")
        == "ERR Unknown option or number of arguments for CONFIG SET - 'no-such-option'"
    )
    assert raw.command_raw("CONFIG", "GET", "no-such-option") == b"*0\r\n"
    assert error_text(raw, "CONFIG", "GET") == "ERR wrong number of arguments for 'config|get' command"
    assert error_text(raw, "CONFIG", "SET", "maxmemory") == "ERR wrong number of arguments for 'config|set' command"
    assert error_text(raw, "CONFIG", "FOO") == "ERR unknown subcommand 'FOO'. Try CONFIG HELP."
    assert raw.command_raw("CONFIG", "GET", "maxmemory") == b"*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n"


# ------------------------------------------------------------- TIME / QUIT


def test_time(server):
    r = server.client()
    before = time.time()
    secs, micros = r.time()
    after = time.time()
    assert 0 <= micros < 1_000_000
    assert before - 1 <= secs + micros / 1e6 <= after + 1
    reply = call_raw(r, "TIME")
    assert len(reply) == 2 and all(isinstance(x, bytes) and x.isdigit() for x in reply)


def test_quit_closes_connection(server):
    with RawConn(server.port) as c:
        c.send(b"*1\r\n$4\r\nQUIT\r\n*1\r\n$4\r\nPING\r\n")
        data, closed = c.read_until_close(timeout=3)
        assert data == b"+OK\r\n"
        assert closed
    assert server.client().ping() is True


# ---------------------------------------------- unknown command / arity


def test_unknown_command_error_text(raw):
    assert error_text(raw, "foo", "a", "b") == "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
    assert error_text(raw, "foo") == "ERR unknown command 'foo', with args beginning with: "
    assert error_text(raw, "FOO", "x") == "ERR unknown command 'FOO', with args beginning with: 'x' "
    assert error_text(raw, "") == "ERR unknown command '', with args beginning with: "
    # CR/LF inside the echoed arguments are replaced by spaces
    assert error_text(raw, "foo", "a\r\nb", "c") == "ERR unknown command 'foo', with args beginning with: 'a  b' 'c' "


def test_unknown_command_error_truncation(raw):
    # the command name is cut at 128 bytes; the argument list stops once it reaches 128 bytes
    assert error_text(raw, "x" * 200, "a" * 200, "b") == (
        "ERR unknown command '" + "x" * 128 + "', with args beginning with: '" + "a" * 128 + "' "
    )
    assert error_text(raw, "foo", "a" * 100, "b" * 100, "c") == (
        "ERR unknown command 'foo', with args beginning with: '" + "a" * 100 + "' '" + "b" * 25 + "' "
    )


def test_unknown_command_keeps_connection_usable(server):
    r = server.client()
    import redis as redis_mod

    with pytest.raises(redis_mod.ResponseError, match=r"^unknown command 'NOPE', with args beginning with: 'x' $"):
        r.execute_command("NOPE", "x")
    assert r.ping() is True


@pytest.mark.parametrize(
    "cmd",
    [
        ("GET",), ("get", "a", "b"), ("Get",), ("SET", "k"), ("STRLEN",), ("APPEND", "k"), ("GETDEL",),
        ("INCRBYFLOAT", "k"), ("DECR",), ("TYPE",), ("KEYS",), ("RENAMENX", "a"), ("PEXPIRE", "k"),
        ("EXPIRETIME",), ("RANDOMKEY", "x"), ("TIME", "x"), ("GETSET", "k"), ("PSETEX", "k", "1"),
        ("MSETNX",), ("GETRANGE", "k", "1"), ("SETRANGE", "k", "1"),
    ],
)
def test_wrong_arity_error_text(raw, cmd):
    assert error_text(raw, *cmd) == f"ERR wrong number of arguments for '{cmd[0].lower()}' command"
