"""Cheap worker replacements (``python/gristmill/_warm.py``), in every execution mode.

Without ``--preload``, the supervisor prepares the fork (its objects frozen out of the
garbage collector; at the first replacement of an ASGI application's worker, the ASGI
modules imported) but never imports the application: each worker imports it itself,
which is how SIGHUP and ``--reload`` pick up new code. And it still forks with a single
thread.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import httpx
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


#: What an immortal object's reference count reads as (CPython 3.12 and 3.13, 64-bit).
IMMORTAL = 2**32 - 1
#: The interpreters on which the supervisor makes its objects immortal.
HAS_IMMORTAL = (3, 12) <= sys.version_info[:2] <= (3, 13)


@pytest.mark.timeout(40)
@pytest.mark.parametrize("mode", list(MODES))
def test_workers_inherit_immortal_objects(mode, tmp_path):
    """The supervisor makes its objects immortal before it forks (CPython 3.12+), so a
    worker's references to them write nothing (and copy no page); the application the
    worker imported itself stays mortal. The same after a replacement (and, for ASGI,
    after the supervisor imported the ASGI modules)."""
    app, env = MODES[mode]
    srv = Server(
        [*app, "--log-level", "debug", "--no-access-log"],
        env={**env, "WARM_APP_IMPORTS": str(tmp_path / "imports")},
    )
    try:
        srv.wait_ready()
        for generation in range(2):
            inherited, own = (int(n) for n in httpx.get(srv.url + "/refcounts").text.split())
            assert own < 1000, (generation, own)
            if HAS_IMMORTAL:
                assert inherited == IMMORTAL, (generation, inherited, srv.output())
            else:
                assert inherited < 1000, (generation, inherited)
            old = srv.worker_pids()
            srv.send_signal(signal.SIGHUP)
            wait_until(
                lambda old=old: srv.worker_pids() and not srv.worker_pids() & old,
                20,
                message="replacement",
            )
        made = [line for line in srv.lines() if "objects immortal before forking" in line]
        # Before the first fork, and after the ASGI modules were imported for the next.
        assert len(made) == (0 if not HAS_IMMORTAL else 2 if mode.startswith("asgi") else 1), (
            srv.output()
        )
        assert proc_status(srv.pid, "Threads") == 1
    finally:
        srv.stop()


IMMORTALIZE_PROBE = """
import gc, io, json, socket, sys, weakref
from gristmill import _warm

class Plain:
    pass

class Finalized:
    def __del__(self):
        pass

def function():
    pass

plain, finalized, sock, buf = Plain(), Finalized(), socket.socket(), io.BytesIO()
gone = weakref.ref(plain)
count = _warm.immortalize()
big = lambda o: sys.getrefcount(o) >= 2**31
result = {
    "count": count,
    "function": big(function),
    "plain": big(plain),
    "finalized": big(finalized),
    "socket": big(sock),
    "bytesio": big(buf),
    "frozen": gc.get_freeze_count() > 0,
}
del plain
gc.collect()
result["plain_kept"] = gone() is not None
sock.close()
print(json.dumps(result))
"""


@pytest.mark.timeout(30)
def test_immortalize_leaves_resources_and_finalizers_mortal():
    """What ``_warm.immortalize`` makes immortal: plain objects and functions (kept even
    once dropped); never an object whose freeing does something (a socket, a file, a
    class with ``__del__``)."""
    out = subprocess.run(
        [sys.executable, "-c", IMMORTALIZE_PROBE],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    r = json.loads(out.stdout)
    assert r["frozen"]
    assert not r["finalized"] and not r["socket"] and not r["bytesio"], r
    if HAS_IMMORTAL:
        assert r["count"] > 1000 and r["function"] and r["plain"] and r["plain_kept"], r
    else:
        assert r["count"] == 0 and not r["function"] and not r["plain_kept"], r
