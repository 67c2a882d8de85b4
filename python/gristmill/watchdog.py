"""``--worker-timeout``: kill a worker that stopped turning, with its stacks in the log.

Each serving worker sends a heartbeat on the pipe it reports readiness on
(``src/heartbeat.rs``): ``H<in-flight>\\n`` while its I/O runtime turns, the GIL can be
taken and (ASGI) its event loop runs callbacks, ``S<in-flight> <what>:<seconds>,...\\n``
while one of them has stopped. The supervisor feeds what it reads from the pipe to the
worker's :class:`Pulse` (:meth:`Pulse.feed` hands the one-byte messages back) and calls
:func:`check` with its other timers.

A ready worker without a heartbeat for ``worker_timeout`` seconds is hung: one error line
names it, what stopped turning (as the worker last said) and how many requests in flight
it loses; it gets SIGABRT, on which :func:`enable_faulthandler` (called in every worker)
dumps the Python stack of every thread to the error log; if it still runs
:data:`KILL_GRACE` seconds later, SIGKILL. Its exit is then handled as any worker's death:
a new worker replaces it.

Only ready workers with an open pipe are watched: the application's import and lifespan
startup are not timed (a worker still starting is not ready), nor is a worker that is
draining (the supervisor stopped watching it when it told it to stop; the graceful
timeout bounds it).
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "HEARTBEAT",
    "STALLED",
    "KILL_GRACE",
    "Pulse",
    "check",
    "enable_faulthandler",
    "follow_reopened_logs",
]

log = logging.getLogger("gristmill.error")

#: ``H<in-flight>\n``: the worker turns.
HEARTBEAT = ord("H")
#: ``S<in-flight> <what>:<seconds>,...\n``: the worker runs, but something stopped.
STALLED = ord("S")
#: Seconds between SIGABRT (with the stack dump) and SIGKILL.
KILL_GRACE = 5.0

#: What the worker names in ``S`` messages, as the log says it.
_WHAT = {
    "runtime": "the I/O runtime",
    "gil": "the GIL (one thread holds it)",
    "loop": "the event loop",
}


@dataclass
class Pulse:
    """One worker's heartbeat as the supervisor sees it."""

    #: ``time.monotonic()`` of the last ``H`` (or of readiness, whichever is later).
    last: float = 0.0
    #: Requests in flight at the last message.
    in_flight: int = 0
    #: What the last ``S`` said stopped (``""`` after an ``H``).
    stalled: str = ""
    #: When SIGABRT was sent; 0: not sent. Once SIGKILL is sent too: ``-1``.
    aborted: float = 0.0
    #: An incomplete message from the last read.
    _partial: bytes = b""

    def feed(self, data: bytes, now: float) -> list[int]:
        """Take what was read from the worker's pipe; return the one-byte messages in it
        (readiness, recycling), in order."""
        data = self._partial + data
        self._partial = b""
        single: list[int] = []
        i = 0
        while i < len(data):
            kind = data[i]
            if kind not in (HEARTBEAT, STALLED):
                single.append(kind)
                i += 1
                continue
            end = data.find(b"\n", i)
            if end < 0:
                self._partial = data[i:]
                break
            self._take(kind, data[i + 1 : end].decode("ascii", "replace"), now)
            i = end + 1
        return single

    def _take(self, kind: int, body: str, now: float) -> None:
        count, _, what = body.partition(" ")
        with contextlib.suppress(ValueError):
            self.in_flight = int(count)
        if kind == HEARTBEAT:
            self.last = now
            self.stalled = ""
        else:
            self.stalled = what

    def start(self, now: float) -> None:
        """The worker is ready: it is watched from now on."""
        self.last = max(self.last, now)


class _Watched(Protocol):
    pid: int
    ready: bool
    ready_fd: int
    pulse: Pulse


def check(workers: Iterable[_Watched], timeout: float, now: float) -> list[float]:
    """Abort the ready workers without a heartbeat for ``timeout`` seconds, kill those
    aborted :data:`KILL_GRACE` seconds ago; return when the next check is due for each
    worker watched."""
    due: list[float] = []
    for w in workers:
        p = w.pulse
        if p.aborted > 0:
            if now >= p.aborted + KILL_GRACE:
                log.error(
                    "Worker %d still runs %g seconds after SIGABRT; killing it (SIGKILL)",
                    w.pid,
                    KILL_GRACE,
                )
                _kill(w.pid, signal.SIGKILL)
                p.aborted = -1
            else:
                due.append(p.aborted + KILL_GRACE)
            continue
        if p.aborted or not timeout or not w.ready or w.ready_fd < 0:
            continue
        deadline = p.last + timeout
        if now < deadline:
            due.append(deadline)
            continue
        lost = p.in_flight
        log.error(
            "Worker %d sent no heartbeat for %.1f seconds (worker-timeout %g s); stopped "
            "turning: %s. Killing it with SIGABRT (its Python stacks follow); "
            "%d in-flight request%s lost",
            w.pid,
            now - p.last,
            timeout,
            describe(p.stalled),
            lost,
            "" if lost == 1 else "s",
        )
        _kill(w.pid, signal.SIGABRT)
        p.aborted = now
        due.append(now + KILL_GRACE)
    return due


def describe(stalled: str) -> str:
    """``runtime:1.2,gil:1.2`` as ``the I/O runtime for 1.2 s, the GIL (...) for 1.2 s``."""
    if not stalled:
        return "unknown (the worker itself stopped reporting)"
    parts = []
    for item in stalled.split(","):
        what, _, secs = item.partition(":")
        name = _WHAT.get(what, what)
        parts.append(f"{name} for {secs} s" if secs else name)
    return ", ".join(parts)


_faulthandler_ours = False


def enable_faulthandler() -> None:
    """In a worker: dump every thread's Python stack on SIGABRT (and on crashes) to the
    stream of the error log's handler when it has a file descriptor, else to stderr.
    The dump is written by a C signal handler, raw, not through ``logging``: a hung
    worker may not run Python code again."""
    global _faulthandler_ours
    stream = _error_log_stream() or sys.__stderr__
    if stream is None:
        return
    with contextlib.suppress(ValueError, OSError, AttributeError, RuntimeError):
        faulthandler.enable(file=stream, all_threads=True)
        _faulthandler_ours = True


def follow_reopened_logs() -> None:
    """After SIGUSR1 reopened the log files: point the dump at the new file (the old
    descriptor is closed, and could be reused by anything)."""
    if _faulthandler_ours:
        enable_faulthandler()


def _error_log_stream() -> object | None:
    """The first stream with a file descriptor among the handlers ``gristmill.error``
    writes to (its own, then its ancestors' while it propagates)."""
    logger: logging.Logger | None = log
    while logger is not None:
        for handler in logger.handlers:
            stream = getattr(handler, "stream", None)
            try:
                if stream is not None and stream.fileno() >= 0:
                    stream.flush()
                    return stream
            except (AttributeError, OSError, ValueError):
                continue
        logger = logger.parent if logger.propagate else None
    return None


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
