"""The supervisor: binds the sockets, forks the workers, owns the signals.

It behaves as gunicorn users expect. Sockets are bound once here and inherited by every
worker. A worker reports readiness by writing one byte to a pipe (the Rust core does it
once it accepts); the readiness line is logged only when every initial worker did. Dead
workers are respawned; a worker that cannot load the application (exit code 3) or
workers that keep dying at start-up stop the server instead of looping.

Signals: SIGTERM/SIGINT graceful stop; a second SIGINT or SIGQUIT forces; SIGHUP rolling
restart (new workers ready before the old ones drain); SIGTTIN/SIGTTOU one worker more or
fewer. A worker stopped while others go on serving (SIGHUP's old workers, a recycled
worker, SIGTTOU's) gets SIGUSR2 rather than SIGTERM: it drains the same way but passes
its idle keep-alive connections on to the others (``sockets.handoff_pair``). The main
loop sleeps in ``selectors`` on a ``signal.set_wakeup_fd`` self-pipe and the workers'
pipes, with a timeout only for the timers it has (the stop deadline, worker lifetimes,
RSS checks): no polling otherwise.

Worker recycling (``--max-requests``, ``--worker-lifetime``, ``--worker-max-rss``)
replaces one worker at a time the way SIGHUP replaces them all: the replacement starts,
and only once it is ready does the old worker get SIGUSR2 and drain. A worker asks for
its own replacement after ``max_requests`` requests by writing ``b"M"`` to the pipe it
reported readiness on (``b"T"`` when all its threads are stuck past
``--request-timeout``); the supervisor watches ages and memory itself.

``--worker-timeout``: a ready worker also sends heartbeats on that pipe; one that stops
sending them is killed and replaced (``watchdog.py``).

The supervisor never imports the application (unless handed an app object by
:func:`gristmill.serve`), so a broken app cannot take it down.

Replacing a worker is cheap: before it forks, the supervisor freezes its own objects out
of the garbage collector, makes them immortal (CPython 3.12+, in the ``gristmill``
command) and, at the first replacement, imports the modules an ASGI
worker would import itself (``_warm.py``), so a new worker only imports the application.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.util
import logging
import os
import random
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import _warm, loader, metrics, reloader, sockets, watchdog, worker
from . import logging as gm_logging
from ._proc import rss_kib
from .errors import AppLoadError, ConfigError, ServerError
from .settings import Settings

__all__ = ["Supervisor", "MAX_STARTUP_FAILURES", "SHUTDOWN_GRACE"]

log = logging.getLogger("gristmill.error")

#: Workers dying before they are ready this many times in a row stop the server.
MAX_STARTUP_FAILURES = 5
#: Seconds added to graceful_timeout before stragglers are killed: the workers enforce
#: graceful_timeout themselves; this margin only catches a worker that hangs.
SHUTDOWN_GRACE = 5.0
#: ``--worker-max-rss``: seconds between two samples of every worker's resident memory,
#: and how many samples in a row must be above the limit (a short peak is not a leak).
RSS_CHECK_INTERVAL = 1.0
RSS_SAMPLES = 3
#: Seconds before a worker whose replacement failed to start is tried again.
RECYCLE_RETRY = 10.0

#: What a worker writes to its pipe (``src/lifecycle.rs``).
_MSG_READY = ord("1")
_MSG_MAX_REQUESTS = ord("M")
_MSG_STUCK = ord("T")  # every thread stuck past --request-timeout
_MSG_ASGI = ord(_warm.MSG_ASGI)  # written by the worker (``worker.py``), not the core

_HANDLED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGCHLD,
)


@dataclass(eq=False)
class _Worker:
    pid: int
    ready_fd: int  # read end of the readiness pipe; -1 once closed
    generation: int
    seq: int  # spawn order, to retire the newest on SIGTTOU
    ready: bool = False
    started: float = 0.0  # time.monotonic() at spawn
    max_requests: int = 0  # this worker's limit, jitter included; 0: none
    lifetime: float = 0.0  # this worker's lifetime in seconds, jitter included; 0: none
    rss: list[int] = field(default_factory=list)  # the last RSS samples, in KiB
    recycle: str = ""  # why it is queued for replacement; "" when it is not
    recycle_kind: str = ""  # the same as a metrics reason (``gristmill.metrics``)
    retry_at: float = 0.0  # when its failed replacement is tried again; 0: not waiting
    pulse: watchdog.Pulse = field(default_factory=watchdog.Pulse)  # --worker-timeout


@dataclass
class _Recycle:
    """One worker being replaced: ``new`` starts; then ``old`` drains until it exits."""

    old: int
    new: int
    draining: bool = False
    #: When draining: the old worker is killed if it still runs at this time (0: none).
    deadline: float = 0.0


@dataclass
class _Stop:
    """A stop in progress."""

    code: int
    error: Exception | None = None
    deadline: float | None = None
    forced: bool = False
    signame: str = ""


@dataclass
class _Reload:
    generation: int
    count: int


class Supervisor:
    """Runs the workers for ``settings``; :meth:`run` returns the exit code."""

    def __init__(self, settings: Settings, app: Callable[..., Any] | None = None) -> None:
        self.settings = settings
        self.app = app
        self.target_workers = settings.workers
        self.workers: dict[int, _Worker] = {}  # serving or starting, by pid
        self.retiring: set[int] = set()  # told to stop; reaped without respawn
        self._handing_over: set[int] = set()  # retiring with SIGUSR2 (connections passed on)
        self.generation = 0
        self.listeners: list[sockets.Bound] = []
        # The socket pair a replaced worker passes its idle connections through.
        self._handoff: tuple[socket.socket, socket.socket] | None = None
        self.address = ""
        self._uds_owned: list[sockets.Bound] = []  # socket files to remove at exit
        self._seq = 0
        self._startup_failures = 0
        self._announced = False
        self._stop: _Stop | None = None
        self._reload: _Reload | None = None
        # --reload: the file watcher, and a restart asked for while one could not start.
        self._reloader: reloader.Reloader | None = None
        self._reload_pending = False
        self._recycle: _Recycle | None = None
        self._recycle_queue: list[int] = []  # pids waiting for a replacement, in order
        self._next_rss_check = 0.0
        self._sel: selectors.BaseSelector | None = None
        self._wake_r = self._wake_w = -1
        self._pid_file: str | None = None
        self._old_handlers: dict[int, Any] = {}
        self._exiting = False
        self._metrics: metrics.Metrics | None = None
        self._exit_reasons: dict[int, str] = {}  # retired pid -> metrics exit reason
        self._warm = _warm.Warm(settings)  # what replacements get from the fork

    # --- lifecycle ------------------------------------------------------------------

    def run(self, *, exiting: bool = False) -> int:
        """Serve until stopped. Returns 0 after a graceful stop, 1 after a forced one.

        Raises :class:`ServerError` or :class:`AppLoadError` when the server cannot
        start or keep running (after stopping every worker).

        The caller's signal handlers are restored on return, except with ``exiting``
        (the ``gristmill`` command, whose process ends right after): the signals the
        supervisor handled are then left ignored, so a repeated SIGTERM or Ctrl-C that
        arrives between the end of the stop and the exit cannot kill the process (exit
        -15 instead of 0) or raise KeyboardInterrupt.
        """
        self._exiting = exiting
        # Immortal objects are never freed: only in a process that ends with the server.
        self._warm.own_process = exiting
        self._prepare()
        set_title(self.settings, "supervisor", warn=True)
        try:
            if self.settings.reload:
                self._reloader = reloader.Reloader(self.settings)
            if self.settings.preload and self.app is None:
                self._preload()
            self._bind()
            if self.settings.metrics_bind:
                self._metrics = metrics.Metrics(self.settings.metrics_bind)
            self._write_pid_file()
            self._install_signals()
            if self._metrics is not None:
                self._metrics.start_process()
            self._warm.before_first_fork()
            for _ in range(self.target_workers):
                self._spawn(self.generation, "initial")
            if self._reloader is not None:
                assert self._sel is not None
                self._sel.register(self._reloader.fd, selectors.EVENT_READ, self._reloader)
                self._reloader.start()
            return self._loop()
        finally:
            self._cleanup()

    def _prepare(self) -> None:
        s = self.settings
        # File settings are relative to where gristmill was started; only the target is
        # relative to --working-dir (that is what the option is for).
        self._pid_file = os.path.abspath(s.pid_file) if s.pid_file else None
        uds = os.path.abspath(s.uds) if s.uds else None
        bind = [f"unix:{os.path.abspath(a[5:])}" if a.startswith("unix:") else a for a in s.bind]
        reload_dir = [os.path.abspath(d) for d in s.reload_dir]
        self.settings = s = s.replace(
            uds=uds, bind=bind, reload_dir=reload_dir, **_absolute_tls_paths(s)
        )
        # Env files first: the workers inherit os.environ through fork.
        loader.apply_env_files(s.env_file)
        loader.enter_working_dir(s)
        if importlib.util.find_spec("gristmill._core") is None:
            raise ServerError(
                "the Rust core gristmill._core is not built: run `make build` or `pip install .`"
            )
        _check_tls(s)
        if s.worker_max_rss and rss_kib(os.getpid()) is None:
            log.warning("--worker-max-rss needs /proc/PID/status (Linux); it is ignored")

    def _preload(self) -> None:
        """--preload: import the application here, so the workers fork with it."""
        threads = threading.active_count()
        self.app = loader.load_app(self.settings)
        log.info("Preloaded %s", self.settings.target)
        started = threading.active_count() - threads
        if started > 0:
            log.warning(
                "The application started %d thread%s while it was preloaded; workers are "
                "forked without them (start threads in each worker instead, e.g. at "
                "lifespan startup or on first use)",
                started,
                "" if started == 1 else "s",
            )
        # Collect, then freeze what the import left, so that collections in the workers
        # do not touch (and so copy) the shared pages.
        _warm.freeze()

    def _cleanup(self) -> None:
        if not self._exiting:
            gc.unfreeze()  # gristmill.serve(): the caller's process goes on
        if self._reloader is not None:
            self._reloader.close()
            self._reloader = None
        # Reached normally with no children left; after an unexpected exception, do not
        # leave orphans serving on a socket nobody supervises.
        for pid in list(self.workers) + list(self.retiring):
            _kill(pid, signal.SIGKILL)
        for pid in list(self.workers) + list(self.retiring):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for w in self.workers.values():
            self._close_ready(w)
        self.workers.clear()
        self.retiring.clear()
        self._handing_over.clear()
        self._close_listeners()
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        sockets.remove_uds_files(self._uds_owned)
        if self._pid_file:
            with contextlib.suppress(OSError):
                with open(self._pid_file) as f:
                    mine = f.read().strip() == str(os.getpid())
                if mine:
                    os.unlink(self._pid_file)
        self._restore_signals()

    # --- sockets --------------------------------------------------------------------

    def _bind(self) -> None:
        self.listeners = sockets.bind_all(self.settings)
        self._handoff = sockets.handoff_pair()
        self._uds_owned = [b for b in self.listeners if b.uds_path]
        self.address = ", ".join(b.display for b in self.listeners)

    def _close_listeners(self) -> None:
        sockets.close_all(self.listeners)
        self.listeners = []
        for sock in self._handoff or ():
            sock.close()
        self._handoff = None

    def _write_pid_file(self) -> None:
        if not self._pid_file:
            return
        try:
            with open(self._pid_file, "w") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as e:
            path, self._pid_file = self._pid_file, None
            raise ServerError(f"cannot write pid file {path}: {e.strerror}") from None

    # --- signals --------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        # The C-level handler writes each signal number to the pipe; the Python handler
        # only has to exist for that to happen. The loop reads the numbers back.
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in _HANDLED:
            self._old_handlers[sig] = signal.signal(sig, _noop)

    def _restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            # One atomic swap per signal, from our handler to the next disposition: no
            # moment where a stop signal meets the default action.
            if self._exiting and sig != signal.SIGCHLD:
                handler = signal.SIG_IGN
            signal.signal(sig, handler)
        self._old_handlers.clear()
        if self._wake_w >= 0:
            signal.set_wakeup_fd(-1)
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _read_signals(self) -> list[int]:
        sigs = []
        while True:
            try:
                data = os.read(self._wake_r, 512)
            except BlockingIOError:
                break
            if not data:
                break
            sigs.extend(data)
        return sigs

    # --- workers --------------------------------------------------------------------

    def _spawn(self, generation: int, reason: str = "initial") -> _Worker:
        s = self.settings
        max_requests = 0
        if s.max_requests:
            max_requests = s.max_requests + random.randint(0, s.max_requests_jitter)
        lifetime = 0.0
        if s.worker_lifetime:
            lifetime = s.worker_lifetime + random.uniform(0.0, s.worker_lifetime_jitter)
        if reason != "initial":
            self._warm.before_replacement()
        ready_r, ready_w = os.pipe()
        # Block our signals across fork so the child cannot run the supervisor's
        # handlers (or write to its wakeup pipe) before it has reset them.
        old_mask = worker.sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            pid = os.fork()
        except OSError as e:
            worker.sigmask(signal.SIG_SETMASK, old_mask)
            os.close(ready_r)
            os.close(ready_w)
            raise ServerError(f"cannot start a worker: {e.strerror}") from None
        if pid == 0:
            try:
                self._become_worker(ready_r, ready_w, old_mask, max_requests)
            except BaseException:
                # worker.run logs its own failures; this is one before it got there.
                log.exception("Worker %d failed to start", os.getpid())
                logging.shutdown()
            finally:
                os._exit(worker.EXIT_FAILED)
        worker.sigmask(signal.SIG_SETMASK, old_mask)
        os.close(ready_w)
        os.set_blocking(ready_r, False)
        self._seq += 1
        w = _Worker(
            pid,
            ready_r,
            generation,
            self._seq,
            started=time.monotonic(),
            max_requests=max_requests,
            lifetime=lifetime,
        )
        self.workers[pid] = w
        if self._metrics is not None:
            self._metrics.worker_started(reason)
        assert self._sel is not None
        self._sel.register(ready_r, selectors.EVENT_READ, w)
        log.debug("Started worker %d", pid)
        return w

    def _become_worker(self, ready_r: int, ready_w: int, old_mask: Any, max_requests: int) -> None:
        """In the child: drop the supervisor's state, then run the worker (never returns)."""
        set_title(self.settings, f"worker {self._seq + 1}")
        signal.set_wakeup_fd(-1)
        worker.reset_signals()
        worker.sigmask(signal.SIG_SETMASK, old_mask)
        if self._sel is not None:
            self._sel.close()
        fds = [ready_r, self._wake_r, self._wake_w]
        if self._reloader is not None:
            fds += self._reloader.pipe_fds()
        fds += [w.ready_fd for w in self.workers.values() if w.ready_fd >= 0]
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._metrics is not None:
            self._metrics.attach_worker()
        fds = sockets.worker_fds(self.listeners, self.settings)
        # Detached: the core owns the worker's copies of the pair from here on.
        handoff = None
        if self._handoff is not None:
            handoff = (self._handoff[0].detach(), self._handoff[1].detach())
        # The core counts up to this worker's own limit, the jitter drawn above included.
        settings = self.settings.replace(max_requests=max_requests)
        worker.run(settings, fds, ready_w, self.app, handoff)

    def _close_ready(self, w: _Worker) -> None:
        if w.ready_fd < 0:
            return
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(w.ready_fd)
        os.close(w.ready_fd)
        w.ready_fd = -1

    def _check_ready(self, w: _Worker) -> None:
        """Read the worker's pipe: ``1`` means ready, ``M`` that it served its
        ``max_requests``, ``T`` that its threads are all stuck, heartbeats go to its
        ``pulse``; end-of-file that it stopped serving (or never started)."""
        if w.ready_fd < 0:
            return
        try:
            data = os.read(w.ready_fd, 4096)
        except BlockingIOError:
            return
        if not data:
            self._close_ready(w)
            return
        for msg in w.pulse.feed(data, time.monotonic()):
            if msg == _MSG_READY and not w.ready:
                w.ready = True
                self._on_ready(w)
            elif msg == _MSG_MAX_REQUESTS:
                self._request_recycle(
                    w,
                    f"served {w.max_requests} requests "
                    f"(max-requests {_with_jitter(self.settings.max_requests, w.max_requests)})",
                    kind="max_requests",
                )
            elif msg == _MSG_ASGI:
                self._warm.learned("asgi")
            elif msg == _MSG_STUCK:
                self._request_recycle(
                    w,
                    f"has every thread stuck past request-timeout "
                    f"({self.settings.request_timeout:g} s)",
                    kind="request_timeout",
                )

    def _replaced_signal(self, w: _Worker | None) -> int:
        """How to stop a worker while others go on serving (its replacement, or the
        rest after SIGTTOU): SIGUSR2 (drain, and pass the idle keep-alive connections on
        to the workers that stay, instead of closing them) once its core listens for it,
        else SIGTERM."""
        if self._handoff is not None and w is not None and w.ready:
            return signal.SIGUSR2
        return signal.SIGTERM

    def _retire(self, pid: int, sig: int = signal.SIGTERM, reason: str = "shutdown") -> None:
        """Tell a worker to stop; it is reaped without being replaced. ``reason`` is
        what its exit counts as in the metrics."""
        self._exit_reasons.setdefault(pid, reason)
        recycle = self._recycle
        if recycle is not None and pid == recycle.new and not recycle.draining:
            # A replacement stopped before it took over (SIGTTOU retires the newest): the
            # old worker keeps serving and waits for another.
            self._recycle = None
            self._recycle_queue.insert(0, recycle.old)
        w = self.workers.pop(pid, None)
        if w is not None:
            self._close_ready(w)
        self.retiring.add(pid)
        if sig == signal.SIGUSR2:
            self._handing_over.add(pid)
        _kill(pid, sig)

    # --- the loop -------------------------------------------------------------------

    def _loop(self) -> int:
        assert self._sel is not None
        while True:
            stop = self._stop
            if stop is not None and not self.workers and not self.retiring:
                return self._finish(stop)
            timeout = None
            if stop is not None and stop.deadline is not None:
                timeout = max(0.0, stop.deadline - time.monotonic())
                if timeout == 0.0:
                    self._kill_stragglers()
                    timeout = None
            if stop is None:
                timeout = self._check_timers()
                # Workers the timers just queued start now, not at the next wake-up.
                self._next_recycle()
            signals: list[int] = []
            for key, _ in self._sel.select(timeout):
                if key.fd == self._wake_r:
                    signals = self._read_signals()
                elif key.data is self._reloader:
                    if self._reloader is not None and self._reloader.take():
                        self._files_changed()
                else:
                    self._check_ready(key.data)
            for sig in signals:
                self._on_signal(sig)
            self._reap()
            self._next_recycle()

    def _finish(self, stop: _Stop) -> int:
        if stop.error is not None:
            raise stop.error
        log.info("Shutdown complete")
        return stop.code

    def _on_signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            return  # handled by _reap after every wake-up
        name = signal.Signals(sig).name
        if sig in (signal.SIGTERM, signal.SIGINT):
            if self._stop is None:
                log.info("Shutting down (%s)", name)
                self._begin_stop(_Stop(code=0, signame=name))
            elif sig == signal.SIGINT:
                self._force(name)
        elif sig == signal.SIGQUIT:
            self._force(name)
        elif self._stop is not None:
            return
        elif sig == signal.SIGHUP:
            self._start_reload()
        elif sig in (signal.SIGTTIN, signal.SIGTTOU):
            self._resize(+1 if sig == signal.SIGTTIN else -1, name)
        elif sig == signal.SIGUSR1:
            self._reopen_logs()

    def _reopen_logs(self) -> None:
        """SIGUSR1 (logrotate's postrotate): reopen our log files, then the workers'."""
        n = gm_logging.reopen_files()
        if n:
            log.info("Reopened %d log file%s (SIGUSR1)", n, "" if n == 1 else "s")
        else:
            log.info("SIGUSR1: no log files to reopen (logging goes to streams)")
        for pid in list(self.workers):
            _kill(pid, signal.SIGUSR1)

    def _begin_stop(self, stop: _Stop) -> None:
        self._stop = stop
        self._reload = None
        self._recycle = None
        self._recycle_queue.clear()
        # New connections now queue nowhere: the workers' copies close as they stop.
        self._close_listeners()
        stop.deadline = time.monotonic() + self.settings.graceful_timeout + SHUTDOWN_GRACE
        # A worker replaced a moment ago passes its connections on to the others, which
        # stop now: SIGTERM after its SIGUSR2 makes it finish them itself instead. It is
        # told first, so that it stops passing before the others take their last.
        for pid in self._handing_over:
            _kill(pid, signal.SIGTERM)
        self._handing_over.clear()
        for pid in list(self.workers):
            self._retire(pid)

    def _force(self, name: str) -> None:
        if self._stop is not None and self._stop.forced:
            return
        log.info("Forcing shutdown (%s)", name)
        if self._stop is None:
            self._begin_stop(_Stop(code=1, signame=name))
        assert self._stop is not None
        self._stop.forced = True
        self._stop.deadline = None
        if self._stop.error is None:
            self._stop.code = 1
        for pid in list(self.workers):
            self._retire(pid, signal.SIGKILL)
        for pid in self.retiring:
            _kill(pid, signal.SIGKILL)

    def _kill_stragglers(self) -> None:
        assert self._stop is not None
        pids = sorted(self.retiring)
        log.warning(
            "Killing %d worker(s) still running %g seconds after the stop signal: %s",
            len(pids),
            self.settings.graceful_timeout + SHUTDOWN_GRACE,
            ", ".join(map(str, pids)),
        )
        for pid in pids:
            _kill(pid, signal.SIGKILL)
        self._stop.deadline = None

    def _fail(self, error: Exception) -> None:
        """Stop every worker, then raise ``error`` from :meth:`run`."""
        if self._stop is None:
            self._begin_stop(_Stop(code=error_code(error), error=error))
        elif self._stop.error is None:
            self._stop.error = error

    # --- worker events --------------------------------------------------------------

    def _on_ready(self, w: _Worker) -> None:
        self._startup_failures = 0
        w.pulse.start(time.monotonic())
        log.debug("Worker %d ready", w.pid)
        reload = self._reload
        recycle = self._recycle
        if recycle is not None and w.pid == recycle.new:
            # The replacement accepts: only now does the old worker stop accepting.
            recycle.draining = True
            recycle.deadline = time.monotonic() + self.settings.graceful_timeout + SHUTDOWN_GRACE
            log.info("Worker %d replaces worker %d, which now drains", w.pid, recycle.old)
            old = self.workers.get(recycle.old)
            self._retire(
                recycle.old,
                self._replaced_signal(old),
                reason=(old.recycle_kind if old else "") or "shutdown",
            )
        elif reload is not None and w.generation == reload.generation:
            self._maybe_finish_reload()
        elif not self._announced and self._all_ready():
            self._announced = True
            n = len(self.workers)
            log.info("Listening on %s (%d worker%s)", self.address, n, "" if n == 1 else "s")
            self._pending_reload()

    def _all_ready(self) -> bool:
        return len(self.workers) >= self.target_workers and all(
            w.ready for w in self.workers.values()
        )

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._on_exit(pid, status)

    def _on_exit(self, pid: int, status: int) -> None:
        reason = _exit_reason(status)
        if self._metrics is not None:
            if self._metrics.on_exit(pid, reason, self._stop is not None):
                return
            w = self.workers.get(pid)
            why = "crashed" if w is None or w.ready else "startup_failed"
            if w is not None and w.pulse.aborted:
                why = "hung"  # --worker-timeout aborted it
            if pid in self.retiring or w is not None:
                self._metrics.worker_exited(pid, self._exit_reasons.get(pid, why))
        self._exit_reasons.pop(pid, None)
        recycle = self._recycle
        self._handing_over.discard(pid)
        if pid in self.retiring:
            self.retiring.discard(pid)
            log.debug("Worker %d stopped (%s)", pid, reason)
            if recycle is not None and pid == recycle.old:
                self._recycle = None  # the next worker in the queue may go
            return
        w = self.workers.get(pid)
        if w is None:
            return  # not ours (a child the application left behind is not our business)
        self._check_ready(w)  # a byte written just before dying still counts
        self._close_ready(w)
        del self.workers[pid]
        if self._stop is not None:
            return
        code = os.waitstatus_to_exitcode(status)
        if recycle is not None and pid == recycle.old:
            # Its replacement is already starting: that one takes its place.
            self._recycle = None
            log.warning(
                "Worker %d exited unexpectedly (%s); worker %d, starting, replaces it",
                pid,
                reason,
                recycle.new,
            )
            return
        if recycle is not None and pid == recycle.new and not w.ready:
            # As a failed reload: the old worker is healthy and keeps serving (stopping
            # the server, as for a worker that cannot be respawned, would turn memory
            # hygiene into an outage). It is tried again later.
            self._recycle = None
            old = self.workers.get(recycle.old)
            if old is not None:
                old.retry_at = time.monotonic() + RECYCLE_RETRY
            log.error(
                "Could not replace worker %d: new worker %d exited during start-up (%s); "
                "worker %d keeps serving, next attempt in %g seconds",
                recycle.old,
                pid,
                reason,
                recycle.old,
                RECYCLE_RETRY,
            )
            return
        reload = self._reload
        if reload is not None and w.generation == reload.generation and not w.ready:
            self._abort_reload(pid, reason)
            return
        if not w.ready and code == worker.EXIT_APP_LOAD:
            self._fail(AppLoadError("Failed to load the application; stopping"))
            return
        if not w.ready:
            self._startup_failures += 1
            if self._startup_failures >= MAX_STARTUP_FAILURES:
                self._fail(
                    ServerError(
                        f"Workers keep dying at start-up ({self._startup_failures} in a row, "
                        f"the last {reason}); stopping"
                    )
                )
                return
        if w.pulse.aborted:
            log.warning("Worker %d, hung, ended (%s); starting a new one", pid, reason)
        else:
            log.warning("Worker %d exited unexpectedly (%s); starting a new one", pid, reason)
        self._spawn(w.generation, "hung" if w.pulse.aborted else "crashed")

    # --- reload and resize ----------------------------------------------------------

    def _files_changed(self) -> None:
        """--reload saw a change: restart now, or as soon as the workers can be."""
        if self._stop is not None:
            return
        if self._reload is not None or not self._announced:
            # The workers starting now may have imported the old code: go again after.
            self._reload_pending = True
            return
        self._start_reload("files changed")

    def _pending_reload(self) -> None:
        if self._reload_pending and self._stop is None:
            self._reload_pending = False
            self._start_reload("files changed")

    def _start_reload(self, why: str = "SIGHUP") -> None:
        if self._reload is not None:
            log.info("Ignoring SIGHUP: a reload is already in progress")
            return
        if not self._announced:
            log.info("Ignoring SIGHUP: the workers are still starting")
            return
        log.info("Reloading workers (%s)", why)
        # The reload replaces every worker, those waiting to be recycled too. A
        # replacement already starting finishes its job; the reload retires it after.
        self._recycle_queue.clear()
        reload = _Reload(generation=self.generation + 1, count=self.target_workers)
        self._reload = reload
        for _ in range(reload.count):
            self._spawn(reload.generation, "reload")

    def _maybe_finish_reload(self) -> None:
        reload = self._reload
        assert reload is not None
        new = [w for w in self.workers.values() if w.generation == reload.generation]
        if len(new) < reload.count or not all(w.ready for w in new):
            return
        # Only now do the old workers go: they finish their in-flight requests while the
        # new ones already accept, so no connection is refused.
        old = [(p, w) for p, w in self.workers.items() if w.generation != reload.generation]
        for pid, w in old:
            self._retire(pid, self._replaced_signal(w), reason="reload")
        self.generation = reload.generation
        self._reload = None
        log.info("Reload complete")
        self._pending_reload()

    def _abort_reload(self, pid: int, reason: str) -> None:
        reload = self._reload
        assert reload is not None
        log.error(
            "Reload failed: new worker %d exited during start-up (%s); keeping the old workers",
            pid,
            reason,
        )
        for other in [p for p, w in self.workers.items() if w.generation == reload.generation]:
            self._retire(other, reason="reload_aborted")
        self._reload = None
        self._pending_reload()

    # --- recycling ------------------------------------------------------------------

    def _request_recycle(self, w: _Worker, why: str, kind: str = "") -> None:
        """Queue ``w`` for replacement (once); :meth:`_next_recycle` starts it in turn.
        ``why`` is for the log, ``kind`` the metrics exit reason (``max_requests``, …)."""
        if w.recycle or self._stop is not None or self.workers.get(w.pid) is not w:
            return
        w.recycle = why
        w.recycle_kind = kind
        log.info("Worker %d %s; replacing it", w.pid, why)
        self._recycle_queue.append(w.pid)

    def _next_recycle(self) -> None:
        """Start the next replacement: one at a time, never during a reload or stop."""
        if self._recycle is not None or self._reload is not None or self._stop is not None:
            return
        if not self._announced:
            return
        while self._recycle_queue:
            old = self.workers.get(self._recycle_queue.pop(0))
            if old is None:
                continue  # gone already
            new = self._spawn(self.generation, "recycle")
            self._recycle = _Recycle(old=old.pid, new=new.pid)
            log.debug("Started worker %d to replace worker %d", new.pid, old.pid)
            return

    def _check_timers(self) -> float | None:
        """Queue the workers past their lifetime or over the RSS limit; return the
        seconds until the next timer is due (``None``: no timer)."""
        now = time.monotonic()
        due: list[float] = []
        for w in self.workers.values():
            if w.retry_at and now >= w.retry_at:
                w.retry_at = 0.0
                self._recycle_queue.append(w.pid)
            elif w.retry_at:
                due.append(w.retry_at)
        recycle = self._recycle
        if recycle is not None and recycle.draining and recycle.deadline:
            if now >= recycle.deadline:
                # The worker enforces --graceful-timeout itself; only a hung one gets here,
                # and it would hold up every later replacement.
                log.warning(
                    "Killing worker %d, still running %g seconds after it was replaced",
                    recycle.old,
                    self.settings.graceful_timeout + SHUTDOWN_GRACE,
                )
                _kill(recycle.old, signal.SIGKILL)
                recycle.deadline = 0.0  # killed: reaped as any retired worker
            else:
                due.append(recycle.deadline)
        if self.settings.worker_lifetime:
            for w in list(self.workers.values()):
                if not w.ready or w.recycle:
                    continue
                deadline = w.started + w.lifetime
                if now >= deadline:
                    lifetime = _with_jitter(self.settings.worker_lifetime, w.lifetime)
                    self._request_recycle(
                        w,
                        f"is {now - w.started:.1f} seconds old (worker-lifetime {lifetime})",
                        kind="worker_lifetime",
                    )
                else:
                    due.append(deadline)
        if self.settings.worker_timeout:
            due += watchdog.check(list(self.workers.values()), self.settings.worker_timeout, now)
        if self.settings.worker_max_rss:
            if now >= self._next_rss_check:
                self._check_rss()
                self._next_rss_check = now + RSS_CHECK_INTERVAL
            due.append(self._next_rss_check)
        return max(0.0, min(due) - now) if due else None

    def _check_rss(self) -> None:
        limit_kib = self.settings.worker_max_rss * 1024
        for w in list(self.workers.values()):
            if not w.ready or w.recycle:
                continue
            rss = rss_kib(w.pid)
            if rss is None:
                continue
            w.rss = (w.rss + [rss])[-RSS_SAMPLES:]
            if len(w.rss) == RSS_SAMPLES and all(r > limit_kib for r in w.rss):
                samples = ", ".join(f"{r / 1024:.1f}" for r in w.rss)
                self._request_recycle(
                    w,
                    f"uses {samples} MiB of resident memory (VmRSS, {RSS_SAMPLES} samples "
                    f"{RSS_CHECK_INTERVAL:g} second apart; worker-max-rss "
                    f"{self.settings.worker_max_rss} MiB)",
                    kind="worker_max_rss",
                )

    def _resize(self, delta: int, name: str) -> None:
        if self._reload is not None:
            log.info("Ignoring %s during a reload", name)
            return
        if delta > 0:
            self.target_workers += 1
            log.info("Increasing workers to %d (%s)", self.target_workers, name)
            self._spawn(self.generation, "scale_up")
            return
        if self.target_workers <= 1:
            log.info("Ignoring %s: already at 1 worker", name)
            return
        self.target_workers -= 1
        log.info("Decreasing workers to %d (%s)", self.target_workers, name)
        newest = max(self.workers.values(), key=lambda w: w.seq, default=None)
        if newest is not None:
            # The others stay: its idle connections go to them.
            self._retire(newest.pid, self._replaced_signal(newest), reason="scale_down")


def set_title(settings: Settings, role: str, warn: bool = False) -> None:
    """Show ``gristmill: ROLE [NAME]`` as this process's title (``--process-name``, else
    the application target), when ``setproctitle`` is installed."""
    setter = _title_setter()
    if setter is None:
        if warn and settings.process_name:
            log.warning(
                "--process-name %s: setproctitle is not installed, so process titles are "
                "left unchanged (pip install 'gristmill[proctitle]')",
                settings.process_name,
            )
        return
    setter(f"gristmill: {role} [{settings.process_name or settings.target}]")


@functools.cache
def _title_setter() -> Callable[[str], None] | None:
    """``setproctitle.setproctitle``, or ``None`` when it is not installed. Looked up once,
    by the supervisor as it starts, so that a new worker does not search ``sys.path``
    for a missing module again (~0.1 ms of every replacement)."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return None
    return setproctitle


def error_code(error: Exception) -> int:
    return getattr(error, "exit_code", 1)


def _noop(signum: int, frame: Any) -> None:
    """Python-level handler; the wakeup fd carries the signal to the loop."""


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _exit_reason(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def _with_jitter(setting: float, actual: float) -> str:
    """``1000`` or ``1000 + 23 jitter`` (requests), ``3600 + 12.345 jitter`` (seconds),
    for the log lines of recycling."""
    extra = actual - setting
    if not extra:
        return _plain(setting)
    return f"{_plain(setting)} + {_plain(extra)} jitter"


def _plain(n: float) -> str:
    """A count as is, seconds to the millisecond, never in exponent notation: ``%g``
    wrote a jitter drawn under 0.1 ms as ``1.67e-05`` (and a lifetime of 10**6 s as
    ``1e+06``), which no reader and no log parser expects."""
    if isinstance(n, int):
        return str(n)
    return f"{n:.3f}".rstrip("0").rstrip(".") or "0"


def _absolute_tls_paths(s: Settings) -> dict[str, str]:
    """TLS files are relative to where gristmill was started, as other file settings."""
    names = ("ssl_certfile", "ssl_keyfile", "ssl_ca_certs")
    return {n: os.path.abspath(getattr(s, n)) for n in names if getattr(s, n)}


def _check_tls(s: Settings) -> None:
    """Load the TLS files once before forking, so a bad one is one clear error (exit 2)."""
    if not s.ssl_certfile:
        return
    from . import _core

    try:
        _core.check_tls(s)
    except ValueError as e:
        raise ConfigError(f"TLS: {e}") from None
