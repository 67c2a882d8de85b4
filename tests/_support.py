"""Helpers shared by the end-to-end tests: a real gristmill process, a raw HTTP/1.1 client.

Every test drives a real ``python -m gristmill`` process over a real socket. The process's
stdout and stderr are drained by threads into line lists, so its pipes never fill up and
tests can wait for a log line (polling what was captured, never sleeping blindly).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TESTS_DIR = Path(__file__).resolve().parent
APPS_DIR = TESTS_DIR / "apps"

#: The readiness line, logged once every worker can serve.
READY_RE = re.compile(
    r"Listening on (?P<url>(?P<scheme>https?)://127\.0\.0\.1:(?P<port>\d+))(?:, \S+)* "
    r"\((?P<workers>\d+) workers?\)"
)

START_DEADLINE = 30.0

#: The two ways a WSGI request reaches Python: on the I/O thread itself (one Python
#: thread, the default) or on a pool of Python threads. Suites that must hold for both
#: parametrize their server over these.
WSGI_MODES = {"inline": ("--threads", "1"), "pool": ("--threads", "2")}

#: The two ways an ASGI worker runs: the event loop on the worker's main thread turning
#: the Rust runtime (one thread, the default), or uvloop in a thread of its own beside
#: the I/O thread. ASGI suites run whole modules once per mode (the ``asgi_mode``
#: fixture), through the environment every server of the module starts with.
ASGI_MODES = {"one-thread": {}, "loop-thread": {"GRISTMILL_LOOP": "uvloop"}}


def every_mode(wsgi_target: str, asgi_target: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """The four execution modes, for a test that runs one server per mode: name ->
    (server arguments, environment). WSGI inline and with a pool of 4 Python threads
    serve ``wsgi_target``; ASGI one-thread and loop-thread serve ``asgi_target``."""
    return {
        "wsgi-inline": ([wsgi_target, "--threads", "1"], {}),
        "wsgi-pool": ([wsgi_target, "--threads", "4"], {}),
        "asgi-one-thread": ([asgi_target], ASGI_MODES["one-thread"]),
        "asgi-loop-thread": ([asgi_target], ASGI_MODES["loop-thread"]),
    }


#: Variables every test server gets (set by the ``asgi_mode`` fixture).
mode_env: dict[str, str] = {}


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a test server runs with: ours minus any GRISTMILL_* variables,
    plus :data:`mode_env` and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRISTMILL_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(mode_env)
    if extra:
        env.update(extra)
    return env


def gristmill_cmd(args: Iterable[str]) -> list[str]:
    return [sys.executable, "-m", "gristmill", *args]


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = 0.02,
    message: str = "condition",
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class Server:
    """A running ``python -m gristmill`` process (its own process group)."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        pass_fds: tuple[int, ...] = (),
        launcher: list[str] | None = None,
    ) -> None:
        """``launcher`` replaces ``python -m gristmill`` (it must exec it with the args
        that follow); ``pass_fds`` are inherited by the process."""
        self.args = list(args)
        if not any(
            a in ("--port", "--uds") or a.startswith(("--port=", "--uds=")) for a in self.args
        ):
            self.args = ["--port", "0", *self.args]
        self.cmd = [*launcher, *self.args] if launcher else gristmill_cmd(self.args)
        self._cond = threading.Condition()
        self._merged: list[tuple[str, str]] = []  # (stream, line) in arrival order
        self._arrived: list[float] = []  # when each line arrived (time.monotonic())
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=base_env(env),
            cwd=str(cwd or APPS_DIR),
            start_new_session=True,
            pass_fds=pass_fds,
        )
        self.pid = self.proc.pid
        self.pgid = self.proc.pid
        self._readers = [
            threading.Thread(
                target=self._drain,
                args=(self.proc.stdout, "stdout"),
                daemon=True,
                name="gristmill-stdout",
            ),
            threading.Thread(
                target=self._drain,
                args=(self.proc.stderr, "stderr"),
                daemon=True,
                name="gristmill-stderr",
            ),
        ]
        for t in self._readers:
            t.start()
        self.url: str | None = None
        self.port: int | None = None
        self.workers: int | None = None
        self.ready_line: str | None = None

    # --- output ----------------------------------------------------------------------
    def _drain(self, pipe, stream: str) -> None:
        with pipe:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._cond:
                    self._merged.append((stream, line))
                    self._arrived.append(time.monotonic())
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def lines(self, start: int = 0) -> list[str]:
        """Everything printed so far (from index ``start``), stderr and stdout merged."""
        with self._cond:
            return [line for _, line in self._merged[start:]]

    def stdout_lines(self, start: int = 0) -> list[str]:
        with self._cond:
            return [line for s, line in self._merged[start:] if s == "stdout"]

    def stderr_lines(self, start: int = 0) -> list[str]:
        with self._cond:
            return [line for s, line in self._merged[start:] if s == "stderr"]

    def line_arrival(self, pattern: str, start: int = 0) -> float | None:
        """When (``time.monotonic()``) the first line matching ``pattern`` (search) from
        index ``start`` arrived; None if none has."""
        rx = re.compile(pattern)
        with self._cond:
            for (_, line), at in zip(self._merged[start:], self._arrived[start:], strict=True):
                if rx.search(line):
                    return at
        return None

    def output(self) -> str:
        return "\n".join(self.lines())

    def mark(self) -> int:
        """An index into :meth:`lines`, to look only at what comes after it."""
        with self._cond:
            return len(self._merged)

    def wait_for_line(
        self,
        pattern: str | re.Pattern[str],
        timeout: float = 10.0,
        start: int = 0,
        stream: str = "any",
    ) -> re.Match[str]:
        """Wait for a captured line (from index ``start``) matching ``pattern`` (search)."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        checked = start
        with self._cond:
            while True:
                while checked < len(self._merged):
                    which, line = self._merged[checked]
                    checked += 1
                    if stream in ("any", which):
                        m = rx.search(line)
                        if m:
                            return m
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if self.proc.poll() is not None and not any(t.is_alive() for t in self._readers):
                    break
                self._cond.wait(min(remaining, 0.1))
        raise AssertionError(
            f"no line matching {rx.pattern!r} within {timeout}s "
            f"(exit code {self.proc.poll()}); output:\n{self.output()}"
        )

    def wait_for_output(
        self,
        pattern: str,
        timeout: float = 10.0,
        start: int = 0,
        flags: int = re.IGNORECASE,
        stream: str = "any",
    ) -> re.Match[str]:
        """Wait until the output since ``start`` (joined, may span lines) matches."""
        rx = re.compile(pattern, flags)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = rx.search(
                    "\n".join(
                        line for which, line in self._merged[start:] if stream in ("any", which)
                    )
                )
                if m:
                    return m
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.proc.poll() is not None and not any(t.is_alive() for t in self._readers)
                ):
                    break
                self._cond.wait(min(max(remaining, 0.0), 0.1))
        raise AssertionError(
            f"no output matching {pattern!r} within {timeout}s; output since "
            f"mark:\n" + "\n".join(self.lines(start))
        )

    def wait_ready(self, timeout: float = START_DEADLINE) -> None:
        try:
            m = self.wait_for_line(READY_RE, timeout=timeout)
        except AssertionError:
            self.kill()
            raise AssertionError(
                f"gristmill did not become ready: {' '.join(self.cmd)}\n"
                f"exit code {self.proc.poll()}; output:\n{self.output()}"
            ) from None
        self.ready_line = m.string
        self.url = m.group("url")
        self.port = int(m.group("port"))
        self.workers = int(m.group("workers"))

    # --- processes -------------------------------------------------------------------
    def worker_pids(self) -> set[int]:
        """Live (non-zombie) child processes of the supervisor, from /proc."""
        return child_pids(self.pid)

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` to the supervisor and wait for it to exit; return the exit code."""
        if self.proc.poll() is None:
            os.kill(self.pid, sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"gristmill did not exit within {timeout}s of signal {sig}; output:\n"
                f"{self.output()}"
            ) from None
        self.join_output(5.0)
        return code

    def join_output(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self._readers:
            t.join(max(0.0, deadline - time.monotonic()))

    def kill(self) -> None:
        """Kill the supervisor and anything left in its process group."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.join_output(2.0)

    def group_alive(self) -> bool:
        """True while any process of the server's process group exists."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        # Zombies still count for killpg; look at /proc for live members.
        return bool(group_members(self.pgid))

    # --- requests --------------------------------------------------------------------
    def get(self, path: str = "/", **kw) -> httpx.Response:
        """One request on a fresh connection."""
        return request("GET", self.url + path, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return request("POST", self.url + path, **kw)

    def raw(self, timeout: float = 10.0, rcvbuf: int | None = None) -> RawConn:
        return RawConn(self.port, timeout=timeout, rcvbuf=rcvbuf)


def request(method: str, url: str, timeout: float = 10.0, **kw) -> httpx.Response:
    """A request on a fresh connection (no pooling across workers that may die)."""
    with httpx.Client(timeout=timeout) as client:
        return client.request(method, url, **kw)


def run_to_exit(
    args: list[str],
    timeout: float = 15.0,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> tuple[int, str]:
    """Run gristmill expecting it to exit by itself; return (exit code, stderr+stdout).

    A free port is used unless ``args`` bind one, so that a failure that happens only
    after binding never meets another test's (or ``make run``'s) port 8000.
    """
    binds = ("--port", "--uds")
    if not any(a in binds or a.startswith(tuple(b + "=" for b in binds)) for a in args):
        args = ["--port", "0", *args]
    proc = subprocess.Popen(
        gristmill_cmd(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=base_env(env),
        cwd=str(cwd or APPS_DIR),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        raise AssertionError(
            f"gristmill {' '.join(args)} did not exit within {timeout}s; output:\n"
            f"{err.decode(errors='replace')}{out.decode(errors='replace')}"
        ) from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode, err.decode("utf-8", "replace") + out.decode("utf-8", "replace")


# --- /proc -------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data[data.rindex(")") + 2 :].split()
    return rest[0], int(rest[1]), int(rest[2])


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def unread_connections(port: int) -> int:
    """How many established IPv4 TCP connections to local ``port`` have bytes the
    server has not read yet (from ``/proc/net/tcp``): requests waiting for a worker."""
    count = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if int(local.split(":")[1], 16) == port and state == "01":
                if int(queues.split(":")[1], 16) > 0:
                    count += 1
    return count


def child_pids(ppid: int) -> set[int]:
    out = set()
    for pid in _all_pids():
        st = _stat(pid)
        if st and st[1] == ppid and st[0] != "Z":
            out.add(pid)
    return out


def group_members(pgid: int) -> set[int]:
    out = set()
    for pid in _all_pids():
        st = _stat(pid)
        if st and st[2] == pgid and st[0] != "Z":
            out.add(pid)
    return out


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far, in seconds (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int, field: str) -> int:
    """A number from /proc/<pid>/status (``VmRSS`` in KiB, ``Threads``, ``FDSize``...)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (VmRSS from /proc/<pid>/status)."""
    return proc_status(pid, "VmRSS")


# --- raw HTTP/1.1 ------------------------------------------------------------------------
@dataclass
class RawResponse:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    head: bytes = b""
    chunked: bool = False

    def header(self, name: str) -> str | None:
        values = self.headers_all(name)
        return values[0] if values else None

    def headers_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def status_line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")


class ConnectionClosed(Exception):
    """The server closed the connection before a complete response arrived."""


class RawConn:
    """A plain TCP connection speaking hand-written HTTP/1.1."""

    def __init__(
        self, port: int, timeout: float = 10.0, host: str = "127.0.0.1", rcvbuf: int | None = None
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect((host, port))
        except BaseException:
            self.sock.close()
            raise
        self.buf = b""
        self.eof = False

    def __enter__(self) -> RawConn:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def _fill(self) -> bool:
        """Read more bytes into the buffer; False at EOF (or reset)."""
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_until(self, delim: bytes) -> bytes:
        while delim not in self.buf:
            if not self._fill():
                raise ConnectionClosed(f"closed while waiting for {delim!r}; got {self.buf!r}")
        idx = self.buf.index(delim) + len(delim)
        out, self.buf = self.buf[:idx], self.buf[idx:]
        return out

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionClosed(f"closed after {len(self.buf)} of {n} body bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_exact(self, n: int) -> bytes:
        """Exactly ``n`` bytes (buffered first); :class:`ConnectionClosed` at EOF."""
        return self._read_exact(n)

    def response(self, method: str = "GET") -> RawResponse:
        """Parse one response (an interim 1xx response is returned as is)."""
        resp = self.read_head()
        if 100 <= resp.status < 200 or resp.status in (204, 304) or method == "HEAD":
            return resp
        te = ",".join(resp.headers_all("transfer-encoding")).lower()
        if "chunked" in te:
            resp.chunked = True
            parts = []
            while True:
                size_line = self._read_until(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self._read_until(b"\r\n") != b"\r\n":  # trailers
                        pass
                    break
                parts.append(self._read_exact(size))
                assert self._read_exact(2) == b"\r\n", "chunk not followed by CRLF"
            resp.body = b"".join(parts)
        elif resp.header("content-length") is not None:
            resp.body = self._read_exact(int(resp.header("content-length")))
        else:
            while self._fill():
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def final_response(self, method: str = "GET") -> RawResponse:
        """Parse responses, skipping interim 1xx ones."""
        while True:
            resp = self.response(method)
            if resp.status >= 200:
                return resp

    def read_head(self) -> RawResponse:
        """Read and parse only a response head; the body stays on the socket."""
        head = self._read_until(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise AssertionError(f"bad status line: {lines[0]!r}")
        resp = RawResponse(
            version=parts[0],
            status=int(parts[1]),
            reason=parts[2] if len(parts) > 2 else "",
            head=head,
        )
        for line in lines[1:]:
            name, sep, value = line.decode("latin-1").partition(":")
            assert sep, f"response header line without colon: {line!r}"
            resp.headers.append((name.strip(), value.strip()))
        return resp

    def recv_some(self, limit: int = 1 << 20) -> bytes:
        """Buffered bytes first, else one recv (b"" at EOF)."""
        if self.buf:
            out, self.buf = self.buf[:limit], self.buf[limit:]
            return out
        try:
            return self.sock.recv(limit)
        except ConnectionResetError:
            return b""

    def read_to_eof(self, timeout: float = 5.0) -> bytes:
        """Everything left until the server closes; fails if it stays open ``timeout`` s."""
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                pass
        except TimeoutError:
            raise AssertionError(
                f"server kept the connection open for {timeout}s; buffered {self.buf!r}"
            ) from None
        out, self.buf = self.buf, b""
        return out

    def closed_within(self, timeout: float) -> float:
        """Seconds until the server closes the connection (bytes received are kept)."""
        start = time.monotonic()
        self.read_to_eof(timeout)
        return time.monotonic() - start


def http_request(
    method: str,
    path: str,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes = b"",
    host: str = "127.0.0.1",
    version: str = "HTTP/1.1",
) -> bytes:
    """Build a request; adds Host (unless host is None) and Content-Length for a body."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in items}
    if host is not None and "host" not in names:
        items.insert(0, ("Host", host))
    if body and "content-length" not in names and "transfer-encoding" not in names:
        items.append(("Content-Length", str(len(body))))
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in items)
    return head.encode("latin-1") + b"\r\n" + body


def head_in_two_pieces(srv: Server, head: bytes, cut: int, then: bytes) -> list[RawResponse]:
    """Send ``head`` in two TCP segments cut at ``cut`` (the worker reads a connection's
    first 24 bytes itself, to tell HTTP/1.1 from HTTP/2), then ``then`` on the same
    connection; the two responses."""
    with srv.raw() as conn:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.send(head[:cut])
        time.sleep(0.05)  # two segments, not one: what the callers test
        conn.send(head[cut:])
        first = conn.final_response()
        conn.send(then)
        return [first, conn.final_response()]


def chunked_payload(data: bytes) -> bytes:
    """The payload of a chunked body made of whole chunks (a last chunk, if any, ends
    it); fails on a chunk cut short."""
    out = bytearray()
    while data:
        line, sep, data = data.partition(b"\r\n")
        assert sep, f"chunk size line cut short: {line[:32]!r}"
        size = int(line.split(b";")[0], 16)
        if size == 0:
            break
        assert len(data) >= size + 2, f"chunk of {size} bytes cut short"
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


def chunked(*pieces: bytes) -> bytes:
    """Encode ``pieces`` as a chunked body, with the terminating zero chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"


# --- raw WebSocket (RFC 6455), for clients that misbehave on purpose -----------------------
TEXT, CLOSE = 0x1, 0x8


def raw_ws(srv: Server, path: str, rcvbuf: int | None = None) -> RawConn:
    """Open a WebSocket on a raw socket: the 101 is read, frames are left to the test."""
    conn = srv.raw(rcvbuf=rcvbuf)
    conn.send(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = conn.read_head()
    assert head.status == 101, head.head
    return conn


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame with FIN set (payloads under 64 KiB)."""
    mask = os.urandom(4)
    n = len(payload)
    size = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode]) + size + mask + masked


def read_ws_frame(conn: RawConn) -> tuple[int, bytes]:
    """One (unmasked) server frame: (opcode, payload)."""
    b0, b1 = conn.read_exact(2)
    n = b1 & 0x7F
    if n >= 126:
        n = int.from_bytes(conn.read_exact(2 if n == 126 else 8), "big")
    return b0 & 0x0F, conn.read_exact(n)


# --- a log handler that blocks (tests/apps/log_gate.py) -----------------------------------
def gated_log_config(folder: Path, match: str) -> str:
    """Write a --log-config (stderr, plus ``log_gate.GateHandler``) into ``folder``: the
    thread that logs the first record containing ``match`` writes ``folder/blocked`` and
    waits there until the test creates ``folder/gate``. Returns the file's path."""
    handlers = {
        "err": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        "gate": {"()": "log_gate.GateHandler", "match": match, "folder": str(folder)},
    }
    logger = {"level": "INFO", "handlers": ["err", "gate"], "propagate": False}
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": handlers,
        "loggers": {"gristmill.error": logger, "gristmill.access": logger},
    }
    path = folder / "logging.json"
    path.write_text(json.dumps(config))
    return str(path)


#: The access line of ``block_io_thread``'s request.
BAD_REQUEST_LOGGED = '"GET / HTTP/1.1" 400'


def io_gated_args(folder: Path, mode: str = "loop-thread") -> list[str]:
    """Server arguments for :func:`block_io_thread`: one I/O thread beside the event
    loop's, and a log handler that blocks on the access line of the 400 it provokes.

    In the ``one-thread`` ASGI mode there is no I/O thread to hold up and none needed:
    what the application sends in one step is all queued before the runtime turns
    again; the arguments are then empty and :func:`answer_while_io_thread_blocked` only
    lets the application go on."""
    if mode == "one-thread":
        return []
    return [
        "--runtime-threads",
        "1",
        "--loop",
        "uvloop",
        "--log-config",
        gated_log_config(folder, BAD_REQUEST_LOGGED),
    ]


def block_io_thread(srv: Server, folder: Path) -> RawConn:
    """On a server started with :func:`io_gated_args`: send a request the I/O thread
    answers alone (no Host: 400), whose access line then holds that thread until
    ``folder/gate`` exists. Returns that connection, to close later."""
    conn = srv.raw()
    conn.send(b"GET / HTTP/1.1\r\n\r\n")
    wait_for_file(folder / "blocked")
    return conn


def answer_while_io_thread_blocked(srv: Server, folder: Path, done: str) -> None:
    """Let an application answer while the server's only I/O thread is held up, so that
    all it sends is queued before the connection writes a byte.

    The application must be waiting for ``folder/before`` after writing
    ``folder/once-waiting`` (``?tag=once&before=<folder>/before`` on asgi_http_app's
    streaming routes). ``done`` is a pattern of the log line that says it finished."""
    wait_for_file(folder / "once-waiting")
    if "--log-config" not in srv.args:  # one-thread mode (see io_gated_args)
        (folder / "before").write_text("go")
        srv.wait_for_line(done)
        return
    with block_io_thread(srv, folder):
        (folder / "before").write_text("go")
        srv.wait_for_line(done)
        (folder / "gate").write_text("open")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    """Wait for a marker file an application writes (atomically) and return its text."""
    wait_until(path.exists, timeout, message=f"{path.name} to be written")
    return path.read_text()


def stalled_upload(srv: Server, path: str, sent: bytes, declared: int = 100) -> tuple[int, float]:
    """POST ``path`` declaring ``declared`` body bytes but sending only ``sent``, then wait
    for the answer: (status, seconds it took)."""
    with srv.raw() as conn:
        conn.send(http_request("POST", path, headers={"Content-Length": str(declared)}) + sent)
        start = time.monotonic()
        resp = conn.final_response()
        return resp.status, time.monotonic() - start


class PidLoad:
    """Keep-alive clients requesting ``url`` in a loop while a test restarts workers.

    The application answers each request with its worker's pid, so the load records how
    many responses each worker served. Every failure (a connection error, a status other
    than 200, a body that is not a pid) is kept with the time it happened and the worker
    that answered that client before, for the assertion message.
    """

    def __init__(self, url: str, clients: int = 4, timeout: float = 15.0) -> None:
        self.url = url
        self.clients = clients
        self.timeout = timeout
        self.served: dict[int, int] = {}  # responses by worker pid
        self.statuses: dict[int, int] = {}
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def __enter__(self) -> PidLoad:
        self.threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)
        ]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(self.timeout)

    def _run(self) -> None:
        last = None  # the worker that answered this client's previous request
        with httpx.Client(timeout=self.timeout) as client:
            while not self.stop.is_set():
                try:
                    r = client.get(self.url)
                    with self.lock:
                        self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                    r.raise_for_status()
                    last = pid = int(r.text)
                    with self.lock:
                        self.served[pid] = self.served.get(pid, 0) + 1
                except (httpx.HTTPError, ValueError) as e:
                    detail = f"{e!r}"
                    if isinstance(e, httpx.HTTPStatusError):
                        detail += f" {e.response.text[:200]!r}"
                    with self.lock:
                        self.failures.append(
                            f"{detail} at {time.monotonic():.3f}, the previous answer from {last}"
                        )

    def total(self) -> int:
        with self.lock:
            return sum(self.served.values())

    def served_by(self, pids: set[int]) -> int:
        with self.lock:
            return sum(n for pid, n in self.served.items() if pid in pids)


def autobahn(
    kosoku: list[str], port: int, out: Path, select: list[str], timeout: float
) -> tuple[dict[str, dict], str]:
    """Run the Autobahn fuzzing client ``kosoku`` (its command line) against
    ``127.0.0.1:port`` with the case selection ``select`` (``-i``/``-x`` arguments),
    4 cases at a time, reports under ``out``: each case's result by case id, and the
    client's output for the assertion message."""
    proc = subprocess.run(
        [*kosoku, "-m", "fuzzingclient", "-p", "4", "-o", str(out), *select, f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    (results,) = json.loads((out / "index.json").read_text()).values()
    return results, proc.stdout + proc.stderr


def autobahn_failures(results: dict[str, dict], allowed: set[str]) -> dict[str, tuple[str, str]]:
    """The cases whose behaviour or close behaviour is outside ``allowed``."""
    return {
        case: (r["behavior"], r["behaviorClose"])
        for case, r in results.items()
        if {r["behavior"], r["behaviorClose"]} - allowed
    }
