"""Types of the compiled extension ``gristmill._core`` (the Rust core)."""

from collections.abc import Callable, Iterator
from typing import IO, Any

from .settings import Settings

__version__: str

def serve(
    app: Callable[..., Any],
    settings: Settings,
    fds: list[int],
    ready_fd: int,
    event_loop: Any = None,
    state: dict[str, Any] | None = None,
    context: Any = None,
) -> None:
    """Serve ``app`` on the inherited listening sockets ``fds`` until told to stop.

    ``settings.interface`` must already be resolved (``"wsgi"`` or ``"asgi"``; ASGI also
    needs ``event_loop``, running in another thread, and takes lifespan's ``state`` and
    ``context``). The core takes the listening ``fds`` over and closes them when it stops
    accepting, so the caller must not close or reuse them. Once every listener accepts, one byte is
    written to ``ready_fd`` (when it is not -1) and the fd is closed. Blocks with the GIL
    released. SIGTERM starts a graceful shutdown (stop accepting, finish in-flight
    requests within ``settings.graceful_timeout``); SIGQUIT stops at once; the worker
    also stops gracefully when its parent process goes away. Returns when stopped.
    Raises ``OSError`` when a listener fd is unusable or the TLS files cannot be loaded.
    """

def check_tls(settings: Settings) -> None:
    """Load the TLS certificate chain, key and client CAs of ``settings`` without serving.

    A no-op without ``ssl_certfile``. Raises ``ValueError`` naming the file and the
    problem (unreadable, not PEM, encrypted without a password, wrong password, or a key
    that does not match the certificate).
    """

class FileWrapper:
    """``wsgi.file_wrapper``: sends a file from Rust when it has a usable ``fileno()``."""

    def __init__(self, filelike: IO[bytes], blksize: int = 8192) -> None: ...
    def __iter__(self) -> Iterator[bytes]: ...
    def __next__(self) -> bytes: ...
    def close(self) -> None: ...

class RequestBodyTooLarge(OSError):
    """Raised by ``wsgi.input`` when the body grows past ``max_body_size``."""

class ClientDisconnected(OSError):
    """Raised by ``wsgi.input`` when the client goes away or sends a malformed body."""

class RequestBodyTimeout(OSError):
    """Raised by ``wsgi.input`` when no body bytes arrive for ``body_read_timeout``."""
