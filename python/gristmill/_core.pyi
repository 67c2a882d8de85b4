"""Types of the compiled extension ``gristmill._core`` (the Rust core).

Everything the ``#[pymodule]`` in ``src/lib.rs`` exports is described here, and
``make lint`` checks this file against the built module with ``mypy.stubtest``, so the
two cannot drift apart. Only ``serve``, ``check_tls``, the metrics functions and
``MetricsSegment`` (for ``gristmill.metrics``) and the exceptions are called from Python
code; the classes are made by the core and handed to the application (``Input`` is
``wsgi.input``, ``StartResponse`` is ``start_response``, ``HttpProtocol`` and
``WsProtocol`` own ASGI's ``receive`` and ``send``) or to ``gristmill._asgi``
(``Driver``).
"""

import os
from collections.abc import Awaitable, Callable
from typing import IO, Any, ClassVar, NoReturn, final

from .settings import Settings

# pyo3 lists every name the module adds, in the order src/lib.rs adds them.
__all__ = [
    "__version__",
    "serve",
    "check_tls",
    "immortalize",
    "can_immortalize",
    "metrics_attach",
    "metrics_layout",
    "MetricsSegment",
    "FileWrapper",
    "Input",
    "StartResponse",
    "Driver",
    "HttpProtocol",
    "Ready",
    "WsProtocol",
    "RequestBodyError",
    "RequestBodyTooLarge",
    "ClientDisconnected",
    "RequestBodyTimeout",
]

__version__: str

def serve(
    app: Callable[..., Any],
    settings: Settings,
    fds: list[int],
    ready_fd: int,
    event_loop: Any = None,
    state: dict[str, Any] | None = None,
    context: Any = None,
    driver: Driver | None = None,
    handoff: tuple[int, int] | None = None,
) -> None:
    """Serve ``app`` on the inherited listening sockets ``fds`` until told to stop.

    ``settings.interface`` must already be resolved (``"wsgi"`` or ``"asgi"``): the core
    runs in ``settings.execution_mode`` (``gristmill.settings.ExecutionMode``). ASGI
    also needs ``event_loop`` and takes lifespan's ``state`` and ``context``. In
    ``asgi-loop-thread`` the loop runs in another thread. ``asgi-driven`` needs
    ``driver`` (and no other mode takes one): the loop is not running yet and ``serve``
    runs it on this thread, its selector (``gristmill._asgi.DrivenSelector``) turning
    the driver's runtime, and returns with the loop stopped. The core takes the
    listening ``fds`` over and closes them when it stops accepting, so the caller must
    not close or reuse them. ``ready_fd`` (when it is not -1) is the pipe to the
    supervisor: ``b"1"`` is written once every listener accepts, ``b"M"`` once the
    worker has served ``settings.max_requests`` requests (when not 0); the fd is closed
    when serving ends. Blocks with the GIL released.
    SIGTERM starts a graceful shutdown (stop accepting, finish in-flight requests within
    ``settings.graceful_timeout``); SIGUSR2 the same for a worker whose replacement
    serves already, which passes its idle HTTP/1.1 connections on through ``handoff``
    (the sending and receiving ends of a ``SOCK_SEQPACKET`` pair shared by the
    workers; the core takes them over), where the workers that stay take them;
    SIGQUIT stops at once; the worker also stops
    gracefully when its parent process goes away. Returns when stopped. Raises
    ``OSError`` when a listener fd is unusable or the TLS files cannot be loaded.
    """

def check_tls(settings: Settings) -> None:
    """Load the TLS certificate chain, key and client CAs of ``settings`` without serving.

    A no-op without ``ssl_certfile``. Raises ``ValueError`` naming the file and the
    problem (unreadable, not PEM, encrypted without a password, wrong password, or a key
    that does not match the certificate).
    """

def immortalize(objects: list[Any]) -> int:
    """Make every object of ``objects`` immortal (CPython 3.12-3.13, PEP 683): its
    reference count is never written again and it is never freed. Returns how many, 0
    where the interpreter is not one of those (see :func:`can_immortalize`)."""

def can_immortalize() -> bool:
    """Whether :func:`immortalize` does anything on this interpreter."""

@final
class FileWrapper:
    """``wsgi.file_wrapper``: sends a file from Rust when it has a usable ``fileno()``."""

    def __new__(cls, filelike: IO[bytes], blksize: int = 8192) -> FileWrapper: ...
    def __iter__(self) -> FileWrapper: ...
    def __next__(self) -> bytes: ...
    def close(self) -> None:
        """Close the wrapped object, as PEP 3333 requires of the server."""

@final
class Input:
    """``wsgi.input``: the request body, read from the connection as the application asks.

    A read raises a :class:`RequestBodyError` subclass when the body cannot be had; every
    later read raises it again.
    """

    def read(self, size: int | None = None) -> bytes:
        """Read up to ``size`` bytes, or everything to the end when ``size`` is omitted or -1."""

    def readline(self, size: int | None = None) -> bytes:
        """Read one line (up to and including ``\\n``), at most ``size`` bytes when given."""

    def readlines(self, hint: int | None = None) -> list[bytes]:
        """Read lines until the end, or until about ``hint`` bytes were read."""

    def __iter__(self) -> Input: ...
    def __next__(self) -> bytes: ...

@final
class StartResponse:
    """The ``start_response`` callable of one WSGI request (PEP 3333)."""

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        """``start_response(status, response_headers, exc_info=None)`` → ``write``."""

    def write(self, data: bytes) -> None:
        """The PEP 3333 ``write()`` callable: sends ``data`` now, headers first."""

@final
class Ready:
    """An awaitable that is already complete: ``receive()`` and ``send()`` return one
    when the answer is at hand, so awaiting it does not suspend the task."""

    def __await__(self) -> Ready: ...
    def __iter__(self) -> Ready: ...
    def __next__(self) -> NoReturn: ...
    def send(self, _value: object) -> NoReturn:
        """Generators' ``send``: awaiting drives the iterator with ``send(None)``."""

@final
class Driver:
    """The runtime a one-thread ASGI worker turns from its event loop's selector."""

    LOOP_FDS: ClassVar[int]
    """``turn()`` flag: select the loop's own descriptors."""
    ENDED: ClassVar[int]
    """``turn()`` flag: the server stopped (stop the loop)."""

    def __new__(cls) -> Driver: ...
    def watch(self, fd: int) -> None:
        """Watch the event loop's selector descriptor ``fd`` (an epoll instance)."""

    def turn(self, timeout: float | None = None) -> int:
        """Turn the runtime for up to ``timeout`` seconds (None: no limit, 0: one pass
        that does not sleep), run the Python work it produced, and return a bit set of
        :attr:`LOOP_FDS` and :attr:`ENDED`."""

@final
class HttpProtocol:
    """The ASGI ``receive``/``send`` pair of one HTTP request."""

    def receive(self) -> Awaitable[dict[str, Any]]:
        """ASGI ``receive()``."""

    def send(self, message: dict[str, Any]) -> Awaitable[None]:
        """ASGI ``send(message)``; raises :class:`ClientDisconnected` once the client left."""

    def finished(self, exc: BaseException | None = None) -> None:
        """Called by ``gristmill._asgi.run_app`` when the application returns or raises."""

    def timed_out(self, timeout: float) -> bool:
        """Called by ``gristmill._asgi.run_app_within`` at the ``--request-timeout``
        deadline: answers 504 or aborts the response; ``True``: cancel the task."""

@final
class WsProtocol:
    """The ASGI ``receive``/``send`` pair of one WebSocket connection."""

    def receive(self) -> Awaitable[dict[str, Any]]:
        """ASGI ``receive()``."""

    def send(self, message: dict[str, Any]) -> Awaitable[None]:
        """ASGI ``send(message)``; raises :class:`ClientDisconnected` once the client left."""

    def finished(self, exc: BaseException | None = None) -> None:
        """Called by ``gristmill._asgi.run_app`` when the application returns or
        raises."""

    def timed_out(self, timeout: float) -> bool:
        """Called by ``gristmill._asgi.run_app_within`` at the ``--request-timeout``
        deadline: a handshake still undecided gets 504 (``True``: cancel the task); an
        accepted socket is left alone (``False``)."""

class RequestBodyError(OSError):
    """The request body could not be read: malformed framing or the client went away."""

class RequestBodyTooLarge(RequestBodyError):
    """The request body grew past ``max_body_size``."""

class ClientDisconnected(RequestBodyError):
    """The client went away: the request body ended early, or an ASGI ``send()`` (HTTP or
    WebSocket) found the connection closed."""

class RequestBodyTimeout(RequestBodyError):
    """No bytes of the request body arrived for ``body_read_timeout``."""

def metrics_attach(path: str | os.PathLike[str]) -> None:
    """Create this worker's metrics segment at ``path``; the core counts into it from
    then on (``--metrics-bind``). Raises ``OSError`` if it cannot be made."""

def metrics_layout() -> dict[str, Any]:
    """The metrics slot layout: ``version``, ``slots``, ``families`` (``(name, kind,
    help, label names, [(label values, slot)])``), ``duration`` (``(bucket bounds in
    seconds, first bucket slot, sum slot)``) and ``counters`` (the counter slots)."""

@final
class MetricsSegment:
    """A mapped metrics segment (``src/metrics/shm.rs``): a worker's, or the retired
    one the supervisor keeps."""

    def __new__(cls, path: str | os.PathLike[str], create: bool = False) -> MetricsSegment:
        """Open the segment at ``path`` (``OSError`` unless complete and of this
        layout); with ``create``, make a new retired segment there."""

    @property
    def pid(self) -> int:
        """The writer's pid."""

    @property
    def interface(self) -> int:
        """0 unknown, 1 WSGI, 2 ASGI."""

    @property
    def state(self) -> str:
        """``live``, ``folded`` (counted in the retired segment) or ``retired``."""

    @property
    def seq(self) -> int:
        """The retired segment's fold sequence number (odd during a fold)."""

    def values(self) -> list[int]:
        """Every slot's value."""

    def add(self, slot: int, n: int) -> None:
        """Add ``n`` to ``slot``."""

    def fold(self, worker: MetricsSegment) -> None:
        """Add the counters of ``worker`` (exited) into this segment; mark it folded."""
