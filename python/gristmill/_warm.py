"""What the supervisor prepares before it forks, so that a new worker starts cheaply.

Every worker is a fork of the supervisor. Whatever the supervisor already holds, a new
worker gets for nothing; whatever it lacks, every new worker does again. That matters
when workers are replaced often: ``--max-requests 10000`` under 50,000 requests a second
starts a worker every 0.2 s, on the same CPUs that serve. Two things the worker would
otherwise redo each time are done here, once (measured with ``bench/apps`` on a busy
2-core machine, CPU time of a new worker from fork to ready):

- **Freezing the supervisor's objects** (:func:`freeze`: ``gc.collect()`` then
  ``gc.freeze()``). A worker collects garbage once before it serves (:func:`freeze`
  again, after loading the application); without this, that collection walks every
  object inherited from the supervisor (settings, logging, gristmill's modules) and
  writes to each, so each of their pages is copied: ~8 ms of the WSGI worker's ~15 ms.
- **Importing the interface's modules** (:data:`ASGI_MODULES`). An ASGI worker imports
  ``asyncio`` (with ``ssl`` and ``concurrent.futures``) and ``gristmill._asgi``: ~25 ms,
  most of an ASGI worker's start. A WSGI worker imports nothing of ours that the
  supervisor does not already have.

With both, a WSGI worker starts in ~6 ms of CPU and an ASGI one in ~9 ms (plus the
application's own import), against ~4 ms for a fork of a ``--preload`` supervisor.

Only gristmill's own modules and the standard library (and uvloop, when the worker would
use it) are imported here; none starts a thread or a runtime at import, so the
supervisor still forks with one thread (``tests/test_recycle_cost.py`` checks it). The
application is never imported here (unless ``--preload``): each worker imports it fresh,
which is how SIGHUP and ``--reload`` pick up new code.

The modules are imported at the first replacement of a worker (recycling, SIGHUP,
``--reload``, a respawn, SIGTTIN), not at start-up: a server that never replaces its
workers keeps the supervisor small. Whether the application is ASGI comes from
``--interface``, or, with ``auto``, from the first worker that says so (it writes
:data:`MSG_ASGI` on its pipe before it reports ready).
"""

from __future__ import annotations

import gc
import importlib
import logging
import time

from .settings import ExecutionMode, Settings

__all__ = ["ASGI_MODULES", "MSG_ASGI", "Warm", "freeze"]

log = logging.getLogger("gristmill.error")

#: What an ASGI worker imports before it serves, in every execution mode.
ASGI_MODULES = ("asyncio", "gristmill._asgi")
#: The byte a worker writes on its pipe when it serves ASGI.
MSG_ASGI = b"A"


def freeze() -> None:
    """Collect the garbage, then exempt every object alive now from later collections
    (``gc.freeze``), here and in the workers forked from now on.

    The supervisor calls it before forking; a worker calls it again once it has loaded
    the application (and run lifespan startup), so that collections while serving scan
    only what requests create, which measured ~5 % more requests per second on a small
    ASGI route (``bench/NOTES.md``)."""
    gc.collect()
    gc.freeze()


def modules_for(settings: Settings, interface: str) -> tuple[str, ...]:
    """The modules a worker serving ``interface`` (``wsgi`` or ``asgi``) with
    ``settings`` imports, beyond those the supervisor always has. uvloop is listed
    when the worker would run on it (a loop thread, ``--loop auto`` or ``uvloop``)."""
    if interface != "asgi":
        return ()
    mode = settings.replace(interface="asgi").execution_mode
    if mode is ExecutionMode.ASGI_LOOP_THREAD and settings.loop in ("auto", "uvloop"):
        return (*ASGI_MODULES, "uvloop")
    return ASGI_MODULES


class Warm:
    """The supervisor's warm state: the application's interface once known, and whether
    its modules are imported yet."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.interface = settings.interface if settings.interface != "auto" else ""
        self._warmed = ""  # the interface whose modules were imported

    def learned(self, interface: str) -> None:
        """A worker said which interface it serves (``auto``)."""
        if not self.interface:
            self.interface = interface

    def before_replacement(self) -> None:
        """Import what the next workers need, once the interface is known, then freeze
        it. Nothing to do after the first time (the usual case)."""
        if not self.interface or self._warmed == self.interface:
            return
        self._warmed = self.interface
        wanted = modules_for(self.settings, self.interface)
        if not wanted:
            return
        started = time.perf_counter()
        imported = []
        for name in wanted:
            try:
                importlib.import_module(name)
            except ImportError:
                continue  # uvloop not installed: the worker falls back (or says why)
            imported.append(name)
        freeze()
        log.debug(
            "Imported %s for the next workers (%.1f ms)",
            ", ".join(imported) or "nothing",
            (time.perf_counter() - started) * 1e3,
        )
