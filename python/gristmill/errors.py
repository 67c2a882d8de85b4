"""gristmill's exception tree.

Only ``cli.py`` turns these into an exit code and one clear log line; everything else
raises them with a message that says what was wrong and what to do about it.
"""

from __future__ import annotations

__all__ = ["GristmillError", "ConfigError", "AppLoadError", "ServerError"]


class GristmillError(Exception):
    """Base of every error gristmill raises on purpose."""

    #: The process exit code ``cli.py`` uses for this error.
    exit_code = 1


class ConfigError(GristmillError):
    """A setting is missing, malformed or inconsistent."""

    exit_code = 2


class AppLoadError(GristmillError):
    """The application target could not be imported, found or called."""

    exit_code = 3


class ServerError(GristmillError):
    """The server could not start or keep running (bind failure, workers dying)."""

    exit_code = 1
