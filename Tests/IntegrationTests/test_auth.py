"""requirepass / AUTH / HELLO AUTH for the default user."""

import pytest
import redis

from resp_helpers import RawConn, error_text

NOAUTH = "NOAUTH Authentication required."
WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."
HELLO_NOAUTH = (
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
    "HELLO AUTH <user> <pass> option can be used to authenticate the client and select "
    "the RESP protocol version at the same time"
)


@pytest.fixture
def secured(start_server):
    return start_server(requirepass="pw")


def test_commands_before_auth_are_rejected(secured):
    with RawConn(secured.port) as c:
        for cmd in [("PING",), ("GET", "k"), ("SET", "k", "v"), ("ECHO", "x"), ("DBSIZE",),
                    ("CLIENT", "ID"), ("CONFIG", "GET", "maxmemory"), ("SELECT", "0"), ("KEYS", "*")]:
            assert error_text(c, *cmd) == NOAUTH, cmd
        # command lookup and arity checks happen before the auth check
        assert error_text(c, "foo", "bar") == "ERR unknown command 'foo', with args beginning with: 'bar' "
        assert error_text(c, "GET") == "ERR wrong number of arguments for 'get' command"
        # HELLO without AUTH is refused with its own message
        assert error_text(c, "HELLO", "3") == HELLO_NOAUTH
        assert error_text(c, "HELLO") == HELLO_NOAUTH
        # the connection stays open and can still authenticate
        assert c.command_raw("AUTH", "pw") == b"+OK\r\n"
        assert c.command_raw("GET", "k") == b"$-1\r\n"


def test_inline_commands_before_auth(secured):
    with RawConn(secured.port) as c:
        c.send(b"PING\r\n")
        assert c.read_raw() == b"-NOAUTH Authentication required.\r\n"
        c.send(b"AUTH pw\r\nPING\r\n")
        assert c.read_raw() == b"+OK\r\n"
        assert c.read_raw() == b"+PONG\r\n"


def test_wrong_password(secured):
    with RawConn(secured.port) as c:
        assert error_text(c, "AUTH", "nope") == WRONGPASS
        assert error_text(c, "AUTH", "default", "nope") == WRONGPASS
        assert error_text(c, "AUTH", "someuser", "pw") == WRONGPASS
        assert error_text(c, "HELLO", "3", "AUTH", "default", "nope") == WRONGPASS
        assert error_text(c, "HELLO", "2", "AUTH", "other", "pw") == WRONGPASS
        assert error_text(c, "PING") == NOAUTH
        assert error_text(c, "AUTH") == "ERR wrong number of arguments for 'auth' command"
        assert error_text(c, "AUTH", "a", "b", "c") == "ERR syntax error"


def test_auth_password_and_default_user(secured):
    with RawConn(secured.port) as c:
        assert c.command_raw("AUTH", "pw") == b"+OK\r\n"
        assert c.command_raw("SET", "k", "v") == b"+OK\r\n"
    with RawConn(secured.port) as c:
        assert c.command_raw("AUTH", "default", "pw") == b"+OK\r\n"
        assert c.command_raw("GET", "k") == b"$1\r\nv\r\n"
        # a later failed AUTH does not log the connection out
        assert error_text(c, "AUTH", "bad") == WRONGPASS
        assert c.command_raw("GET", "k") == b"$1\r\nv\r\n"


def test_hello_auth(secured):
    with RawConn(secured.port) as c:
        reply = c.command_raw("HELLO", "3", "AUTH", "default", "pw", "SETNAME", "authed")
        assert reply.startswith(b"%7\r\n") and b"$5\r\nproto\r\n:3\r\n" in reply
        assert c.command_raw("CLIENT", "GETNAME") == b"$6\r\nauthed\r\n"
        assert c.command_raw("GET", "k") == b"_\r\n"
    with RawConn(secured.port) as c:
        assert c.command_raw("HELLO", "2", "AUTH", "default", "pw").startswith(b"*14\r\n")
        assert c.command_raw("PING") == b"+PONG\r\n"


def test_quit_before_auth(secured):
    with RawConn(secured.port) as c:
        c.send_command("QUIT")
        assert c.read_until_close(timeout=3) == (b"+OK\r\n", True)


def test_redis_py_with_password(secured):
    for proto in (2, 3):
        r = secured.client(password="pw", protocol=proto)
        assert r.ping() is True
        assert r.set(b"k", b"v") is True
        assert r.get(b"k") == b"v"
        r = secured.client(username="default", password="pw", protocol=proto)
        assert r.get(b"k") == b"v"
    with pytest.raises(redis.AuthenticationError):
        secured.client(password="wrong").ping()
    with pytest.raises(redis.AuthenticationError):
        secured.client().get(b"k")


def test_redis_cli_with_password(secured):
    out = secured.cli("-a", "pw", "--no-auth-warning", "SET", "clikey", "hello")
    assert out == b"OK\n"
    assert secured.cli("-a", "pw", "--no-auth-warning", "GET", "clikey") == b"hello\n"
    assert secured.cli("--user", "default", "--pass", "pw", "--no-auth-warning", "PING") == b"PONG\n"
    assert secured.cli("PING").strip() == b"NOAUTH Authentication required."


def test_auth_without_requirepass(server):
    with RawConn(server.port) as c:
        assert error_text(c, "AUTH", "whatever") == (
            "ERR AUTH <password> called without any password configured for the default user. "
            "Are you sure your configuration is correct?"
        )
        # the default user has no password: any password is accepted with a username
        assert c.command_raw("AUTH", "default", "whatever") == b"+OK\r\n"
        assert c.command_raw("HELLO", "3", "AUTH", "default", "x").startswith(b"%7\r\n")
    # which is what redis-py relies on when given a password for an open server
    assert server.client(password="whatever").ping() is True
