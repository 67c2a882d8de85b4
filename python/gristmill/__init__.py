"""gristmill: a Python application server with a Rust core.

Run it as ``gristmill TARGET`` (see ``gristmill --help``), or from Python with
:func:`serve`. Settings are described once, in :class:`Settings`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any

from .errors import AppLoadError, ConfigError, GristmillError, ServerError
from .settings import Settings, validate

try:
    __version__ = metadata.version("gristmill")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "serve",
    "Settings",
    "__version__",
    "GristmillError",
    "ConfigError",
    "AppLoadError",
    "ServerError",
]


def serve(target_or_app: str | Callable[..., Any], **settings: Any) -> int:
    """Serve a target (``"myapp:application"``) or an application object until stopped.

    ``settings`` are :class:`Settings` fields (``workers=2``, ``port=0``); logging is
    left as the caller configured it. An application object is inherited by the forked
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
    try:
        config = validate(Settings(**settings))
    except TypeError as e:  # an unknown keyword
        raise ConfigError(f"serve(): {e}") from None
    return Supervisor(config, app=app).run()
