"""One worker process: clean argv, load the application, run the Rust server.

Runs in the child right after ``os.fork()`` in the supervisor and never returns into the
supervisor's stack: every path ends in ``os._exit``. Exit codes the supervisor reads:
0 stopped normally, 3 the application could not be loaded (do not respawn), 1 anything
else.

An ASGI worker says so on its pipe to the supervisor (``_warm.MSG_ASGI``) before the
core reports it ready, so the supervisor can import the ASGI modules once for the next
workers instead of each of them importing them again (``_warm.py``).
"""

from __future__ import annotations

import _signal
import contextlib
import fcntl
import logging
import os
import resource
import signal
from collections.abc import Callable
from typing import Any, NoReturn

from . import _warm
from .errors import AppLoadError
from .settings import ExecutionMode, Settings

__all__ = ["run", "EXIT_OK", "EXIT_FAILED", "EXIT_APP_LOAD"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_APP_LOAD = AppLoadError.exit_code

log = logging.getLogger("gristmill.error")


def reset_signals() -> None:
    """Give the worker the dispositions the Rust core expects.

    SIGINT is ignored: Ctrl-C reaches the whole process group, and the supervisor turns
    it into an orderly SIGTERM per worker. SIGHUP/SIGTTIN/SIGTTOU are the supervisor's.
    SIGUSR1 (reopen the log files) is ignored until the core listens for it.
    SIGTERM/SIGQUIT (and SIGUSR2, which the supervisor sends only to a worker that
    serves) are default until the core installs its own handlers, so a worker
    still importing the application simply dies when told to stop.
    """
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1):
        _signal.signal(sig, _signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGCHLD):
        _signal.signal(sig, _signal.SIG_DFL)


#: ``pthread_sigmask`` returning plain signal numbers. ``signal``'s own wrappers (this one
#: and ``signal.signal``) turn each number they return into an enum member; in a process
#: just forked, that first touches, so copies, pages of the enum machinery for nothing.
#: The spawn path (``Supervisor._spawn``, :func:`reset_signals`) runs on every
#: replacement, so it calls the C functions underneath.
sigmask = _signal.pthread_sigmask


#: Descriptors a worker holds besides its connections: listeners, the runtime's epoll
#: and eventfds, pipes, log files, files being served.
FD_HEADROOM = 64


def presize_fd_table(max_connections: int) -> int:
    """Grow this process's descriptor table now, while it has a single thread, to hold
    ``max_connections`` connections (within ``RLIMIT_NOFILE``); return the descriptor
    number it was grown to hold (0 if it was left alone).

    The kernel grows the table when a new descriptor's number does not fit (64 slots,
    then doubling), and in a process with several threads it then waits out an RCU
    grace period (``synchronize_rcu`` in ``expand_fdtable``), milliseconds during which
    the accepting thread sleeps. A new worker meets that at once under load: a
    replacement takes over the clients of the worker it replaces, which reconnect
    together. In the recycling bench row every replacement stalled like that (p99 ~17 ms
    instead of ~6 ms, ~7 % of the CPU idle). Grown before any thread exists, the table
    costs no wait, and it never shrinks."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_connections + FD_HEADROOM
    if soft != resource.RLIM_INFINITY:
        want = min(want, soft - 1)
    if want < 64:
        return 0
    probe = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.close(fcntl.fcntl(probe, fcntl.F_DUPFD_CLOEXEC, want))
    except OSError:
        return 0
    finally:
        os.close(probe)
    return want


def run(
    settings: Settings,
    fds: list[int],
    ready_fd: int,
    app: Callable[..., Any] | None = None,
    handoff: tuple[int, int] | None = None,
) -> NoReturn:
    """Load ``app`` (unless given) and serve it on ``fds``; exit the process.

    ``handoff``: the supervisor's socket pair (sending, receiving end) through which a
    replaced worker passes its idle connections to the workers that stay."""
    code = EXIT_FAILED
    try:
        # First, before the application or the core can start a thread.
        presize_fd_table(settings.max_connections)
        if settings.worker_timeout:
            # --worker-timeout kills a hung worker with SIGABRT: its stacks go to the log.
            from . import watchdog

            watchdog.enable_faulthandler()
        code = _serve(settings, fds, ready_fd, app, handoff)
    except AppLoadError as e:
        # The message carries the traceback; one record keeps it together in the log.
        log.error("%s", e)
        code = EXIT_APP_LOAD
    except BaseException:
        log.exception("Worker %d failed", os.getpid())
        code = EXIT_FAILED
    finally:
        # os._exit skips atexit and buffered-stream flushing; do what matters by hand.
        try:
            logging.shutdown()
        finally:
            os._exit(code)


def _serve(
    settings: Settings,
    fds: list[int],
    ready_fd: int,
    app: Callable[..., Any] | None,
    handoff: tuple[int, int] | None,
) -> int:
    from . import loader

    if app is None:
        app = loader.load_app(settings)
    iface = loader.resolve_interface(app, settings.interface, settings.target)
    settings = settings.replace(interface=iface)
    if iface == "asgi":
        # The supervisor then imports what the next ASGI workers need (``_warm.py``).
        _tell(ready_fd, _warm.MSG_ASGI)

    from . import _core

    if iface == "wsgi":
        _warm.freeze()
        _core.serve(app, settings, fds, ready_fd, handoff=handoff)
        return EXIT_OK
    return _serve_asgi(loader.as_asgi3(app, settings.target), settings, fds, ready_fd, handoff)


def _tell(ready_fd: int, msg: bytes) -> None:
    """Write ``msg`` to the supervisor's pipe (the core writes its own bytes there later)."""
    if ready_fd >= 0:
        with contextlib.suppress(OSError):
            os.write(ready_fd, msg)


def _serve_asgi(
    app: Callable[..., Any],
    settings: Settings,
    fds: list[int],
    ready_fd: int,
    handoff: tuple[int, int] | None,
) -> int:
    """Set up the event loop for the execution mode (``Settings.execution_mode``: on this
    thread, turning the core's runtime, or in a thread of its own), bracket serving with
    lifespan."""
    from . import _asgi, _core

    driver = None
    runner: _asgi.LoopThread | _asgi.DrivenLoop
    if settings.execution_mode is ExecutionMode.ASGI_DRIVEN:
        driver = _core.Driver()
        runner = _asgi.DrivenLoop(driver)
    else:
        runner = _asgi.LoopThread(_asgi.new_event_loop(settings.loop))
    runner.start()
    lifespan = _asgi.Lifespan(app, settings.lifespan, runner)
    lifespan.startup()  # raises LifespanFailed (an AppLoadError): exit 3
    _warm.freeze()
    state = lifespan.state if lifespan.supported else None
    context = lifespan.context if lifespan.context is not None and len(lifespan.context) else None
    try:
        _core.serve(
            app,
            settings,
            fds,
            ready_fd,
            event_loop=runner.loop,
            state=state,
            context=context,
            driver=driver,
            handoff=handoff,
        )
    finally:
        lifespan.shutdown(settings.graceful_timeout)
        runner.stop()
    return EXIT_OK
