"""The listening sockets: bound once by the supervisor, inherited by every worker.

Where they come from, in order:

- systemd socket activation: when ``LISTEN_PID`` is this process, the ``LISTEN_FDS``
  descriptors from 3 on are served and ``--host``/``--port``/``--uds`` are not bound;
- ``--bind`` addresses (``HOST:PORT``, ``[IPV6]:PORT``, ``unix:PATH``, ``fd://N``) and
  ``--fd N``: all of them, at once;
- otherwise ``--uds PATH``, or ``--host``/``--port``.

With ``--reuse-port`` a TCP address is only *reserved* here (bound with
``SO_REUSEPORT``, never listening, so the kernel hands it no connections) and each
worker binds and listens on its own socket for it (:func:`worker_fds`); the kernel then
spreads new connections over the workers.

Beside the listeners, the supervisor makes one socket pair that every worker inherits
(:func:`handoff_pair`): a worker replaced while clients are connected passes their idle
keep-alive connections through it to the workers that stay (the Rust core's
``handoff`` module).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from dataclasses import dataclass

from .errors import ConfigError, ServerError
from .settings import Settings

__all__ = [
    "Bound",
    "bind_all",
    "worker_fds",
    "close_all",
    "handoff_pair",
    "parse_address",
    "SD_LISTEN_FDS_START",
]

#: The first descriptor systemd passes (sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3


@dataclass
class Bound:
    """One listening socket and how to show it."""

    sock: socket.socket
    display: str  # e.g. http://127.0.0.1:8000 or unix:/run/app.sock
    uds_path: str | None = None  # a socket file we created (removed at exit)
    uds_inode: int | None = None
    reserved: bool = False  # --reuse-port placeholder: workers bind their own

    def owns_file(self) -> bool:
        """Whether the socket file at ``uds_path`` is still the one we created."""
        if self.uds_path is None or self.uds_inode is None:
            return False
        try:
            return os.stat(self.uds_path).st_ino == self.uds_inode
        except OSError:
            return False


def parse_address(addr: str) -> tuple[str, object]:
    """``("unix", path)``, ``("fd", n)`` or ``("tcp", (host, port))``; ConfigError if bad."""
    if addr.startswith("unix:"):
        path = addr[len("unix:") :]
        if not path:
            raise ConfigError(f"invalid bind address {addr!r}: empty socket path")
        return "unix", os.path.abspath(path)
    if addr.startswith("fd://"):
        try:
            return "fd", int(addr[len("fd://") :])
        except ValueError:
            raise ConfigError(f"invalid bind address {addr!r}: expected fd://N") from None
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"invalid bind address {addr!r}: expected HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"invalid bind address {addr!r}: put an IPv6 address in brackets")
    return "tcp", (host or "0.0.0.0", int(port))


def bind_all(s: Settings, environ: dict[str, str] | None = None) -> list[Bound]:
    """Bind (or adopt) every listening socket the settings ask for."""
    environ = os.environ if environ is None else environ
    out: list[Bound] = []
    try:
        out += _systemd_sockets(s, environ)
        specs = [parse_address(a) for a in s.bind]
        if s.fd is not None:
            specs.append(("fd", s.fd))
        if not specs and not out:
            specs = [("unix", s.uds)] if s.uds else [("tcp", (s.host, s.port))]
        for kind, value in specs:
            if kind == "unix":
                out.append(_bind_uds(s, str(value)))
            elif kind == "fd":
                out.append(_adopt_fd(s, int(value), f"fd://{value}"))
            else:
                host, port = value  # type: ignore[misc]
                out.append(_bind_tcp(s, host, port))
        if s.http3:
            _check_udp_ports(out)
    except BaseException:
        close_all(out)
        raise
    return out


def close_all(bound: list[Bound]) -> None:
    for b in bound:
        b.sock.close()


def handoff_pair() -> tuple[socket.socket, socket.socket] | None:
    """The way a retiring worker passes connections on: a ``SOCK_SEQPACKET`` Unix socket
    pair (sending end, receiving end), or None where there is none (not Linux)."""
    kind = getattr(socket, "SOCK_SEQPACKET", None)
    if kind is None or not hasattr(socket, "SCM_RIGHTS"):
        return None
    try:
        a, b = socket.socketpair(socket.AF_UNIX, kind)
    except OSError:
        return None
    return a, b


def remove_uds_files(bound: list[Bound]) -> None:
    for b in bound:
        if b.owns_file():
            with contextlib.suppress(OSError):
                os.unlink(b.uds_path)  # type: ignore[arg-type]


def worker_fds(bound: list[Bound], s: Settings) -> list[int]:
    """In a new worker: the fds to serve. Binds its own socket for each reserved address.

    The Rust core takes these fds over and closes them when the worker stops accepting,
    so they are detached from their Python socket objects here (which then never close
    them): a stopping worker must not keep a socket listening.
    """
    fds = []
    for b in bound:
        if not b.reserved:
            fds.append(b.sock.detach())
            continue
        own = socket.socket(b.sock.family, socket.SOCK_STREAM)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if b.sock.family == socket.AF_INET6:
            own.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        own.bind(b.sock.getsockname()[:2])
        own.listen(s.backlog)
        fds.append(own.detach())
    return fds


def _scheme(s: Settings) -> str:
    return "https" if s.ssl_certfile else "http"


def _display(s: Settings, sock: socket.socket) -> str:
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        return f"unix:{name if isinstance(name, str) and name else '(unnamed)'}"
    host, port = sock.getsockname()[:2]
    return f"{_scheme(s)}://{_hostport(host, port)}"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_tcp(s: Settings, host: str, port: int) -> Bound:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Restarting right after a stop must not fail on TIME_WAIT connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # [::]:8000 next to 0.0.0.0:8000 must not collide.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if s.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if not s.reuse_port:
            sock.listen(s.backlog)
    except OSError as e:
        sock.close()
        raise ServerError(f"cannot listen on {_hostport(host, port)}: {e.strerror or e}") from None
    return Bound(sock, _display(s, sock), reserved=s.reuse_port)


def _check_udp_ports(bound: list[Bound]) -> None:
    """With ``--http3`` each worker binds UDP on every TCP address (SO_REUSEPORT, see
    ``src/http3``): try that once here, so a port another program holds is one clear
    error at start-up instead of workers failing one after the other."""
    for b in bound:
        family = b.sock.family
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        addr = b.sock.getsockname()
        probe = socket.socket(family, socket.SOCK_DGRAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                v6only = b.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
            probe.bind(addr)
        except OSError as e:
            where = _hostport(addr[0], addr[1])
            raise ServerError(f"cannot serve HTTP/3 on udp {where}: {e.strerror or e}") from None
        finally:
            probe.close()


def _bind_uds(s: Settings, path: str) -> Bound:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise ServerError(f"cannot listen on unix:{path}: the path exists and is not a socket")
        if _uds_in_use(path):
            raise ServerError(f"cannot listen on unix:{path}: another server is listening on it")
        os.unlink(path)  # stale socket from a server that did not clean up
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        if s.uds_permissions is not None:
            os.chmod(path, int(s.uds_permissions, 8))
        sock.listen(s.backlog)
    except OSError as e:
        sock.close()
        raise ServerError(f"cannot listen on unix:{path}: {e.strerror or e}") from None
    return Bound(sock, f"unix:{path}", uds_path=path, uds_inode=os.stat(path).st_ino)


def _adopt_fd(s: Settings, fd: int, what: str) -> Bound:
    """An inherited socket that is already bound (and usually listening)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        raise ServerError(f"cannot use {what}: {e.strerror or e}") from None
    if sock.type != socket.SOCK_STREAM or sock.family not in (
        socket.AF_INET,
        socket.AF_INET6,
        socket.AF_UNIX,
    ):
        sock.detach()
        raise ServerError(f"cannot use {what}: not a TCP or Unix stream socket")
    try:
        # listen() again is harmless on a listening socket and needed on one that is only
        # bound (systemd always passes listening sockets; a parent process may not).
        sock.listen(s.backlog)
    except OSError as e:
        sock.detach()
        raise ServerError(f"cannot listen on {what}: {e.strerror or e}") from None
    return Bound(sock, _display(s, sock))


def _systemd_sockets(s: Settings, environ) -> list[Bound]:
    """Sockets passed by systemd (sd_listen_fds(3)); the variables are then removed so
    that the workers and the application do not see them."""
    pid, n = environ.get("LISTEN_PID"), environ.get("LISTEN_FDS")
    if pid is None or n is None:
        return []
    if pid != str(os.getpid()):
        return []  # meant for another process (e.g. our parent)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    try:
        count = int(n)
    except ValueError:
        raise ServerError(f"invalid LISTEN_FDS={n!r} from systemd") from None
    out = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, True)
        out.append(_adopt_fd(s, fd, f"systemd socket fd {fd}"))
    return out


def _uds_in_use(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as e:
        return e.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
    return True
