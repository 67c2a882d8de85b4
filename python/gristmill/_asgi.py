"""The Python half of the ASGI bridge: the event loop, the request task and lifespan.

The Rust core hands each request and each WebSocket to :func:`run_app` as a task on the
worker's event loop. The loop runs either on the worker's main thread and turns the Rust
runtime itself through its selector (:class:`DrivenLoop`, one thread for everything), or
in a thread of its own beside the runtime's threads (:class:`LoopThread`); which one is
``Settings.execution_mode``'s decision, not this module's. Lifespan (:class:`Lifespan`)
runs on the same loop before the worker accepts connections and after it stopped, so
``startup``/``shutdown`` bracket all traffic, and the ``state`` it fills is copied into
every request's scope.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import os
import selectors
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import AppLoadError

__all__ = [
    "run_app",
    "run_app_within",
    "LoopThread",
    "DrivenLoop",
    "DrivenSelector",
    "Lifespan",
    "LifespanFailed",
    "new_event_loop",
]

log = logging.getLogger("gristmill.error")

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
_LIFESPAN_SENDS = frozenset(
    {
        "lifespan.startup.complete",
        "lifespan.startup.failed",
        "lifespan.shutdown.complete",
        "lifespan.shutdown.failed",
    }
)


async def run_app(app: Callable[..., Awaitable[None]], scope: dict, proto: Any) -> None:
    """Run the application for one HTTP request or WebSocket connection; the core's
    protocol object (``HttpProtocol``, ``WsProtocol``) is told how it ended and checks
    or finishes the rest."""
    try:
        await app(scope, proto.receive, proto.send)
    except BaseException as exc:
        proto.finished(exc)
        if not isinstance(exc, Exception):
            raise  # cancellation and interpreter exits keep propagating
    else:
        proto.finished(None)


def run_app_within(
    timeout: float,
) -> Callable[[Callable[..., Awaitable[None]], dict, Any], Awaitable[None]]:
    """:func:`run_app` bounded by ``--request-timeout``: ``timeout`` seconds after the
    task started, the protocol object answers for the application (``timed_out``: a
    504, or an aborted response) and, if it says so, the task is cancelled. The
    cancellation is ours, so it ends the task quietly; one that comes from elsewhere
    propagates as in :func:`run_app`. An application that ignores the cancellation
    keeps its task, but its client has its answer."""

    async def run_app_timed(app: Callable[..., Awaitable[None]], scope: dict, proto: Any) -> None:
        task = asyncio.current_task()
        expired = False

        def expire() -> None:
            nonlocal expired
            if proto.timed_out(timeout) and task is not None:
                expired = True
                task.cancel()

        timer = asyncio.get_running_loop().call_later(timeout, expire)
        try:
            await app(scope, proto.receive, proto.send)
        except BaseException as exc:
            proto.finished(exc)
            if not isinstance(exc, Exception) and not (
                expired and isinstance(exc, asyncio.CancelledError)
            ):
                raise
        else:
            proto.finished(None)
        finally:
            timer.cancel()

    return run_app_timed


def new_event_loop(choice: str) -> asyncio.AbstractEventLoop:
    """A new loop: uvloop for ``uvloop`` (and ``auto`` when installed), else asyncio."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise AppLoadError(
                    "--loop uvloop was asked for but uvloop is not installed (pip install uvloop)"
                ) from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._thread = threading.Thread(target=self._run, name="gristmill-asgi-loop", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        except BaseException:
            # SystemExit (or the like) out of an application task ends the loop, and
            # with it this worker: it exits with a failure and the supervisor starts
            # another, as when the loop runs on the main thread.
            log.exception("The event loop stopped on an exception; the worker exits")
            logging.shutdown()
            os._exit(1)

    def start(self) -> None:
        self._thread.start()

    def run(self, coro: Awaitable[Any], timeout: float | None = None) -> Any:
        """Run ``coro`` on the loop and wait for its result from this thread."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)


class DrivenSelector(selectors.EpollSelector):
    """An epoll selector whose ``select`` turns the Rust runtime while it waits.

    The loop's own descriptors (its self-pipe, ``add_reader`` users) stay in this epoll
    instance, which the runtime watches; they are polled only when it signalled.
    """

    def __init__(self, driver: Any) -> None:
        super().__init__()
        self._driver = driver
        # The flags of Driver.turn(), defined by the core.
        self._loop_fds: int = driver.LOOP_FDS
        self._ended: int = driver.ENDED
        self._again = False
        self.on_ended: Callable[[], None] | None = None
        driver.watch(self.fileno())

    def select(self, timeout: float | None = None) -> list:  # type: ignore[override]
        flags = self._driver.turn(0 if self._again else timeout)
        if flags & self._ended and self.on_ended is not None:
            self.on_ended()
        if flags & self._loop_fds or self._again:
            ready = super().select(0)
            # Level-triggered: what is still ready after its callback ran is seen by
            # the next poll, which the runtime's signal may not announce again.
            self._again = bool(ready)
            return ready
        return []


class DrivenLoop:
    """An asyncio loop on this thread whose selector turns the Rust runtime (``driver``)."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.selector = DrivenSelector(driver)
        self.loop = asyncio.SelectorEventLoop(self.selector)
        self.selector.on_ended = self.loop.stop
        asyncio.set_event_loop(self.loop)

    def start(self) -> None:
        """Nothing to start: the loop runs when the core serves, on this thread."""

    def run(self, coro: Awaitable[Any], timeout: float | None = None) -> Any:
        """Run ``coro`` on the loop until it is done (or ``timeout`` passed)."""
        waited = coro if timeout is None else asyncio.wait_for(coro, timeout)
        try:
            return self.loop.run_until_complete(waited)
        except asyncio.TimeoutError:
            raise concurrent.futures.TimeoutError from None

    def stop(self, timeout: float = 5.0) -> None:
        self.loop.close()


class LifespanFailed(AppLoadError):
    """Lifespan startup failed, or lifespan was required and is not supported."""


class Lifespan:
    """The ASGI lifespan protocol, driven from the worker's main thread.

    ``mode`` is the ``--lifespan`` setting: ``on`` requires support, ``auto`` carries on
    without it when the application raises before answering ``startup``, ``off`` never
    sends lifespan events.
    """

    def __init__(
        self, app: Callable[..., Awaitable[None]], mode: str, runner: LoopThread | DrivenLoop
    ):
        self.app = app
        self.mode = mode
        self.runner = runner
        self.state: dict[str, Any] = {}
        self.context: contextvars.Context | None = None
        self.supported = mode != "off"
        self._receive: asyncio.Queue[dict] | None = None
        self._sent: asyncio.Queue[dict] | None = None
        self._task: asyncio.Task[None] | None = None

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": dict(ASGI_VERSION), "state": self.state}
        assert self._receive is not None and self._sent is not None
        try:
            await self.app(scope, self._receive.get, self._send)
        except BaseException as exc:  # noqa: BLE001 - reported through the queue
            await self._sent.put({"type": "gristmill.lifespan.error", "exc": exc})
        else:
            await self._sent.put({"type": "gristmill.lifespan.returned"})

    async def _send(self, message: dict) -> None:
        assert self._sent is not None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind not in _LIFESPAN_SENDS:
            # Raised into the application: in `auto` mode an application that answers
            # the lifespan scope with anything else simply does not support lifespan.
            raise RuntimeError(
                f"Expected ASGI message 'lifespan.startup.complete', "
                f"'lifespan.startup.failed', 'lifespan.shutdown.complete' or "
                f"'lifespan.shutdown.failed', but got {kind!r}."
            )
        if kind == "lifespan.startup.complete":
            # Context variables the application set while starting up are seen by every
            # request: each request task starts in a copy of this context.
            self.context = contextvars.copy_context()
        await self._sent.put(message)

    async def _start(self) -> dict:
        self._receive = asyncio.Queue()
        self._sent = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._receive.put({"type": "lifespan.startup"})
        return await self._sent.get()

    async def _stop(self) -> dict:
        assert self._receive is not None and self._sent is not None
        await self._receive.put({"type": "lifespan.shutdown"})
        return await self._sent.get()

    def startup(self) -> None:
        """Send ``lifespan.startup`` and wait for the answer; raise if it failed."""
        if not self.supported:
            return
        reply = self.runner.run(self._start())
        kind = reply.get("type")
        if kind == "lifespan.startup.complete":
            return
        if kind == "lifespan.startup.failed":
            raise LifespanFailed(f"ASGI lifespan startup failed: {reply.get('message', '')}")
        if kind == "gristmill.lifespan.error" and self.mode == "auto":
            # The application does not speak lifespan (it raised on the scope type).
            self.supported = False
            log.debug(
                "ASGI lifespan not supported by the application (%r); continuing without",
                reply["exc"],
            )
            return
        if kind == "gristmill.lifespan.error":
            exc = reply["exc"]
            raise LifespanFailed(
                f"ASGI lifespan startup raised {type(exc).__name__}: {exc} (--lifespan on)"
            ) from exc
        if kind == "gristmill.lifespan.returned" and self.mode == "auto":
            self.supported = False
            log.debug("ASGI application returned from lifespan without answering startup")
            return
        raise LifespanFailed(
            f"ASGI lifespan: expected 'lifespan.startup.complete' or "
            f"'lifespan.startup.failed', but got {kind!r}"
        )

    def shutdown(self, timeout: float) -> None:
        """Send ``lifespan.shutdown`` and wait (up to ``timeout``); log failures."""
        if not self.supported or self._task is None or self._task.done():
            return
        try:
            reply = self.runner.run(self._stop(), timeout)
        except concurrent.futures.TimeoutError:
            log.error("ASGI lifespan shutdown did not finish within %.0f s", timeout)
            return
        kind = reply.get("type")
        if kind == "lifespan.shutdown.failed":
            log.error("ASGI lifespan shutdown failed: %s", reply.get("message", ""))
        elif kind == "gristmill.lifespan.error":
            exc = reply["exc"]
            log.error("ASGI lifespan shutdown raised", exc_info=exc)
        elif kind != "lifespan.shutdown.complete":
            log.error(
                "ASGI lifespan: expected 'lifespan.shutdown.complete' or "
                "'lifespan.shutdown.failed', but got %r",
                kind,
            )
