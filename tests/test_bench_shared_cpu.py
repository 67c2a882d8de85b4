"""``bench/shared_cpu.py``: a server started "inside a cgroup" is the very process that
joined it, so everything the server forks is counted with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import shared_cpu  # noqa: E402
from run import Server  # noqa: E402


@pytest.mark.timeout(30)
def test_the_server_joins_the_cgroup_before_it_starts(tmp_path):
    """The wrapper writes its own pid to ``cgroup.procs``, then execs the server with its
    arguments intact: the pid the server sees is the one that joined."""
    (tmp_path / "cgroup.procs").write_text("")
    probe = "import os, sys; print(os.getpid()); print(sys.argv[1:])"
    srv = Server("probe", "wsgi", [sys.executable, "-c", probe, "a b", "{port}"])
    wrapped = shared_cpu.in_cgroup(srv, tmp_path)
    assert srv.cmd[0] == sys.executable  # the table's entry is left alone
    out = subprocess.run(
        [part.format(port=8000) for part in wrapped.cmd],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout.splitlines()
    assert out[1] == "['a b', '8000']"
    assert (tmp_path / "cgroup.procs").read_text().strip() == out[0]


def test_without_a_cgroup_the_command_is_unchanged():
    srv = Server("plain", "wsgi", ["gristmill", "app:app"])
    copy = shared_cpu.in_cgroup(srv, None)
    assert copy.cmd == srv.cmd and copy is not srv


def test_base_servers_come_from_the_base_venv(tmp_path):
    """``--base-venv``: the base of a pair runs the other build, the variant this one's,
    so that a pair may name the same server twice."""
    old, new = tmp_path / "old", tmp_path / "new"
    base, variant = shared_cpu.tables(new, old)
    assert base["gristmill-wsgi"].cmd[0] == str(old / "bin" / "gristmill")
    assert variant["gristmill-wsgi"].cmd[0] == str(new / "bin" / "gristmill")
    same, again = shared_cpu.tables(new, None)
    assert same is again


def test_the_reconnecting_load_closes_every_nth_request(tmp_path):
    """``--variant-reconnects N``: wrk runs a script whose every N-th request carries
    ``Connection: close``; the rest of the load is the `plain` row's."""
    load = shared_cpu.reconnecting(156)
    assert (load.path, load.conns) == (shared_cpu.PLAIN.path, shared_cpu.PLAIN.conns)
    assert "n % 156 == 0" in load.lua and '["Connection"] = "close"' in load.lua
    srv = Server("x", "wsgi", ["x"])
    srv.port = 8000
    cmd = shared_cpu.run.load_command(load, srv, 5, 1, Path(sys.executable), tmp_path)
    script = Path(cmd[cmd.index("-s") + 1])
    assert script.read_text() == load.lua


def test_the_connection_count_changes_only_the_connections(tmp_path):
    """``--connections N``: wrk opens N connections (``-c``) for the same requests; with
    ``--variant-reconnects`` as well, the variant reconnects over those N."""
    assert shared_cpu.plain(shared_cpu.PLAIN.conns) is shared_cpu.PLAIN
    load = shared_cpu.plain(8)
    assert (load.path, load.conns, load.lua) == (shared_cpu.PLAIN.path, 8, None)
    srv = Server("x", "wsgi", ["x"])
    srv.port = 8000
    cmd = shared_cpu.run.load_command(load, srv, 5, 1, Path(sys.executable), tmp_path)
    assert cmd[cmd.index("-c") + 1] == "8"
    both = shared_cpu.reconnecting(10, load)
    assert both.conns == 8 and "n % 10 == 0" in both.lua
