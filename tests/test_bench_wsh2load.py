"""``bench/wsh2load.py``, the WebSocket-over-HTTP/2 load generator of the ``ws-h2`` bench
rows, against a real gristmill serving the bench's own ASGI app: its ``--check`` gate, a
short load run (h2c and TLS, with and without permessage-deflate) whose every echo is
checked, and a server that echoes wrongly, which must show as errors, not as speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WSH2LOAD = BENCH / "wsh2load.py"

# Every test here runs once per ASGI mode (one thread, loop thread).
pytestmark = pytest.mark.usefixtures("asgi_mode")


def wsh2load(url: str, *args: str) -> tuple[int, dict]:
    res = subprocess.run(
        [sys.executable, str(WSH2LOAD), *args, url], capture_output=True, text=True, timeout=30
    )
    return res.returncode, json.loads(res.stdout.strip().splitlines()[-1])


def bench_app(server, *args: str):
    return server("asgi_app:app", "--interface", "asgi", *args, cwd=BENCH / "apps")


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
def test_check_and_load_h2c(server, deflate):
    srv = bench_app(server)
    url = f"ws://127.0.0.1:{srv.port}/ws"
    extra = ["--deflate"] if deflate else []
    code, out = wsh2load(url, "--check", "--connections", "2", *extra)
    assert code == 0 and out["ok"], out
    assert out["messages"] == 8 and out["streams"] == 4
    code, out = wsh2load(
        url, "--duration", "0.5", "--connections", "2", "--streams", "3", "--window", "2", *extra
    )
    assert code == 0, out
    assert out["errors"] == 0 and out["streams"] == 6, out
    assert out["messages"] > 6 and out["msgs_per_s"] > 0
    assert 0 < out["p50_ms"] <= out["p99_ms"]
    if deflate:
        assert out["deflate"] is True


def test_load_over_tls(server, certs):
    srv = bench_app(server, *certs.server_args())
    code, out = wsh2load(
        f"wss://127.0.0.1:{srv.port}/ws", "--duration", "0.3", "--connections", "1", "--deflate"
    )
    assert code == 0 and out["errors"] == 0 and out["messages"] > 0, out
    assert out["deflate"] is True


def test_wrong_echoes_are_errors(server):
    srv = server("ws_bad_echo_app:app", "--interface", "asgi")
    url = f"ws://127.0.0.1:{srv.port}/ws"
    code, out = wsh2load(url, "--duration", "0.3", "--connections", "1", "--streams", "2")
    assert code == 1
    assert out["errors"] > 0 and "did not match" in out["error"], out
    # Only the right echoes count as messages.
    assert out["messages"] > 0
    code, out = wsh2load(url, "--check", "--connections", "1")
    assert code == 1 and not out["ok"], out


def test_no_rfc_8441_is_refused(server):
    srv = bench_app(server, "--no-ws")
    code, out = wsh2load(f"ws://127.0.0.1:{srv.port}/ws", "--check", "--connections", "1")
    assert code == 1 and "SETTINGS_ENABLE_CONNECT_PROTOCOL" in out["error"], out
