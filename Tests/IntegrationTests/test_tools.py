"""Redis's own tools against the server: redis-benchmark and redis-cli's scripting modes."""

import re
import shutil
import subprocess

import pytest


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-benchmark is not installed")
def test_redis_benchmark_runs_its_string_tests(server):
    result = subprocess.run(
        ["redis-benchmark", "-p", str(server.port), "-q", "-n", "2000", "-c", "10", "-P", "8",
         "-d", "64", "-r", "1000", "-t", "ping,set,get,incr,mset"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.replace("\r", "\n").splitlines() if "requests per second" in line]
    names = {line.split(":")[0].strip() for line in lines}
    assert {"SET", "GET", "INCR"} <= names, result.stdout
    assert any(name.startswith("MSET") for name in names), result.stdout
    for line in lines:
        assert float(re.search(r"([\d.]+) requests per second", line).group(1)) > 0
    assert server.client().dbsize() > 0


def test_redis_cli_eval_style_batch_and_raw_output(server):
    # A here-document of commands, as people pipe them into redis-cli.
    out = server.cli("--no-raw", input=b"SET a 1\nINCRBY a 41\nGET a\nDEL a\nGET a\n")
    assert out.split(b"\n")[:5] == [b"OK", b"(integer) 42", b'"42"', b"(integer) 1", b"(nil)"]
    assert server.cli("--raw", "MGET", "x", "y") == b"\n\n"
    assert server.cli("--scan", "--pattern", "*") == b""
