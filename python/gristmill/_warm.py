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
- **Making the supervisor's objects immortal** (:func:`immortalize`, CPython 3.12 and
  3.13). Freezing keeps the collector off the inherited objects, but every reference a
  worker takes to one (calling an inherited function, reading a setting) still writes
  its reference count, and so copies its page; so does the supervisor for each page it
  touches after a fork. Immortal objects (PEP 683) have counts CPython never writes:
  ~20 % fewer page faults per replacement, and pages that stay shared.
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
import io
import logging
import select
import selectors
import socket
import time
import types

from . import loader
from .settings import ExecutionMode, Settings

__all__ = ["ASGI_MODULES", "MSG_ASGI", "Warm", "freeze", "immortalize"]

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


#: Objects :func:`immortalize` leaves mortal: freeing them does something (closes a file,
#: a socket or an epoll descriptor, finishes a generator), which must still happen if the
#: supervisor drops them. Classes with a ``__del__`` are left mortal too. Matched on the
#: class's MRO (``_io._IOBase`` is what every file object derives from), never through
#: ``isinstance`` or an ABC, which could run an object's own code.
KEEP_MORTAL: frozenset[type] = frozenset(
    (
        io.IOBase.__mro__[1],  # _io._IOBase
        socket.socket.__mro__[1],  # _socket.socket
        selectors.BaseSelector,
        types.FrameType,
        types.GeneratorType,
        types.CoroutineType,
        types.AsyncGeneratorType,
        *(c for c in (getattr(select, n, None) for n in ("epoll", "devpoll", "kqueue")) if c),
    )
)


def _may_be_immortal(cls: type, verdicts: dict[type, bool]) -> bool:
    verdict = verdicts.get(cls)
    if verdict is None:
        try:
            mro = type.__dict__["__mro__"].__get__(cls)
            verdict = not any(c in KEEP_MORTAL or "__del__" in c.__dict__ for c in mro)
        except Exception:  # a class that cannot be looked at this way: leave it alone
            verdict = False
        verdicts[cls] = verdict
    return verdict


def immortalize() -> int:
    """Make the objects alive now immortal, then freeze them (:func:`freeze`); return how
    many were made immortal (0 on an interpreter without immortal objects, before 3.12).

    Only the supervisor calls it, and only in a process it owns (the ``gristmill``
    command, not :func:`gristmill.serve`): before it forks the first worker, and once
    more after importing the ASGI modules. The objects are never freed afterwards, which
    costs nothing for what lives as long as the supervisor (modules, classes, functions,
    settings, logging) and a bounded, one-time leak for the rest. It walks every object
    the collector tracks and what they refer to, so it takes a few tens of milliseconds
    for gristmill's own objects, once."""
    from . import _core

    if not _core.can_immortalize():
        freeze()
        return 0
    gc.unfreeze()  # gc.get_objects() leaves out the frozen objects
    gc.collect()
    tracked = gc.get_objects()
    found = {id(o): o for o in tracked}
    # What the tracked objects refer to that the collector does not track (strings,
    # numbers, code, tuples of constants), and what those refer to in turn.
    layer: list[object] = tracked
    while layer:
        new = {id(o): o for o in gc.get_referents(*layer) if id(o) not in found}
        found.update(new)
        layer = [o for o in new.values() if not gc.is_tracked(o)]
    del tracked, layer
    verdicts: dict[type, bool] = {}
    chosen = [o for o in found.values() if _may_be_immortal(type(o), verdicts)]
    del found
    count = _core.immortalize(chosen)
    del chosen
    gc.freeze()
    return count


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
        #: The supervisor owns its process (the ``gristmill`` command): :func:`immortalize`
        #: may leave objects unfreed. Otherwise (:func:`gristmill.serve`) only freeze.
        self.own_process = False

    def _settle(self) -> None:
        if self.own_process:
            started = time.perf_counter()
            count = immortalize()
            if count:
                log.debug(
                    "Made %d objects immortal before forking (%.1f ms)",
                    count,
                    (time.perf_counter() - started) * 1e3,
                )
        else:
            freeze()

    def before_first_fork(self) -> None:
        """Find the application's top-level module (:func:`loader.find_top_module`), then
        freeze (and make immortal) what the supervisor holds, before its first fork."""
        loader.find_top_module(self.settings.target)
        self._settle()

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
        self._settle()
        log.debug(
            "Imported %s for the next workers (%.1f ms)",
            ", ".join(imported) or "nothing",
            (time.perf_counter() - started) * 1e3,
        )
