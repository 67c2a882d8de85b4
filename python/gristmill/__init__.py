"""gristmill: a Python application server with a Rust core.

Run it as ``gristmill TARGET`` (see ``gristmill --help``), or from Python with
:func:`serve`. Settings are described once, in :class:`Settings`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .errors import AppLoadError, ConfigError, GristmillError, ServerError
from .settings import Settings, env_fallbacks, validate


def _load_core() -> str:
    """Load the Rust core now and return its version ("0.0.0" when it is not built).

    Its allocator, mimalloc, reads its options once, as the core loads. Unless the
    environment says otherwise, its arenas are committed as they are used
    (``MIMALLOC_ARENA_EAGER_COMMIT=0``) rather than up front and marked for transparent
    huge pages: the huge pages cost a worker several MiB of resident memory for no
    measured speed (``bench/NOTES.md``). The variable is not left behind for the
    application.
    """
    ours = "MIMALLOC_ARENA_EAGER_COMMIT" not in os.environ
    if ours:
        os.environ["MIMALLOC_ARENA_EAGER_COMMIT"] = "0"
    try:
        from . import _core
    except ImportError:  # a source tree without a build: the supervisor says so
        return "0.0.0"
    finally:
        if ours:
            del os.environ["MIMALLOC_ARENA_EAGER_COMMIT"]
    return str(_core.__version__)


__version__ = _load_core()

__all__ = [
    "serve",
    "Settings",
    "__version__",
    "GristmillError",
    "ConfigError",
    "AppLoadError",
    "ServerError",
    "ClientDisconnected",
    "RequestBodyError",
    "RequestBodyTimeout",
    "RequestBodyTooLarge",
]

#: Raised to applications by the Rust core: ``ClientDisconnected`` from an ASGI ``send()``
#: once the client is gone (HTTP and WebSocket), the ``RequestBody*`` errors from
#: ``wsgi.input`` reads. All are ``OSError`` subclasses.
_CORE_ERRORS = frozenset(
    {"ClientDisconnected", "RequestBodyError", "RequestBodyTimeout", "RequestBodyTooLarge"}
)


def __getattr__(name: str) -> Any:
    # Looked up in the core on first use, so importing gristmill works in a source tree
    # that was not built (the supervisor then says how to build it).
    if name in _CORE_ERRORS:
        from . import _core

        return getattr(_core, name)
    raise AttributeError(f"module 'gristmill' has no attribute {name!r}")


def serve(target_or_app: str | Callable[..., Any], **settings: Any) -> int:
    """Serve a target (``"myapp:application"``) or an application object until stopped.

    ``settings`` are :class:`Settings` fields (``workers=2``, ``port=0``); logging is
    left as the caller configured it. ``GRISTMILL_*`` variables are not read, but
    ``FORWARDED_ALLOW_IPS`` is when ``forwarded_allow_ips`` is not given, as on the
    command line. An application object is inherited by the forked
    workers, so it is not imported again. Returns 0 after a graceful stop (SIGTERM or
    SIGINT), 1 after a forced one; raises :class:`GristmillError` when the server cannot
    start or keep running.
    """
    from .supervisor import Supervisor

    app = None
    if isinstance(target_or_app, str):
        settings["target"] = target_or_app
    else:
        app = target_or_app
    env_fallbacks(settings, os.environ)
    try:
        config = validate(Settings(**settings))
    except TypeError as e:  # an unknown keyword
        raise ConfigError(f"serve(): {e}") from None
    return Supervisor(config, app=app).run()
