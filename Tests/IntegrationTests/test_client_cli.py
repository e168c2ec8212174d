"""`ringcache cli` and `ringcache bench`, which talk through RingcacheClient. Against either
target: the client speaks plain Redis too (a node without cluster support is one node that
owns every key), so `--target redis` checks the client's wire behaviour against redis-server."""

import os
import pty
import select
import subprocess
import time

from conftest import _ringcache_bin


def run_cli(server, *args, input=None):
    return subprocess.run([_ringcache_bin(), "cli", "--seeds", f"127.0.0.1:{server.port}", *args],
                          input=input, capture_output=True, timeout=60)


def test_one_command_prints_what_redis_cli_prints(server):
    server.client().set(b"bin", b"\x00\xff\n\"q\"")
    server.client().set(b"bin2", b"\x00\xff\n\"q\"")
    # Each command twice, on twin keys: once through ringcache cli, once through redis-cli.
    for command in (["SET", "k", "hello world"], ["GET", "k"], ["INCR", "n"], ["INCRBY", "n", "41"],
                    ["MSET", "a", "1", "b", "2"], ["MGET", "a", "missing", "b"], ["GET", "bin"], ["GET", "nothing"],
                    ["DEL", "a", "b", "c"], ["EXISTS", "k"]):
        twin = [command[0]] + [arg + "2" if arg.isalpha() else arg for arg in command[1:]]
        if command[0] == "SET":
            twin = ["SET", "k2", "hello world"]
        ours = run_cli(server, *command)
        theirs = server.cli("--no-raw", *twin)
        assert ours.returncode == 0, ours.stderr
        assert ours.stdout == theirs, command


def test_an_error_reply_is_printed_and_sets_the_exit_code(server):
    server.client().set("text", "abc")
    result = run_cli(server, "INCR", "text")
    assert result.returncode == 1
    assert result.stdout.startswith(b"(error) ERR value is not an integer or out of range")


def test_commands_piped_in_run_in_order(server):
    result = run_cli(server, input=b'SET a 1\nINCRBY a 41\nGET a\nSET "unbalanced\n:nodes\nDEL a\nGET a\n')
    lines = result.stdout.split(b"\n")
    assert lines[:4] == [b"OK", b"(integer) 42", b'"42"', b"Invalid argument(s)"]
    assert b"breaker:closed" in lines[4]
    assert lines[5:7] == [b"(integer) 1", b"(nil)"]


def test_the_prompt_edits_lines_and_recalls_history(server, tmp_path):
    env = dict(os.environ, HOME=str(tmp_path))
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(_ringcache_bin(), [_ringcache_bin(), "cli", "--seeds", f"127.0.0.1:{server.port}"], env)
    output = b""

    def read_until(needle, timeout=20):
        nonlocal output
        deadline = time.monotonic() + timeout
        while needle not in output:
            assert time.monotonic() < deadline, output
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    output += os.read(fd, 4096)
                except OSError:
                    break

    def answered(needle):
        # The answer, then the next prompt: the prompt is drawn once the terminal is in raw
        # mode again, so keys sent after it reach the line editor, not the kernel's.
        read_until(needle)
        read_until(b"\r\n" + f"127.0.0.1:{server.port}> ".encode())

    try:
        read_until(b"> ")
        os.write(fd, b"set greeting hullo\r")
        answered(b"OK")
        # Left arrow twice, backspace, retype: "hullo" becomes "hello" before the line is sent.
        output = b""
        os.write(fd, b"set greeting hullo\x1b[D\x1b[D\x1b[D\x7fe\r")
        answered(b"OK")
        output = b""
        os.write(fd, b"get greeting\r")
        answered(b'"hello"')
        output = b""
        os.write(fd, b"\x1b[A\r")  # up arrow: the last command again
        answered(b'"hello"')
        os.write(fd, b"quit\r")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)
    assert server.client().get("greeting") == b"hello"
    history = (tmp_path / ".ringcache_cli_history").read_text().splitlines()
    assert "get greeting" in history and "set greeting hullo" in history


def test_bench_loads_the_server_through_the_client(server):
    result = subprocess.run([_ringcache_bin(), "bench", "--seeds", f"127.0.0.1:{server.port}", "--requests", "3000",
                             "--clients", "8", "--keyspace", "500", "--operation", "set"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    fields = dict(pair.split("=") for pair in result.stdout.strip().splitlines()[-1].split())
    assert int(fields["calls"]) >= 3000 and int(fields["ops_per_sec"]) > 0
    assert server.client().dbsize() == 500
