"""``bench/idle_conns.py`` against a real gristmill serving the bench's own WSGI app: the
tool holds its connections open and idle, reports the memory per connection, and notices
a server that closed them (such a number would look cheap and mean nothing)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from _support import gristmill_cmd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import idle_conns  # noqa: E402
from run import Server  # noqa: E402

LINE = re.compile(r"^probe: (\d+\.\d) KiB per idle connection \([\d.]+ -> [\d.]+ MiB\)(.*)$")


def probe(*extra: str) -> Server:
    cmd = gristmill_cmd(["wsgi_app:application", "--port", "{port}", "--no-access-log", *extra])
    return Server("probe", "wsgi", cmd)


@pytest.mark.timeout(60)
def test_idle_connections_are_held_and_measured(tmp_path):
    m = LINE.match(idle_conns.measure(probe(), 200, tmp_path))
    assert m, "unexpected report"
    assert m.group(2) == ""  # every connection still answered after the measurement
    assert 0 < float(m.group(1)) < 1024


@pytest.mark.timeout(60)
def test_a_server_that_closes_idle_connections_is_flagged(tmp_path):
    """With a keep-alive timeout shorter than the measurement, gristmill closes the idle
    connections, and the report says the number is not comparable."""
    m = LINE.match(idle_conns.measure(probe("--keepalive-timeout", "0.2"), 50, tmp_path))
    assert m and "closed by the server: not comparable" in m.group(2)
