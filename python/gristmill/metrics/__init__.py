"""Prometheus metrics (``--metrics-bind``): the supervisor's side.

Each worker counts into a shared-memory segment of its own (``src/metrics/``, a file
in a private directory under ``/dev/shm``); a separate process, started here with
``python -m gristmill.metrics`` (exec'd, so it inherits no threads, runtime or
application from the supervisor), serves ``/metrics`` from every segment at once with
``prometheus-client``. Here the supervisor:

- binds the metrics socket (``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:PATH``), so a bad
  address stops the server at start-up with one clear error;
- names each worker's segment (the worker creates it, see :meth:`Metrics.attach_worker`);
- folds the counters of a worker that exited into the "retired" segment, so totals
  never go down across recycling, SIGHUP or crashes;
- counts worker starts and exits by reason in the retired segment;
- keeps the metrics process running, and stops it at the end.

Why shared memory rather than the supervisor collecting over pipes: see "Metrics" in
``docs/deployment.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from ..errors import ConfigError, ServerError

__all__ = ["Metrics", "parse_bind", "RETIRED", "worker_segment"]

log = logging.getLogger("gristmill.error")

#: The retired segment's file name in the segment directory.
RETIRED = "retired"
#: A metrics process that dies sooner than this after its start is not restarted.
_MIN_UPTIME = 5.0


def worker_segment(directory: str, pid: int) -> str:
    return os.path.join(directory, f"worker-{pid}")


def parse_bind(addr: str) -> tuple[str, Any]:
    """``("unix", path)`` or ``("tcp", (host, port))``; ConfigError if ``addr`` is not
    ``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:PATH``."""
    if addr.startswith("unix:"):
        path = addr[len("unix:") :]
        if not path:
            raise ConfigError(f"metrics_bind {addr!r}: empty socket path")
        return "unix", os.path.abspath(path)
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"metrics_bind {addr!r}: expected HOST:PORT, [IPV6]:PORT or unix:PATH")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"metrics_bind {addr!r}: put an IPv6 address in brackets")
    return "tcp", (host or "0.0.0.0", int(port))


def _bind(addr: str) -> tuple[socket.socket, str, str | None]:
    """The listening socket for ``addr``, how to show it, and a socket file we made."""
    kind, value = parse_bind(addr)
    if kind == "unix":
        path = str(value)
        with contextlib.suppress(FileNotFoundError):
            if _unix_in_use(path):
                raise ServerError(f"cannot serve metrics on unix:{path}: it is in use")
            os.unlink(path)  # a stale socket (or refuse below if it is not one)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(64)
        except OSError as e:
            sock.close()
            raise ServerError(f"cannot serve metrics on unix:{path}: {e.strerror or e}") from None
        return sock, f"unix:{path}", path
    host, port = value
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        raise ServerError(f"cannot serve metrics on {shown}: {e.strerror or e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(64)
    except OSError as e:
        sock.close()
        raise ServerError(f"cannot serve metrics on {shown}: {e.strerror or e}") from None
    port = sock.getsockname()[1]
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return sock, f"http://{shown}/metrics", None


def _unix_in_use(path: str) -> bool:
    import stat

    if not stat.S_ISSOCK(os.stat(path).st_mode):
        raise ServerError(f"cannot serve metrics on unix:{path}: the path exists, not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


class Metrics:
    """The supervisor's metrics: segments, worker events and the metrics process."""

    def __init__(self, bind: str) -> None:
        try:
            import prometheus_client  # noqa: F401
        except ImportError as e:
            raise ConfigError(
                f"--metrics-bind needs prometheus-client, which cannot be imported ({e}): "
                "pip install 'gristmill[metrics]'"
            ) from None
        from .. import _core

        self._core = _core
        layout = _core.metrics_layout()
        self._slot: dict[tuple[str, str], int] = {}
        for name, _kind, _help, _labels, series in layout["families"]:
            if name in ("gristmill_worker_starts", "gristmill_worker_exits"):
                for (value,), slot in series:
                    self._slot[(name, value)] = slot
        self.sock, self.display, self._uds = _bind(bind)
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        import tempfile  # here: a server without metrics does not load it (nor its workers)

        self.directory = tempfile.mkdtemp(prefix="gristmill-metrics-", dir=base)
        self.retired = _core.MetricsSegment(os.path.join(self.directory, RETIRED), create=True)
        self.pid = 0
        self._started = 0.0
        self._closed = False

    # --- the metrics process -----------------------------------------------------------

    def start_process(self) -> None:
        """Start ``python -m gristmill.metrics`` on the bound socket."""
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        fd = self.sock.fileno()
        cmd = [sys.executable, "-m", "gristmill.metrics", "--fd", str(fd)]
        cmd += ["--dir", self.directory, "--supervisor", str(os.getpid())]
        import subprocess

        proc = subprocess.Popen(cmd, pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)
        self.pid = proc.pid
        # The supervisor reaps its children itself (waitpid(-1)); the Popen object is
        # only the way to start it.
        proc.returncode = 0
        self._started = time.monotonic()
        log.info("Metrics on %s (process %d)", self.display, self.pid)

    def on_exit(self, pid: int, reason: str, stopping: bool) -> bool:
        """A child exited: if it was the metrics process, restart it (unless stopping or
        it failed right after its start) and return True."""
        if pid != self.pid or not pid:
            return False
        self.pid = 0
        if stopping or self._closed:
            return True
        if time.monotonic() - self._started < _MIN_UPTIME:
            log.error(
                "The metrics process exited (%s) right after starting; metrics are off "
                "until the server restarts",
                reason,
            )
            return True
        log.warning("The metrics process exited (%s); starting a new one", reason)
        self.start_process()
        return True

    # --- workers -----------------------------------------------------------------------

    def attach_worker(self) -> None:
        """In a new worker: create its segment (the core counts into it from now on)."""
        path = worker_segment(self.directory, os.getpid())
        try:
            self._core.metrics_attach(path)
        except OSError as e:
            log.warning("Metrics are not counted in worker %d: %s", os.getpid(), e)
        with contextlib.suppress(OSError):
            self.sock.close()

    def worker_started(self, reason: str) -> None:
        self._count("gristmill_worker_starts", reason)

    def worker_exited(self, pid: int, reason: str) -> None:
        """Count the exit, fold the worker's counters into the retired segment, and
        remove its segment."""
        self._count("gristmill_worker_exits", reason)
        path = worker_segment(self.directory, pid)
        try:
            seg = self._core.MetricsSegment(path)
        except OSError:
            return  # it died before it made one (or it was not ours)
        self.retired.fold(seg)
        del seg
        with contextlib.suppress(OSError):
            os.unlink(path)

    def _count(self, family: str, reason: str) -> None:
        slot = self._slot.get((family, reason))
        if slot is None:
            log.debug("no metric for %s{reason=%r}", family, reason)
            return
        self.retired.add(slot, 1)

    # --- the end -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the metrics process, close the socket, remove the segments."""
        self._closed = True
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                try:
                    done, _ = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if done:
                    break
                time.sleep(0.01)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, 0)
            self.pid = 0
        self.sock.close()
        if self._uds:
            with contextlib.suppress(OSError):
                os.unlink(self._uds)
        import shutil

        shutil.rmtree(self.directory, ignore_errors=True)
