"""Logging setup: the default configuration, ``--log-config``, and ``wsgi.errors``.

gristmill logs only through the standard :mod:`logging` module, on two loggers:
``gristmill.error`` (server events, application errors; stderr by default) and
``gristmill.access`` (one line per request; stdout by default). The Rust core looks both up
with ``logging.getLogger`` and calls :func:`wsgi_errors_stream` once per worker, so a
``--log-config`` file reconfigures everything the server prints.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import threading
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError
from .settings import Settings

__all__ = [
    "access_log_fd",
    "configure",
    "default_config",
    "load_config_file",
    "reopen_files",
    "wsgi_errors_stream",
]

ERROR_LOGGER = "gristmill.error"
ACCESS_LOGGER = "gristmill.access"

ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"


def default_config(settings: Settings) -> dict[str, Any]:
    """The dictConfig used when no ``--log-config`` is given."""
    return {
        "version": 1,
        # The application's own loggers, created at import before this runs in a
        # programmatic `serve()`, must keep working.
        "disable_existing_loggers": False,
        "formatters": {
            "error": {"format": ERROR_FORMAT, "datefmt": DATE_FORMAT},
            "access": {"format": "%(message)s"},
        },
        "handlers": {
            "error": {
                "class": "logging.StreamHandler",
                "formatter": "error",
                "stream": "ext://sys.stderr",
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            ERROR_LOGGER: {
                "level": settings.log_level.upper(),
                "handlers": ["error"],
                "propagate": False,
            },
            ACCESS_LOGGER: {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
    }


def configure(settings: Settings) -> None:
    """Apply ``--log-config`` if given, else :func:`default_config`."""
    config = load_config_file(settings.log_config) if settings.log_config else None
    try:
        logging.config.dictConfig(config or default_config(settings))
    except (ValueError, TypeError, AttributeError, ImportError) as e:
        raise ConfigError(f"invalid logging configuration in {settings.log_config}: {e}") from None


def load_config_file(path: str) -> dict[str, Any]:
    """Read a dictConfig mapping from a JSON, YAML or TOML file, chosen by extension."""
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".json":
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        elif ext in (".yaml", ".yml"):
            data = _load_yaml(path)
        elif ext == ".toml":
            data = _load_toml(path)
        else:
            raise ConfigError(
                f"cannot tell the format of log config {path}: use a .json, "
                ".yaml, .yml or .toml file"
            )
    except OSError as e:
        raise ConfigError(f"cannot read log config {path}: {e.strerror}") from None
    except ValueError as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ConfigError(f"invalid log config {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"log config {path} must be a mapping (a dictConfig), got {type(data).__name__}"
        )
    # Every dictConfig so far is version 1; not making users write it is kinder.
    data.setdefault("version", 1)
    return data


def _load_yaml(path: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            f"log config {path} is YAML, which needs PyYAML: "
            "pip install 'gristmill[yaml]' (or use JSON or TOML)"
        ) from None
    with open(path, encoding="utf-8") as f:
        try:
            return yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"invalid log config {path}: {e}") from None


def _load_toml(path: str) -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    with open(path, "rb") as f:
        return tomllib.load(f)


def reopen_files() -> int:
    """Reopen the file of every :class:`logging.FileHandler` (and subclass) in use, as
    SIGUSR1 asks after logrotate moved the files away; return how many were reopened.

    A handler that has not opened its file yet (``delay=True``) is left to open the new
    one when it first writes. Stream handlers (the default configuration) have nothing
    to reopen.
    """
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    handlers = {h for lg in loggers for h in lg.handlers if isinstance(h, logging.FileHandler)}
    reopened = 0
    for handler in handlers:
        handler.acquire()
        try:
            if handler.stream is None:
                continue
            old = handler.stream
            handler.stream = handler._open()
            old.close()
            reopened += 1
        finally:
            handler.release()
    if reopened:
        from . import watchdog

        watchdog.follow_reopened_logs()
    return reopened


def access_log_fd() -> int | None:
    """The file descriptor ``gristmill.access`` ends up writing to, when the core may
    write its lines there itself; ``None`` when every record must go through logging.

    That is the case when the configuration has the default's shape: the logger does not
    propagate and has no filters, and its one handler is a plain ``StreamHandler`` (not a
    subclass) with no filters, the default terminator and a ``%(message)s`` formatter —
    then logging would only write the line and a newline to the stream's descriptor.
    The stream is flushed first, so nothing written through it before comes after.
    """
    logger = logging.getLogger(ACCESS_LOGGER)
    if logger.propagate or logger.filters or len(logger.handlers) != 1:
        return None
    handler = logger.handlers[0]
    if (
        type(handler) is not logging.StreamHandler
        or handler.filters
        or handler.level > logging.INFO
        or handler.terminator != "\n"
    ):
        return None
    fmt = handler.formatter
    if fmt is not None and (
        type(fmt) is not logging.Formatter
        or type(fmt._style) is not logging.PercentStyle
        or fmt._fmt != "%(message)s"
    ):
        return None
    stream = handler.stream
    try:
        stream.flush()
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None  # not backed by a file descriptor (StringIO, a closed stream)
    return fd if isinstance(fd, int) and fd >= 0 else None


class _ErrorsStream:
    """``wsgi.errors``: a text stream that logs each line on ``gristmill.error``.

    PEP 3333 lets applications write arbitrary text; we buffer until a newline so one
    ``print(..., file=environ["wsgi.errors"])`` becomes one log record. Shared by the
    worker's threads, hence the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = ""
        self._logger = logging.getLogger(ERROR_LOGGER)

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"wsgi.errors.write() takes str, not {type(text).__name__}")
        with self._lock:
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._logger.error("%s", line)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            rest, self._buffer = self._buffer, ""
        if rest:
            self._logger.error("%s", rest)


_errors_stream: _ErrorsStream | None = None
_errors_lock = threading.Lock()


def wsgi_errors_stream() -> _ErrorsStream:
    """The per-process ``wsgi.errors`` stream (created on first use, in the worker)."""
    global _errors_stream
    with _errors_lock:
        if _errors_stream is None:
            _errors_stream = _ErrorsStream()
        return _errors_stream
