"""``--reload``: watch source files and ask the supervisor for a rolling restart.

A thread runs :func:`watchfiles.watch` over the ``--reload-dir`` directories (Rust's
``notify`` underneath: inotify here, no polling) and keeps the changes whose file name
matches a ``--reload-include`` pattern and neither it nor a parent directory matches a
``--reload-exclude`` one. For each batch it logs the files and writes a byte to a pipe
the supervisor's loop selects on; the supervisor then restarts the workers as on SIGHUP.
Only workers import the application, so the new ones load the new code, and a change
that breaks the import leaves the old workers serving.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from typing import Any

from .errors import ConfigError
from .settings import Settings

__all__ = ["Reloader"]

log = logging.getLogger("gristmill.error")

#: Directories never worth a restart, whatever the patterns say.
_ALWAYS_IGNORED = frozenset({"__pycache__", ".git", ".hg", ".svn", ".venv", "node_modules"})


class Reloader:
    """Watches the files; :attr:`fd` becomes readable when the workers should restart."""

    def __init__(self, settings: Settings) -> None:
        try:
            import watchfiles
        except ImportError:
            raise ConfigError(
                "--reload needs watchfiles: pip install 'gristmill[reload]'"
            ) from None
        self._watchfiles: Any = watchfiles
        # The supervisor made --reload-dir absolute and entered --working-dir already.
        self.dirs = [os.path.abspath(d) for d in (settings.reload_dir or [os.getcwd()])]
        for d in self.dirs:
            if not os.path.isdir(d):
                raise ConfigError(f"--reload-dir {d}: not a directory")
        self.include = list(settings.reload_include)
        self.exclude = list(settings.reload_exclude)
        self._stop = threading.Event()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._thread = threading.Thread(target=self._run, name="gristmill-reload", daemon=True)

    @property
    def fd(self) -> int:
        return self._r

    def pipe_fds(self) -> list[int]:
        """Both ends of the pipe (a forked worker closes them)."""
        return [self._r, self._w]

    def start(self) -> None:
        log.info(
            "Watching %s for changes to %s",
            ", ".join(self.dirs),
            ", ".join(self.include),
        )
        self._thread.start()

    def wants(self, path: str) -> bool:
        """Whether a change to ``path`` calls for a restart."""
        # os.path, not pathlib: the supervisor (and so every worker) then does without
        # pathlib and the modules it imports.
        head, name = os.path.split(os.path.normpath(path))
        parts = [part for part in head.split(os.sep) if part and part != "."]
        if any(part in _ALWAYS_IGNORED for part in parts):
            return False
        for part in (*parts, name):
            if any(fnmatch.fnmatch(part, pat) for pat in self.exclude):
                return False
        return any(fnmatch.fnmatch(name, pat) for pat in self.include)

    def _run(self) -> None:
        changes_of = self._watchfiles.watch(
            *self.dirs,
            watch_filter=lambda _change, path: self.wants(path),
            stop_event=self._stop,
            raise_interrupt=False,
        )
        try:
            for changes in changes_of:
                paths = sorted({os.path.relpath(p, self.dirs[0]) for _, p in changes})
                log.info("Detected changes in %s; reloading", ", ".join(paths))
                try:
                    os.write(self._w, b"r")
                except BlockingIOError:
                    pass  # a restart is already requested
        except Exception:
            log.exception("--reload: watching the files failed; reloading is off")

    def take(self) -> bool:
        """Consume the pending requests; whether there was one."""
        got = False
        while True:
            try:
                data = os.read(self._r, 512)
            except BlockingIOError:
                return got
            if not data:
                return got
            got = True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in (self._r, self._w):
            os.close(fd)
