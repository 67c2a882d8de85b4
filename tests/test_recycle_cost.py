"""Cheap worker replacements (``python/gristmill/_warm.py``), in every execution mode.

Without ``--preload``, the supervisor prepares the fork (its objects frozen out of the
garbage collector; at the first replacement of an ASGI application's worker, the ASGI
modules imported) but never imports the application: each worker imports it itself,
which is how SIGHUP and ``--reload`` pick up new code. And it still forks with a single
thread.
"""

from __future__ import annotations

import signal

import pytest

from _support import PidLoad, Server, every_mode, proc_status, wait_until

MODES = every_mode("warm_app:application", "warm_app:app")
WARMED = "for the next workers"


@pytest.mark.timeout(40)
@pytest.mark.parametrize("mode", list(MODES))
def test_each_worker_imports_the_app_the_supervisor_does_not(mode, tmp_path):
    imports = tmp_path / "imports"
    app, env = MODES[mode]
    srv = Server(
        [*app, "--no-access-log", "--log-level", "debug", "--max-requests", "30"],
        env={**env, "WARM_APP_IMPORTS": str(imports)},
    )
    try:
        srv.wait_ready()
        with PidLoad(srv.url + "/", clients=4, timeout=10) as load:
            # The first worker and at least three replacements served.
            wait_until(lambda: len(load.served) >= 4, 30, message="three replacements")
        assert not load.failures, (load.failures[:5], srv.output())
        pids = [int(p) for p in imports.read_text().split()]
        assert srv.pid not in pids, srv.output()
        assert len(pids) == len(set(pids)), pids  # once per worker
        # Every worker that answered (with the pid it read at import) imported it itself.
        assert set(load.served) <= set(pids), (load.served, pids)

        warmed = [line for line in srv.lines() if WARMED in line]
        if mode.startswith("asgi"):
            # Learned from the first worker (--interface auto), imported once.
            assert len(warmed) == 1, srv.output()
            assert "Imported asyncio, gristmill._asgi" in warmed[0], warmed
            assert ("uvloop" in warmed[0]) == (mode == "asgi-loop-thread"), warmed
        else:
            assert not warmed, srv.output()
        assert proc_status(srv.pid, "Threads") == 1, "the supervisor must fork with a single thread"
    finally:
        srv.stop()


@pytest.mark.timeout(30)
def test_explicit_asgi_interface_warms_at_the_first_replacement(tmp_path):
    """``--interface asgi``: known from the start, imported at the first replacement
    (not at start-up: a server that never replaces a worker keeps its supervisor small)."""
    imports = tmp_path / "imports"
    srv = Server(
        ["warm_app:app", "--interface", "asgi", "--log-level", "debug", "--no-access-log"],
        env={"WARM_APP_IMPORTS": str(imports)},
    )
    try:
        srv.wait_ready()
        assert not [line for line in srv.lines() if WARMED in line], srv.output()
        old = srv.worker_pids()
        srv.send_signal(signal.SIGHUP)
        wait_until(lambda: srv.worker_pids() and not srv.worker_pids() & old, 20, message="reload")
        warmed = [line for line in srv.lines() if WARMED in line]
        assert len(warmed) == 1 and "asyncio, gristmill._asgi" in warmed[0], srv.output()
        assert srv.pid not in [int(p) for p in imports.read_text().split()]
        assert proc_status(srv.pid, "Threads") == 1
    finally:
        srv.stop()
