"""The side-by-side benchmark runner: gristmill, its peers and a pure-Rust ceiling, interleaved.

Run it with the bench venv's Python (``bench/bench.sh`` does; standard library only). For each
suite it starts every server at once, waits for its port, checks that it answers every route
correctly (a server that fails to start or answers wrongly is skipped, with the reason in the
report), warms each up, and then runs the tests in rounds: in each round every test gives
every server one run, back to back, with the server order rotated from round to round so
that drift in the machine's background load spreads over all servers alike. The machines
are shared and noisy, so what counts is the ratio between servers measured in the same run,
never an absolute number compared across runs.

Per run it records the load generator's req/s, p50/p99 latency and errors, and, from
``/proc``, the CPU time (utime + stime) the server's whole process tree spent during the
run and its resident memory after it. The report is a Markdown table per test (medians
over rounds, with the min-max spread), printed and written to ``bench/results/latest.md``;
the raw runs go to ``bench/results/latest.json``.

Suites: "1 worker, pinned" (server on CPU 0, load generator on CPU 1, via ``taskset``) and,
with ``--full``, "2 workers, unpinned". Load: ``wrk`` for HTTP/1.1, ``h2load`` for h2c,
``wsload.py`` (next to this file) for WebSocket echo, ``wsh2load.py`` for WebSocket over
HTTP/2 (RFC 8441) and ``h3load.py`` for HTTP/3. The HTTPS rows (HTTP/1.1 with ``wrk``,
HTTP/2 by ALPN with ``h2load``) run separate TLS instances of gristmill and Granian with a
self-signed certificate made at bench time with ``openssl`` (see :func:`tls_files`). The
1-worker suite's access-log test measures each server with its access log on next to the
same server with it off.

``--rss-growth N`` runs the RSS growth mode instead of the suites: N requests of a route mix
through each server, with its worker's resident memory sampled along the way, reported in
``bench/results/rss.md``. bench/NOTES.md describes the methodology of both.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPSConnection
from pathlib import Path

BENCH = Path(__file__).resolve().parent
APPS = BENCH / "apps"
RESULTS = BENCH / "results"
# BENCH_CEILING runs a ceiling built elsewhere (bench.sh with BENCH_INSTALL=0 builds none).
CEILING = Path(
    os.environ.get("BENCH_CEILING") or BENCH / "ceiling" / "target" / "release" / "ceiling"
)
HOST = "127.0.0.1"
BASE_PORT = 18200

HELLO = b"Hello, world!"
JSON_BODY = b'{"message":"Hello, world!"}'
ECHO_SIZE = 4096
BIG_SIZE = 1024 * 1024
STREAM_SIZE = 64 * 16 * 1024

PEERS = ("granian", "uvicorn", "uvloop", "httptools", "websockets", "gunicorn", "hypercorn")


# --- Servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    """One server configuration under test; ``cmd`` has ``{port}`` and ``{workers}`` holes
    (and ``{cert}``/``{key}`` for a TLS server)."""

    name: str
    interface: str  # "wsgi", "asgi" or "rust" (the ceiling)
    cmd: list[str]
    http1: bool = True  # runs the HTTP/1.1 tests
    h2: bool = False  # expected to speak h2c; checked, and dropped from the h2 row if not
    ws: bool = False  # expected to speak WebSocket; checked likewise
    ws_h2: bool = False  # expected to speak WebSocket over HTTP/2 (RFC 8441, h2c); likewise
    tls: bool = False  # serves HTTPS (``{cert}``/``{key}`` in cmd); runs only the TLS tests
    h3: bool = False  # serves HTTP/3 (QUIC, with ``tls``); checked, and runs only the h3 row
    # A twin is another configuration of the server named here (Granian's `--http 2`
    # baseline for the h2 row, a server with its access log on): `--servers NAME` brings
    # its twins along, so that a row never loses its baseline to a different name.
    twin_of: str | None = None
    # Access log on, as deployed: runs only the access-log test, next to its twin (log off).
    access_log: bool = False
    # Serves the static-file directory (``{static}``) at /static: runs only the static tests.
    static: bool = False
    # A configuration measured on purpose, not in every run: only `--servers NAME` starts
    # it (naming the server it is a variant of does not).
    opt_in: bool = False
    # Filled in at run time:
    port: int = 0
    proc: subprocess.Popen | None = None
    log: Path | None = None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)


def server_specs(python_bin: Path, workers: int, threads: int) -> list[Server]:
    """Every server the bench knows, configured for ``workers`` processes."""
    vbin = python_bin.parent
    w = str(workers)

    def gristmill(
        interface: str, target: str, access_log: bool = False, tls: bool = False, h3: bool = False
    ) -> list[str]:
        # The access log on is gristmill's default: the default format, on stdout.
        # Over TLS, `--http auto` (the default) offers ALPN h2 and http/1.1 on one port.
        tls_args = ["--ssl-certfile", "{cert}", "--ssl-keyfile", "{key}"] if tls else []
        return [
            str(vbin / "gristmill"),
            target,
            "--interface",
            interface,
            "--host",
            HOST,
            "--port",
            "{port}",
            "--workers",
            w,
            "--threads",
            str(threads),
            *tls_args,
            *(["--http3"] if h3 else []),
        ] + ([] if access_log else ["--no-access-log"])

    def granian(
        interface: str, target: str, http: str, access_log: bool = False, tls: bool = False
    ) -> list[str]:
        # Granian's own HTTPS options; with `--http 2` it is the h2 (ALPN) twin, as for h2c.
        tls_args = ["--ssl-certificate", "{cert}", "--ssl-keyfile", "{key}"] if tls else []
        cmd = [
            str(vbin / "granian"),
            "--interface",
            interface,
            "--host",
            HOST,
            "--port",
            "{port}",
            "--workers",
            w,
            "--runtime-threads",
            "1",
            "--http",
            http,
            "--log-level",
            "warning",
            # On: Granian's default format, on stdout (the --log-level leaves it alone).
            "--access-log" if access_log else "--no-access-log",
        ]
        if interface == "wsgi":
            cmd += ["--blocking-threads", str(threads), "--no-ws"]
        else:
            cmd += ["--loop", "uvloop"]
            if http == "2" or tls:
                cmd += ["--no-ws"]
        return cmd + tls_args + [target]

    gunicorn = [
        str(vbin / "gunicorn"),
        "--bind",
        f"{HOST}:{{port}}",
        "--workers",
        w,
        "--log-level",
        "warning",
    ]
    return [
        Server("gristmill-wsgi", "wsgi", gristmill("wsgi", "wsgi_app:application"), h2=True),
        Server("granian-wsgi", "wsgi", granian("wsgi", "wsgi_app:application", "1")),
        Server(
            "gunicorn-sync", "wsgi", gunicorn + ["--worker-class", "sync", "wsgi_app:application"]
        ),
        Server(
            "gunicorn-gthread",
            "wsgi",
            gunicorn + ["--worker-class", "gthread", "--threads", "4", "wsgi_app:application"],
        ),
        Server(
            "gristmill-asgi",
            "asgi",
            gristmill("asgi", "asgi_app:app"),
            h2=True,
            ws=True,
            ws_h2=True,
        ),
        Server("granian-asgi", "asgi", granian("asgi", "asgi_app:app", "1"), ws=True),
        # The eager task start (Python 3.12+) off, to measure what it gains.
        Server(
            "gristmill-asgi-lazy",
            "asgi",
            gristmill("asgi", "asgi_app:app") + ["--no-eager-tasks"],
            h2=True,
            ws=True,
            ws_h2=True,
            opt_in=True,
        ),
        # Worker recycling every 10,000 requests (`--max-requests`), to measure what the
        # rolling replacement costs under load next to the same server without it.
        Server(
            "gristmill-wsgi-recycle",
            "wsgi",
            gristmill("wsgi", "wsgi_app:application") + ["--max-requests", "10000"],
            opt_in=True,
        ),
        Server(
            "gristmill-asgi-recycle",
            "asgi",
            gristmill("asgi", "asgi_app:app") + ["--max-requests", "10000"],
            opt_in=True,
        ),
        # The same with the application imported once, before the fork (`--preload`): each
        # new worker then skips the import, most of what a replacement costs beyond fork.
        Server(
            "gristmill-wsgi-recycle-preload",
            "wsgi",
            gristmill("wsgi", "wsgi_app:application") + ["--max-requests", "10000", "--preload"],
            opt_in=True,
        ),
        Server(
            "gristmill-asgi-recycle-preload",
            "asgi",
            gristmill("asgi", "asgi_app:app") + ["--max-requests", "10000", "--preload"],
            opt_in=True,
        ),
        # Prometheus metrics on (`--metrics-bind`, on a Unix socket so the row needs no
        # second port), to measure what counting costs next to the same server without.
        Server(
            "gristmill-wsgi-metrics",
            "wsgi",
            gristmill("wsgi", "wsgi_app:application")
            + ["--metrics-bind", "unix:/tmp/gristmill-bench-metrics-{port}.sock"],
            opt_in=True,
        ),
        Server(
            "gristmill-asgi-metrics",
            "asgi",
            gristmill("asgi", "asgi_app:app")
            + ["--metrics-bind", "unix:/tmp/gristmill-bench-metrics-{port}.sock"],
            opt_in=True,
        ),
        Server(
            "uvicorn",
            "asgi",
            [
                str(vbin / "uvicorn"),
                "--host",
                HOST,
                "--port",
                "{port}",
                "--workers",
                w,
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--ws",
                "websockets",
                "--no-access-log",
                "--log-level",
                "warning",
                "asgi_app:app",
            ],
            ws=True,
        ),
        Server(
            "hypercorn",
            "asgi",
            [
                str(vbin / "hypercorn"),
                "--bind",
                f"{HOST}:{{port}}",
                "--workers",
                w,
                "--worker-class",
                "uvloop",
                "--log-level",
                "warning",
                "asgi_app:app",
            ],
            h2=True,
            ws=True,
            ws_h2=True,
        ),
        Server(
            "granian-wsgi-h2",
            "wsgi",
            granian("wsgi", "wsgi_app:application", "2"),
            http1=False,
            h2=True,
            twin_of="granian-wsgi",
        ),
        Server(
            "granian-asgi-h2",
            "asgi",
            granian("asgi", "asgi_app:app", "2"),
            http1=False,
            h2=True,
            twin_of="granian-asgi",
        ),
        Server(
            "gristmill-wsgi-log",
            "wsgi",
            gristmill("wsgi", "wsgi_app:application", access_log=True),
            twin_of="gristmill-wsgi",
            access_log=True,
        ),
        Server(
            "gristmill-asgi-log",
            "asgi",
            gristmill("asgi", "asgi_app:app", access_log=True),
            twin_of="gristmill-asgi",
            access_log=True,
        ),
        Server(
            "granian-wsgi-log",
            "wsgi",
            granian("wsgi", "wsgi_app:application", "1", access_log=True),
            twin_of="granian-wsgi",
            access_log=True,
        ),
        Server(
            "granian-asgi-log",
            "asgi",
            granian("asgi", "asgi_app:app", "1", access_log=True),
            twin_of="granian-asgi",
            access_log=True,
        ),
        # HTTPS: TLS instances of their own, so the cleartext rows are unchanged. gristmill
        # serves HTTP/1.1 and HTTP/2 on one TLS port (ALPN); Granian, like for h2c, gets a
        # `--http 2` twin for the HTTP/2 row.
        Server(
            "gristmill-wsgi-tls",
            "wsgi",
            gristmill("wsgi", "wsgi_app:application", tls=True),
            h2=True,
            tls=True,
        ),
        Server(
            "granian-wsgi-tls",
            "wsgi",
            granian("wsgi", "wsgi_app:application", "1", tls=True),
            tls=True,
        ),
        Server(
            "granian-wsgi-tls-h2",
            "wsgi",
            granian("wsgi", "wsgi_app:application", "2", tls=True),
            http1=False,
            h2=True,
            tls=True,
            twin_of="granian-wsgi-tls",
        ),
        Server(
            "gristmill-asgi-tls",
            "asgi",
            gristmill("asgi", "asgi_app:app", tls=True),
            h2=True,
            tls=True,
        ),
        Server(
            "granian-asgi-tls",
            "asgi",
            granian("asgi", "asgi_app:app", "1", tls=True),
            tls=True,
        ),
        Server(
            "granian-asgi-tls-h2",
            "asgi",
            granian("asgi", "asgi_app:app", "2", tls=True),
            http1=False,
            h2=True,
            tls=True,
            twin_of="granian-asgi-tls",
        ),
        # HTTP/3: gristmill with `--http3` and hypercorn with `--quic-bind` (aioquic), each
        # on its TLS port (UDP beside TCP); only the h3 row, measured by req/CPU-s.
        Server(
            "gristmill-wsgi-h3",
            "wsgi",
            gristmill("wsgi", "wsgi_app:application", tls=True, h3=True),
            http1=False,
            tls=True,
            h3=True,
            twin_of="gristmill-wsgi-tls",
        ),
        Server(
            "gristmill-asgi-h3",
            "asgi",
            gristmill("asgi", "asgi_app:app", tls=True, h3=True),
            http1=False,
            tls=True,
            h3=True,
            twin_of="gristmill-asgi-tls",
        ),
        Server(
            "hypercorn-h3",
            "asgi",
            [
                str(vbin / "hypercorn"),
                "--bind",
                f"{HOST}:{{port}}",
                "--quic-bind",
                f"{HOST}:{{port}}",
                "--certfile",
                "{cert}",
                "--keyfile",
                "{key}",
                # hypercorn 0.18 answers QUIC only in its single-process mode
                # (`--workers 0`) and with the asyncio worker class: with worker processes
                # or uvloop its QUIC endpoint never replies. So one process, whatever the
                # suite's worker count; the h3 row runs in the 1-worker suite only.
                "--workers",
                "0",
                "--worker-class",
                "asyncio",
                "--log-level",
                "warning",
                "asgi_app:app",
            ],
            http1=False,
            tls=True,
            h3=True,
            twin_of="hypercorn",
        ),
        Server(
            "ceiling",
            "rust",
            [str(CEILING), "--host", HOST, "--port", "{port}", "--threads", w],
            h2=True,
        ),
        # Static files (`static-*` rows): gristmill's `--static`, Granian's static path and
        # nginx, all serving the same directory (made at run time, see `static_dir`).
        Server(
            "gristmill-static",
            "static",
            gristmill("wsgi", "wsgi_app:application") + ["--static", "/static={static}"],
            static=True,
        ),
        Server(
            "granian-static",
            "static",
            granian("wsgi", "wsgi_app:application", "1")[:-1]
            + ["--static-path-route", "/static", "--static-path-mount", "{static}"]
            + ["wsgi_app:application"],
            static=True,
        ),
        Server(
            "nginx-static",
            "static",
            [shutil.which("nginx") or "/usr/sbin/nginx", "-c", "{nginx_conf}", "-e", "stderr"],
            static=True,
        ),
    ]


# --- Tests -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Test:
    """One load pattern. ``kind`` picks the load generator and which servers take part."""

    key: str
    title: str
    # "h1" (wrk), "h2" (h2load), "ws" (wsload.py), "ws-h2" (wsh2load.py) or "h3" (h3load.py)
    kind: str
    path: str = "/"
    conns: int = 64
    # h2: concurrent streams per connection; ws: messages in flight; ws-h2: WebSockets per
    # connection (messages in flight on each: ``--window`` in ws_args)
    streams: int = 1
    lua: str | None = None  # wrk script, for the POST
    access_log: bool = False  # runs the access-log twins, each next to its log-off server
    tls: bool = False  # HTTPS: runs the TLS servers only (and only they run it)
    ws_args: tuple[str, ...] = ()  # ws, ws-h2: more wsload.py / wsh2load.py arguments
    static: bool = False  # a file under /static: runs the static-file servers only
    note: str | None = None  # a line under the row's table


ECHO_LUA = (
    'wrk.method = "POST"\n'
    f'wrk.body = string.rep("x", {ECHO_SIZE})\n'
    'wrk.headers["Content-Type"] = "application/octet-stream"\n'
)

WS_H2_NOTE = (
    "Granian and uvicorn have no row here: neither supports WebSocket over HTTP/2 (RFC 8441). "
    "Granian's HTTP/2 does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL; uvicorn's "
    "experimental HTTP/2 carries no WebSocket. The load generator (bench/wsh2load.py, on the "
    "pure-Python h2 library) is the bottleneck: compare servers by msgs per server "
    "CPU-second (the msgs/CPU-s column); every echo is checked byte for byte."
)

TESTS = [
    Test("plain", "`/` plaintext, 64 connections", "h1", "/", 64),
    Test(
        "access-log",
        "`/` plaintext, 64 connections, access log on and off",
        "h1",
        "/",
        64,
        access_log=True,
    ),
    Test("plain-1c", "`/` plaintext, 1 connection (latency)", "h1", "/", 1),
    Test("json", "`/json`, 64 connections", "h1", "/json", 64),
    Test("echo", "`/echo` POST 4 KiB echoed, 64 connections", "h1", "/echo", 64, lua=ECHO_LUA),
    Test("big", "`/big` 1 MiB response, 16 connections", "h1", "/big", 16),
    Test("stream", "`/stream` 64 x 16 KiB chunked, 16 connections", "h1", "/stream", 16),
    Test("h2", "HTTP/2 (h2c) `/`, 8 connections x 8 streams", "h2", "/", 8, 8),
    Test("tls-h1", "HTTPS HTTP/1.1 `/`, 64 connections", "h1", "/", 64, tls=True),
    Test(
        "tls-h2", "HTTPS HTTP/2 (ALPN h2) `/`, 8 connections x 8 streams", "h2", "/", 8, 8, tls=True
    ),
    Test(
        "static-1k",
        "static file of 1 KiB (`/static/1k.bin`), 64 connections",
        "h1",
        "/static/1k.bin",
        64,
        static=True,
    ),
    Test(
        "static-1m",
        "static file of 1 MiB (`/static/1m.bin`), 16 connections",
        "h1",
        "/static/1m.bin",
        16,
        static=True,
    ),
    Test(
        "ws",
        "WebSocket echo, 64 B binary messages, 8 connections x 16 in flight",
        "ws",
        "/ws",
        8,
        16,
    ),
    Test(
        "ws-deflate",
        "WebSocket echo with permessage-deflate (where the server has it), 1 KiB JSON-like "
        "text messages, 8 connections x 16 in flight",
        "ws",
        "/ws",
        8,
        16,
        ws_args=("--deflate", "--size", "1024"),
    ),
    # WebSocket over HTTP/2 (RFC 8441 extended CONNECT, h2c): the load generator (the h2
    # library, pure Python) is the bottleneck here: compare msgs per server CPU-second.
    Test(
        "ws-h2",
        "WebSocket over HTTP/2 (RFC 8441, h2c) echo, 1 KiB JSON-like text messages, "
        "4 connections x 8 WebSockets x 4 in flight: compare msgs/CPU-s, not msgs/s",
        "ws-h2",
        "/ws",
        4,
        8,
        ws_args=("--window", "4", "--size", "1024"),
        note=WS_H2_NOTE,
    ),
    Test(
        "ws-h2-deflate",
        "WebSocket over HTTP/2 (RFC 8441, h2c) echo with permessage-deflate, 1 KiB JSON-like "
        "text messages, 4 connections x 8 WebSockets x 4 in flight: compare msgs/CPU-s",
        "ws-h2",
        "/ws",
        4,
        8,
        ws_args=("--window", "4", "--size", "1024", "--deflate"),
        note=WS_H2_NOTE,
    ),
    # The load generator (aioquic, pure Python) is the bottleneck here: compare req/CPU-s.
    Test(
        "tls-h3",
        "HTTP/3 (QUIC) `/`, 8 connections x 8 streams: compare req/CPU-s, not req/s",
        "h3",
        "/",
        8,
        8,
        tls=True,
    ),
]


@dataclass(frozen=True)
class Suite:
    """A set of servers configured alike, with a pinning policy and a set of tests."""

    key: str
    title: str
    workers: int
    pinned: bool
    tests: tuple[str, ...]


SUITES = {
    "w1": Suite(
        "w1",
        "1 worker, server pinned to CPU 0, load generator to CPU 1",
        1,
        True,
        tuple(t.key for t in TESTS),
    ),
    "w2": Suite(
        "w2",
        "2 workers, unpinned (the load generator shares both cores)",
        2,
        False,
        ("plain", "json", "h2"),
    ),
}


# --- /proc accounting ------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, int]]:
    """``pid -> (ppid, CPU ticks)`` for every process: its own utime + stime, plus the
    cutime + cstime of the children it has reaped, so that a worker that exits during a
    run (recycling) still counts, in its parent, once it is gone."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ")".
        fields = data[data.rindex(b")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    return table


def process_tree(root: int) -> tuple[list[int], float]:
    """The pids of ``root`` and its descendants, and their CPU seconds so far."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            pids.append(pid)
            todo.extend(children.get(pid, ()))
    return pids, sum(table[p][1] for p in pids) / CLK_TCK


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mib(root: int) -> float:
    """Resident memory of ``root`` and its descendants, MiB (sum of ``VmRSS``)."""
    return sum(_rss_kib(pid) for pid in process_tree(root)[0]) / 1024


def worker_rss_mib(root: int) -> float:
    """Resident memory of the workers, MiB: ``root``'s descendants, or ``root`` if it has none.

    With 1 worker that is the one process serving requests: gristmill's and Granian's
    worker below their supervisor (which is left out), uvicorn's single process.
    """
    pids = process_tree(root)[0]
    return sum(_rss_kib(pid) for pid in (pids[1:] or pids)) / 1024


# --- Starting, checking, stopping ------------------------------------------------------------


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_ports(count: int, start: int) -> list[int]:
    ports, port = [], start
    while len(ports) < count:
        if port_free(port):
            ports.append(port)
        port += 1
    return ports


def log_tail(path: Path | None, lines: int = 3) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").strip().splitlines()
    return " / ".join(line.strip() for line in text[-lines:])


_TLS_FILES: tuple[str, str] | None = None


def tls_files() -> tuple[str, str]:
    """A self-signed certificate and its key for 127.0.0.1/localhost, made once per run.

    EC P-256, as most sites now serve: the handshake cost is what a deployment pays. The
    load generators do not verify certificates, so no CA is needed. The files live in a
    temporary directory removed when the run ends.
    """
    global _TLS_FILES
    if _TLS_FILES is None:
        tmp = Path(tempfile.mkdtemp(prefix="gristmill-bench-tls-"))
        atexit.register(shutil.rmtree, tmp, True)
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
        _TLS_FILES = (str(cert), str(key))
    return _TLS_FILES


#: The files of the static rows: name -> size.
STATIC_FILES = {"1k.bin": 1024, "1m.bin": 1024 * 1024}
_STATIC_DIR: Path | None = None


def static_dir() -> Path:
    """The directory the static-file servers serve at /static, made once per run: random
    bytes (nothing compresses them), world-readable for nginx's unprivileged workers."""
    global _STATIC_DIR
    if _STATIC_DIR is None:
        tmp = Path(tempfile.mkdtemp(prefix="gristmill-bench-static-"))
        atexit.register(shutil.rmtree, tmp, True)
        tmp.chmod(0o755)
        for name, size in STATIC_FILES.items():
            (tmp / name).write_bytes(os.urandom(size))
            (tmp / name).chmod(0o644)
        _STATIC_DIR = tmp
    return _STATIC_DIR


def nginx_conf(port: int, workers: int, logdir: Path) -> Path:
    """nginx serving :func:`static_dir` at /static, as deployed in front of an app server:
    sendfile on, no access log (like every server here), its state in ``logdir``."""
    state = logdir / "nginx"
    state.mkdir(parents=True, exist_ok=True)
    conf = state / "nginx.conf"
    temps = "\n".join(
        f"    {kind}_temp_path {state / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"""daemon off;
worker_processes {workers};
pid {state / "nginx.pid"};
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    types {{ application/octet-stream bin; }}
{temps}
    server {{
        listen {HOST}:{port} backlog=2048;
        location /static/ {{ alias {static_dir()}/; }}
        location / {{ return 404; }}
    }}
}}
"""
    )
    return conf


def start_server(srv: Server, workers: int, pin: str | None, logdir: Path) -> None:
    holes = {"port": srv.port, "workers": workers}
    if srv.tls:
        holes["cert"], holes["key"] = tls_files()
    if srv.static:
        holes["static"] = str(static_dir())
        if any("{nginx_conf}" in part for part in srv.cmd):
            holes["nginx_conf"] = str(nginx_conf(srv.port, workers, logdir))
    cmd = [part.format(**holes) for part in srv.cmd]
    if pin is not None:
        cmd = ["taskset", "-c", pin] + cmd
    srv.log = logdir / f"{srv.name}.log"
    env = dict(os.environ, PYTHONPATH=str(APPS), PYTHONUNBUFFERED="1")
    with open(srv.log, "wb") as log:
        # A session of its own, so stopping it can signal its whole process group.
        srv.proc = subprocess.Popen(
            cmd,
            cwd=APPS,
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def wait_ready(srv: Server, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            srv.skipped = (
                f"exited with code {srv.proc.returncode} at start-up: "
                f"{log_tail(srv.log) or 'no output'}"
            )
            return False
        try:
            socket.create_connection((HOST, srv.port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    srv.skipped = f"port {srv.port} not accepting after {timeout:.0f} s: {log_tail(srv.log)}"
    return False


def http_get(port: int, method: str, path: str, body: bytes | None = None, tls: bool = False):
    if tls:
        # The bench's own self-signed certificate: nothing to verify it against.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = HTTPSConnection(HOST, port, timeout=10, context=ctx)
    else:
        conn = HTTPConnection(HOST, port, timeout=10)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("content-length")
    finally:
        conn.close()


def check_static(srv: Server) -> str | None:
    """``None`` when every static file comes back whole (and a missing one is a 404)."""
    for name in STATIC_FILES:
        want = (static_dir() / name).read_bytes()
        try:
            status, got, _ = http_get(srv.port, "GET", f"/static/{name}")
        except (OSError, ValueError) as exc:
            return f"GET /static/{name}: {exc!r}"
        if status != 200 or got != want:
            return (
                f"GET /static/{name}: status {status}, {len(got)} bytes (wanted 200, {len(want)})"
            )
    status, _, _ = http_get(srv.port, "GET", "/static/nope.bin")
    if status != 404:
        return f"GET /static/nope.bin: status {status} (wanted 404)"
    return None


def check_http1(srv: Server) -> str | None:
    """``None`` when every route answers exactly as specified, else what went wrong."""
    echo = bytes(range(256)) * (ECHO_SIZE // 256)
    expected = [
        ("GET", "/", None, HELLO),
        ("GET", "/json", None, JSON_BODY),
        ("POST", "/echo", echo, echo),
        ("GET", "/big", None, b"x" * BIG_SIZE),
        ("GET", "/stream", None, b"x" * STREAM_SIZE),
    ]
    for method, path, body, want in expected:
        try:
            status, got, _ = http_get(srv.port, method, path, body, srv.tls)
        except (OSError, ValueError) as exc:
            return f"{method} {path}: {exc!r}"
        if status != 200 or got != want:
            return f"{method} {path}: status {status}, {len(got)} bytes (wanted 200, {len(want)})"
    status, _, _ = http_get(srv.port, "GET", "/nope", tls=srv.tls)
    if status != 404:
        return f"GET /nope: status {status} (wanted 404)"
    return None


def check_h2(srv: Server) -> str | None:
    scheme = "https" if srv.tls else "http"
    cmd = ["h2load", "-n", "32", "-c", "2", "-m", "4", f"{scheme}://{HOST}:{srv.port}/"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except subprocess.TimeoutExpired:
        return "h2load check timed out"
    parsed = parse_h2load(out)
    if parsed["requests"] != 32 or parsed["errors"]:
        line = next((ln for ln in out.splitlines() if ln.startswith("requests:")), out[-200:])
        return f"{'h2 (TLS)' if srv.tls else 'h2c'} check failed: {line.strip()}"
    return None


def _check_with_loadgen(script: str, url: str, what: str, python_bin: Path) -> str | None:
    """Run one of the bench's Python load generators in its ``--check`` mode (2
    connections, every request or message must succeed) against ``url``."""
    cmd = [str(python_bin), str(BENCH / script), "--check", "--connections", "2", url]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return f"{what} check timed out"
    if res.returncode != 0:
        return f"{what} check failed: {(res.stdout or res.stderr).strip()[-200:]}"
    return None


def check_h3(srv: Server, python_bin: Path) -> str | None:
    return _check_with_loadgen("h3load.py", f"https://{HOST}:{srv.port}/", "HTTP/3", python_bin)


def check_ws(srv: Server, python_bin: Path) -> str | None:
    return _check_with_loadgen("wsload.py", f"ws://{HOST}:{srv.port}/ws", "WebSocket", python_bin)


def check_ws_h2(srv: Server, python_bin: Path) -> str | None:
    return _check_with_loadgen(
        "wsh2load.py", f"ws://{HOST}:{srv.port}/ws", "WebSocket over HTTP/2", python_bin
    )


def stop_server(srv: Server) -> None:
    if srv.proc is None or srv.proc.poll() is not None:
        return
    try:
        os.killpg(srv.proc.pid, signal.SIGTERM)
        srv.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(timeout=5)
    except ProcessLookupError:
        pass


# --- Load generators and their output --------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def parse_wrk(out: str) -> dict:
    res = {"rps": 0.0, "requests": 0, "p50_ms": None, "p99_ms": None, "errors": 0}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        res["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in", out):
        res["requests"] = int(m.group(1))
    if m := re.search(r"^\s+50%\s+(\S+)", out, re.M):
        res["p50_ms"] = _ms(m.group(1))
    if m := re.search(r"^\s+99%\s+(\S+)", out, re.M):
        res["p99_ms"] = _ms(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        res["errors"] += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        res["errors"] += sum(int(g) for g in m.groups())
    return res


def parse_h2load(out: str) -> dict:
    res = {"rps": 0.0, "requests": 0, "p50_ms": None, "p99_ms": None, "errors": 0}
    if m := re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out):
        res["rps"] = float(m.group(1))
    if m := re.search(
        r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, "
        r"\d+ failed, (\d+) errored, (\d+) timeout",
        out,
    ):
        res["requests"] = int(m.group(1))
        res["errors"] += int(m.group(2)) + int(m.group(3))
    if m := re.search(r"status codes: \d+ 2xx, \d+ 3xx, (\d+) 4xx, (\d+) 5xx", out):
        res["errors"] += int(m.group(1)) + int(m.group(2))
    return res


def parse_wsload(out: str) -> dict:
    """wsload.py's JSON line, or wsh2load.py's (which adds latency percentiles)."""
    try:
        data = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        data = {"errors": 1}
    return {
        "rps": float(data.get("msgs_per_s", 0.0)),
        "requests": int(data.get("messages", 0)),
        "p50_ms": data.get("p50_ms"),
        "p99_ms": data.get("p99_ms"),
        "errors": int(data.get("errors", 0)),
    }


def load_command(
    test: Test, srv: Server, duration: float, threads: int, python_bin: Path, scratch: Path
) -> list[str]:
    url = f"{'https' if test.tls else 'http'}://{HOST}:{srv.port}{test.path}"
    secs = f"{max(1, round(duration))}s"

    def python_loadgen(script: str, per_connection: str, target: str) -> list[str]:
        # bench/h3load.py, wsh2load.py, wsload.py: one command-line shape.
        return [
            str(python_bin),
            str(BENCH / script),
            "--connections",
            str(test.conns),
            per_connection,
            str(test.streams),
            "--duration",
            str(duration),
            *test.ws_args,
            target,
        ]

    if test.kind == "h1":
        cmd = [
            "wrk",
            "-t",
            str(min(threads, test.conns)),
            "-c",
            str(test.conns),
            "-d",
            secs,
            "--timeout",
            "5s",
            "--latency",
        ]
        if test.lua:
            script = scratch / f"{test.key}.lua"
            script.write_text(test.lua)
            cmd += ["-s", str(script)]
        return cmd + [url]

    if test.kind == "h3":
        return python_loadgen("h3load.py", "--streams", url)
    if test.kind == "h2":
        return [
            "h2load",
            "-t",
            str(threads),
            "-c",
            str(test.conns),
            "-m",
            str(test.streams),
            "-D",
            str(max(1, round(duration))),
            url,
        ]
    ws = f"ws://{HOST}:{srv.port}{test.path}"
    if test.kind == "ws-h2":
        return python_loadgen("wsh2load.py", "--streams", ws)
    return python_loadgen("wsload.py", "--window", ws)


def parse_h3load(out: str) -> dict:
    try:
        data = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        data = {"errors": 1}
    return {
        "rps": float(data.get("rps", 0.0)),
        "requests": int(data.get("requests", 0)),
        "p50_ms": None,
        "p99_ms": None,
        "errors": int(data.get("errors", 0)),
    }


PARSERS = {
    "h1": parse_wrk,
    "h2": parse_h2load,
    "ws": parse_wsload,
    "ws-h2": parse_wsload,
    "h3": parse_h3load,
}


def run_once(
    test: Test, srv: Server, duration: float, suite: Suite, python_bin: Path, scratch: Path
) -> dict:
    """One measured run of ``test`` against ``srv``, with the server's CPU and memory."""
    threads = 1 if suite.pinned else 2
    cmd = load_command(test, srv, duration, threads, python_bin, scratch)
    if suite.pinned:
        cmd = ["taskset", "-c", "1"] + cmd
    _, cpu0 = process_tree(srv.proc.pid)
    gen0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
        out = res.stdout
    except subprocess.TimeoutExpired:
        out = ""
    wall = time.monotonic() - t0
    _, cpu1 = process_tree(srv.proc.pid)
    # The servers are children too, but only reaped children count here: this is the load
    # generator alone, so a row whose generator sat at ~100 % was limited by it, not the server.
    gen1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    gen = (gen1.ru_utime + gen1.ru_stime) - (gen0.ru_utime + gen0.ru_stime)
    parsed = PARSERS[test.kind](out)
    if not out:
        parsed["errors"] = max(parsed["errors"], 1)
    cpu = cpu1 - cpu0
    parsed.update(
        cpu_pct=100.0 * cpu / wall if wall else 0.0,
        gen_cpu_pct=100.0 * gen / wall if wall else 0.0,
        req_per_cpu_s=parsed["requests"] / cpu if cpu > 0 else None,
        rss_mib=tree_rss_mib(srv.proc.pid),
        alive=srv.proc.poll() is None,
    )
    return parsed


# --- Orchestration ---------------------------------------------------------------------------


def takes_part(srv: Server, test: Test, servers: list[Server]) -> bool:
    """Whether ``srv`` runs ``test`` among ``servers``.

    The access-log test runs each server with its access log on next to its twin with the
    log off (both must be there); the log-on servers run nothing else.
    """
    if test.access_log:
        if srv.access_log:
            return any(o.name == srv.twin_of for o in servers)
        return any(o.access_log and o.twin_of == srv.name for o in servers)
    if srv.access_log or srv.tls != test.tls or srv.static != test.static:
        return False
    if test.kind == "h3" or srv.h3:
        return test.kind == "h3" and srv.h3
    if test.kind == "h1":
        return srv.http1
    if test.kind == "h2":
        return srv.h2
    if test.kind == "ws-h2":
        return srv.ws_h2
    return srv.ws


def participant_groups(test: Test, servers: list[Server]) -> list[list[Server]]:
    """The live servers that run ``test``, in groups measured back to back.

    A group is one server, except in the access-log test: there it is a log-off server and
    its log-on twin, kept adjacent so the pair sees the same background load.
    """
    live = [s for s in servers if not s.skipped]
    if not test.access_log:
        return [[s] for s in live if takes_part(s, test, live)]
    by_name = {s.name: s for s in live}
    return [[by_name[s.twin_of], s] for s in live if s.access_log and s.twin_of in by_name]


def round_order(groups: list[list[Server]], rnd: int) -> list[Server]:
    """Rotate the groups by one per round, and the servers within each group likewise."""
    shift = rnd % len(groups)
    order = []
    for group in groups[shift:] + groups[:shift]:
        k = rnd % len(group)
        order += group[k:] + group[:k]
    return order


def select_servers(specs: list[Server], names: list[str] | None, tests: list[Test]) -> list[Server]:
    """The servers named (all when none are), with their twins, less those that run no test.

    Twins come along so that naming ``granian-wsgi`` also brings the ``--http 2`` Granian
    the h2 row is compared with; without it that row has no *vs Granian* ratio.
    """
    chosen = [
        s
        for s in specs
        if (names and s.name in names) or (not s.opt_in and (not names or s.twin_of in names))
    ]
    return [s for s in chosen if any(takes_part(s, t, chosen) for t in tests)]


def compile_apps(python_bin: Path) -> None:
    """Write the apps' bytecode (``__pycache__``) with the servers' interpreter, as an
    installed application has it (pip compiles what it installs). Where the environment
    sets ``PYTHONDONTWRITEBYTECODE`` (CI images often do) every worker of every server
    would otherwise compile the app's source again as it starts: nothing in a steady
    run, but ~1 ms of every worker replacement in the recycling rows."""
    subprocess.run([str(python_bin), "-m", "compileall", "-q", str(APPS)], check=True)


def bring_up(
    servers: list[Server], workers: int, pin: str | None, logdir: Path, args, python_bin: Path
) -> None:
    """Start every server at once, wait for each port, and gate each on the checks."""
    say = print
    compile_apps(python_bin)
    for srv in servers:
        if srv.name == "ceiling" and not CEILING.exists():
            srv.skipped = f"{CEILING} not built (bench.sh builds it)"
            continue
        exe = srv.cmd[0]
        if not Path(exe).exists():
            srv.skipped = f"{Path(exe).name} is not installed in the bench venv"
            continue
        start_server(srv, workers, pin, logdir)
    for srv in servers:
        if srv.skipped or not wait_ready(srv, args.start_timeout):
            say(f"  skip {srv.name}: {srv.skipped}")
            continue
        check(srv, python_bin)
        if srv.skipped:
            say(f"  skip {srv.name}: {srv.skipped}")
            stop_server(srv)
        else:
            extra = f" ({'; '.join(srv.notes)})" if srv.notes else ""
            say(f"  ok   {srv.name} on port {srv.port}{extra}")


def server_summary(servers: list[Server]) -> dict:
    return {
        s.name: {
            "interface": s.interface,
            "port": s.port,
            "skipped": s.skipped,
            "notes": s.notes,
            "command": s.cmd,
            "twin_of": s.twin_of,
            "access_log": s.access_log,
        }
        for s in servers
    }


def run_suite(suite: Suite, args, python_bin: Path) -> dict:
    say = print
    tests = [t for t in TESTS if t.key in suite.tests and (not args.tests or t.key in args.tests)]
    servers = select_servers(
        server_specs(python_bin, suite.workers, args.threads), args.servers, tests
    )
    logdir = RESULTS / "logs" / suite.key
    logdir.mkdir(parents=True, exist_ok=True)
    for srv, port in zip(servers, pick_ports(len(servers), BASE_PORT), strict=True):
        srv.port = port
    pin = "0" if suite.pinned else None
    say(f"\n== {suite.title}")
    runs: dict[str, dict[str, list[dict]]] = {t.key: {} for t in tests}
    try:
        bring_up(servers, suite.workers, pin, logdir, args, python_bin)
        with tempfile.TemporaryDirectory(prefix="gristmill-bench-") as tmp:
            scratch = Path(tmp)
            say(f"  warm-up {args.warmup:g} s each")
            for srv in servers:
                if srv.skipped:
                    continue
                warm = next((t for t in tests if takes_part(srv, t, servers)), None)
                if warm is not None:
                    run_once(warm, srv, args.warmup, suite, python_bin, scratch)
            for rnd in range(args.rounds):
                for test in tests:
                    groups = participant_groups(test, servers)
                    if not groups:
                        continue
                    for srv in round_order(groups, rnd):
                        res = run_once(test, srv, args.duration, suite, python_bin, scratch)
                        res["round"] = rnd
                        runs[test.key].setdefault(srv.name, []).append(res)
                        err = f"  ERRORS {res['errors']}" if res["errors"] else ""
                        say(
                            f"  r{rnd + 1} {test.key:<10} {srv.name:<18} "
                            f"{res['rps']:>10.0f}/s  cpu {res['cpu_pct']:>3.0f}%{err}"
                        )
                        if not res["alive"]:
                            srv.skipped = f"died during {test.key}: {log_tail(srv.log)}"
                            say(f"  skip {srv.name}: {srv.skipped}")
    finally:
        for srv in servers:
            stop_server(srv)
    return {
        "suite": dataclasses.asdict(suite),
        "servers": server_summary(servers),
        "tests": [dataclasses.asdict(t) for t in tests],
        "runs": runs,
    }


def check(srv: Server, python_bin: Path) -> None:
    """Correctness gate: a server that answers a route wrongly is not measured at all."""
    if srv.static:
        why = check_static(srv)
        if why:
            srv.skipped = f"wrong answer: {why}"
        return
    if srv.http1:
        why = check_http1(srv)
        if why:
            tail = log_tail(srv.log)
            srv.skipped = f"wrong answer: {why}" + (f" (its log: {tail})" if tail else "")
            return
    if srv.h2:
        why = check_h2(srv)
        if why and not srv.http1:
            srv.skipped = why
            return
        if why:
            srv.h2 = False
            srv.notes.append(f"no h2 row: {why}")
    if srv.h3:
        why = check_h3(srv, python_bin)
        if why:
            srv.skipped = why
            return
    if srv.ws:
        why = check_ws(srv, python_bin)
        if why:
            srv.ws = False
            srv.notes.append(f"no WebSocket row: {why}")
    if srv.ws_h2:
        why = check_ws_h2(srv, python_bin)
        if why:
            srv.ws_h2 = False
            srv.notes.append(f"no WebSocket-over-HTTP/2 row: {why}")


# --- RSS growth mode -------------------------------------------------------------------------

RSS_SERVERS = ("gristmill-wsgi", "gristmill-asgi", "granian-wsgi", "granian-asgi")
# The routes of the RSS run, as requests per 100, spread evenly over each cycle of 100.
RSS_MIX = {"/": 44, "/json": 30, "/echo": 24, "/big": 1, "/stream": 1}
RSS_CONNS = 64
RSS_RUN_MAX_S = 1.0  # longest wrk run: bounds the overshoot when the rate estimate is off


def mix_lua(mix: dict[str, int]) -> str:
    """A wrk script cycling through the requests of ``mix`` (POST for ``/echo``, else GET)."""
    slots = sorted(((j + 0.5) / n, path) for path, n in mix.items() for j in range(n))
    lines = [
        "-- bench/run.py --rss-growth: the route mix, cycled in a fixed order.",
        "local reqs = {}",
        "local i = 0",
        "function init(args)",
        '  local headers = {["Content-Type"] = "application/octet-stream"}',
        f'  local body = string.rep("x", {ECHO_SIZE})',
    ]
    for k, (_, path) in enumerate(slots, 1):
        if path == "/echo":
            lines.append(f'  reqs[{k}] = wrk.format("POST", "/echo", headers, body)')
        else:
            lines.append(f'  reqs[{k}] = wrk.format("GET", "{path}")')
    lines += [
        "end",
        "function request()",
        "  i = i % #reqs + 1",
        "  return reqs[i]",
        "end",
    ]
    return "\n".join(lines) + "\n"


def rss_drive(srv: Server, want: int, rate: float | None, script: Path) -> dict:
    """One wrk run of the mix against ``srv``, for about ``want`` requests or 1 s if fewer.

    wrk runs for a duration, not a count, and takes whole seconds: it gets a long one and
    is stopped with SIGINT (after which it reports as usual) once ``want`` requests should
    be done at ``rate`` (the rate of the server's previous run). Runs of at most a second
    keep a wrong estimate cheap: these shared machines slow a server down by 10x at times.
    """
    secs = min(RSS_RUN_MAX_S, max(0.25, want / rate)) if rate else RSS_RUN_MAX_S
    cmd = ["taskset", "-c", "1", "wrk", "-t", "1", "-c", str(RSS_CONNS)]
    cmd += ["-d", f"{int(secs) + 10}s", "--timeout", "5s", "-s", str(script)]
    cmd += [f"http://{HOST}:{srv.port}/"]
    t0 = time.monotonic()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as wrk:
        time.sleep(secs)
        wrk.send_signal(signal.SIGINT)
        try:
            out, err = wrk.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            wrk.kill()
            out, err = "", "wrk did not stop within 30 s of SIGINT"
    res = parse_wrk(out)
    if not out:
        res["errors"] = max(res["errors"], 1)
    res["wall"] = time.monotonic() - t0
    if not res["requests"]:
        res["why"] = (
            " / ".join((out + err).strip().splitlines()[-3:]) or f"wrk exit {wrk.returncode}"
        )
    return res


def rss_sample(srv: Server, requests: int, t0: float) -> dict:
    return {
        "requests": requests,
        "seconds": round(time.monotonic() - t0, 1),
        "worker_mib": round(worker_rss_mib(srv.proc.pid), 2),
        "tree_mib": round(tree_rss_mib(srv.proc.pid), 2),
    }


def run_rss(args, python_bin: Path) -> dict:
    """Drive ``args.rss_growth`` requests through each server and follow its worker's RSS.

    All servers run at once (1 worker, pinned to CPU 0, wrk on CPU 1) and take turns: each
    turn gives one server about ``requests / samples`` requests of the route mix and then
    samples its RSS, with the order rotated per turn as in the suites.
    """
    say = print
    names = args.servers or RSS_SERVERS
    servers = [s for s in server_specs(python_bin, 1, args.threads) if s.name in names and s.http1]
    logdir = RESULTS / "logs" / "rss"
    logdir.mkdir(parents=True, exist_ok=True)
    for srv, port in zip(servers, pick_ports(len(servers), BASE_PORT), strict=True):
        srv.port = port
    total, warmup = args.rss_growth, args.rss_warmup
    chunk = max(1, total // max(1, args.rss_samples))
    state = {s.name: {"requests": 0, "errors": 0, "busy_s": 0.0, "samples": []} for s in servers}
    say(f"\n== RSS growth: {total:,} requests per server after {warmup:,} of warm-up")
    t0 = time.monotonic()
    try:
        bring_up(servers, 1, "0", logdir, args, python_bin)
        with tempfile.TemporaryDirectory(prefix="gristmill-bench-") as tmp:
            script = Path(tmp) / "mix.lua"
            script.write_text(mix_lua(RSS_MIX))
            rate: dict[str, float | None] = {s.name: None for s in servers}

            def turn(srv: Server, want: int, when: str) -> dict:
                """wrk runs until ``want`` requests are done, or the server fails.

                A server that dies, or completes no request in 3 runs in a row, is driven
                no more.
                """
                done = {"requests": 0, "errors": 0, "wall": 0.0}
                idle = 0
                while not srv.skipped and done["requests"] < want:
                    res = rss_drive(srv, want - done["requests"], rate[srv.name], script)
                    rate[srv.name] = res["rps"] or rate[srv.name]
                    for key in done:
                        done[key] += res[key]
                    idle = 0 if res["requests"] else idle + 1
                    if srv.proc.poll() is not None:
                        srv.skipped = f"died {when}: {log_tail(srv.log)}"
                    elif idle == 3:
                        srv.skipped = f"no request completed in 3 wrk runs {when}: {res['why']}"
                    if srv.skipped:
                        say(f"  skip {srv.name}: {srv.skipped}")
                return done

            for srv in servers:
                done = turn(srv, warmup, "during the warm-up")["requests"]
                if not srv.skipped:
                    state[srv.name]["samples"].append(rss_sample(srv, 0, t0))
                    start = state[srv.name]["samples"][0]["worker_mib"]
                    say(f"  warm {srv.name:<18} {done:>9,} requests  worker RSS {start:.1f} MiB")
            rnd = 0
            while True:
                todo = [s for s in servers if not s.skipped and state[s.name]["requests"] < total]
                if not todo:
                    break
                shift = rnd % len(todo)
                for srv in todo[shift:] + todo[:shift]:
                    st = state[srv.name]
                    when = f"after {st['requests']:,} requests"
                    res = turn(srv, min(chunk, total - st["requests"]), when)
                    st["busy_s"] += res["wall"]
                    st["requests"] += res["requests"]
                    st["errors"] += res["errors"]
                    if srv.skipped:
                        continue
                    sample = rss_sample(srv, st["requests"], t0)
                    st["samples"].append(sample)
                    err = f"  ERRORS {st['errors']}" if st["errors"] else ""
                    say(
                        f"  {srv.name:<18} {st['requests']:>9,} requests  "
                        f"worker RSS {sample['worker_mib']:.1f} MiB  "
                        f"(tree {sample['tree_mib']:.1f}){err}"
                    )
                rnd += 1
    finally:
        for srv in servers:
            stop_server(srv)
    return {
        "requests": total,
        "warmup": warmup,
        "chunk": chunk,
        "mix": RSS_MIX,
        "connections": RSS_CONNS,
        "servers": server_summary(servers),
        "state": state,
    }


def _growth(start: float, end: float) -> str:
    return f"{100 * (end - start) / start:+.1f} %" if start else "—"


def _trend(samples: list[dict], total: int) -> str:
    """The least-squares slope of worker RSS over requests, as growth per ``total`` requests.

    Each sample moves by about ±1 MiB with what happened to be in flight (a 1 MiB `/big`
    body, buffers the allocator has not returned yet), which is a few % of a ~30 MiB worker:
    a leak shows as a steady slope through all the samples, not in any two of them.
    """
    if len(samples) < 3:
        return "—"
    xs = [x["requests"] for x in samples]
    ys = [x["worker_mib"] for x in samples]
    slope, intercept = statistics.linear_regression(xs, ys)
    return f"{100 * slope * total / intercept:+.1f} %" if intercept > 0 else "—"


def render_rss(env: dict, result: dict) -> str:
    total = result["requests"]
    mix = ", ".join(f"`{path}` {n}" for path, n in result["mix"].items())
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    lines = [
        f"# gristmill bench — RSS growth over {total:,} requests",
        "",
        f"- Date: {env['date']}",
        f"- Machine: `nproc` = {env['nproc']}, kernel `{env['kernel']}`, {env['cpu']}, "
        f"Python {env['python']}",
        f"- Command: `{env['command']}`",
        f"- Load: {env['wrk']}, 1 thread, {result['connections']} connections, on CPU 1; "
        f"each server 1 worker on CPU 0. Route mix per 100 requests: {mix} "
        f"(`/echo` POSTs {ECHO_SIZE} bytes). {result['warmup']:,} requests of warm-up, then "
        f"turns of about {result['chunk']:,} requests per server, rotated, with the RSS "
        "sampled after each turn",
        f"- Versions: {versions}",
        "",
        "*start* is the worker's RSS after the warm-up, *end* after the last request; "
        "*growth* is end ÷ start − 1; *trend* is the least-squares line through all the "
        "samples, as growth over the requests of the run: single samples move by about "
        "±1 MiB with what is in flight, a leak shows as a steady slope. *worker* is the "
        "process serving requests (without a supervisor or master process); *tree* adds "
        "those. The target: growth < 5 % over 1,000,000 requests.",
        "",
        "| server | requests | req/s | worker start MiB | end MiB | max MiB | growth "
        "| trend | tree start → end MiB | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    servers = result["servers"]
    series = []
    for name, st in result["state"].items():
        samples = st["samples"]
        if len(samples) < 2:
            continue
        first, last = samples[0], samples[-1]
        worker = [x["worker_mib"] for x in samples]
        rps = st["requests"] / st["busy_s"] if st["busy_s"] else None
        err = f"**{st['errors']} ⚠**" if st["errors"] else "0"
        partial = " (stopped early)" if servers[name]["skipped"] else ""
        lines.append(
            f"| {name}{partial} | {st['requests']:,} | {_fmt_rate(rps)} "
            f"| {first['worker_mib']:.1f} | {last['worker_mib']:.1f} | {max(worker):.1f} "
            f"| {_growth(first['worker_mib'], last['worker_mib'])} "
            f"| {_trend(samples, result['requests'])} "
            f"| {first['tree_mib']:.1f} → {last['tree_mib']:.1f} | {err} |"
        )
        series.append(f"- **{name}**: {', '.join(f'{w:.1f}' for w in worker)}")
    lines += ["", "Worker RSS samples, MiB (after the warm-up, then after each turn):", ""]
    lines += series + [""]
    skipped = {n: s["skipped"] for n, s in servers.items() if s["skipped"]}
    if skipped:
        lines += ["Skipped or stopped servers:", ""]
        lines += [f"- **{n}**: {why}" for n, why in skipped.items()] + [""]
    return "\n".join(lines)


# --- Report ----------------------------------------------------------------------------------


def _fmt_rate(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100_000:
        return f"{value / 1000:.0f}k"
    if value >= 10_000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} µs" if value < 1 else f"{value:.2f} ms"


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def baseline_name(info: dict, test: Test) -> str | None:
    """The Granian a row is compared with: same interface, same protocol, same logging."""
    interface = info["interface"]
    if interface == "static":
        return "granian-static"
    if interface not in ("wsgi", "asgi") or test.kind in ("h3", "ws-h2"):
        # No Granian speaks HTTP/3 or RFC 8441: those rows compare with hypercorn.
        return None
    if test.tls:
        return f"granian-{interface}-tls-h2" if test.kind == "h2" else f"granian-{interface}-tls"
    if test.kind == "h2":
        return f"granian-{interface}-h2"
    return f"granian-{interface}-log" if info.get("access_log") else f"granian-{interface}"


def _missing_baselines(test: Test, per_server: dict, servers: dict) -> list[str]:
    """A line per Granian baseline that a row of this table lacks, saying why."""
    wanting: dict[str, list[str]] = {}
    for name in per_server:
        base = baseline_name(servers[name], test)
        if base and base != name and base not in per_server:
            wanting.setdefault(base, []).append(name)
    lines = []
    for base, names in wanting.items():
        info = servers.get(base)
        if info is None:
            why = "was not in this run (name it, or the server it is a twin of, in --servers)"
        elif info["skipped"]:
            why = f"was skipped: {info['skipped']}"
        else:
            why = f"did not take part: {'; '.join(info['notes']) or 'no result'}"
        rows = ", ".join(names)
        lines += [f"No *vs Granian* for {rows}: {base} {why}.", ""]
    return lines


def _access_log_cost(per_server: dict, servers: dict) -> list[str]:
    """log on ÷ log off per server: of the req/s medians, within each round, and of req/CPU-s.

    The req/CPU-s ratio is the steadier one when other load steals CPU from the server (it
    is what the req/s ratio converges to when the server has its core to itself).
    """
    lines = [
        "Access log cost (the target: at most 15 % of req/s on `/`, i.e. on ÷ off ≥ 0.85×):",
        "",
        "| server | log off req/s | log on req/s | on ÷ off | cost | on ÷ off per round "
        "| on ÷ off, req/CPU-s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for on_name, on_runs in per_server.items():
        off_name = servers[on_name].get("twin_of")
        off_runs = per_server.get(off_name)
        if not servers[on_name].get("access_log") or not off_runs:
            continue
        on = _median([r["rps"] for r in on_runs])
        off = _median([r["rps"] for r in off_runs])
        if not on or not off:
            continue
        off_by_round = {r["round"]: r["rps"] for r in off_runs}
        per_round = [
            f"{r['rps'] / off_by_round[r['round']]:.2f}×"
            for r in on_runs
            if off_by_round.get(r["round"])
        ]
        on_cpu = _median([r["req_per_cpu_s"] for r in on_runs])
        off_cpu = _median([r["req_per_cpu_s"] for r in off_runs])
        cpu_ratio = f"{on_cpu / off_cpu:.2f}×" if on_cpu and off_cpu else "—"
        lines.append(
            f"| {off_name} | {_fmt_rate(off)} | {_fmt_rate(on)} | {on / off:.2f}× "
            f"| {100 * (1 - on / off):.0f} % | {', '.join(per_round)} | {cpu_ratio} |"
        )
    return lines + [""]


def _static_ratios(per_server: dict) -> list[str]:
    """gristmill's requests per CPU-second against Granian's and nginx's, for a static row
    (the targets: at least 1.2x Granian and 0.8x nginx)."""
    per_cpu = {n: _median([r["req_per_cpu_s"] for r in rs]) for n, rs in per_server.items()}
    ours = per_cpu.get("gristmill-static")
    if not ours:
        return []
    parts = [
        f"{ours / per_cpu[peer]:.2f}× {peer}"
        for peer in ("granian-static", "nginx-static")
        if per_cpu.get(peer)
    ]
    if not parts:
        return []
    return [
        f"gristmill-static, req/CPU-s: {', '.join(parts)} "
        "(targets: ≥ 1.2× granian-static, ≥ 0.8× nginx-static).",
        "",
    ]


def _per_cpu_vs(per_server: dict, ours: str, peer: str, unit: str) -> list[str]:
    """A line with ``ours``'s median per-CPU-second rate divided by ``peer``'s."""
    per_cpu = {n: _median([r["req_per_cpu_s"] for r in rs]) for n, rs in per_server.items()}
    if not per_cpu.get(ours) or not per_cpu.get(peer):
        return []
    return [f"{ours}, {unit}/CPU-s: {per_cpu[ours] / per_cpu[peer]:.2f}× {peer}.", ""]


def render_suite(result: dict) -> str:
    suite = result["suite"]
    servers = result["servers"]
    lines = [f"## {suite['title']}", ""]
    for tdict in result["tests"]:
        test = Test(**tdict)
        per_server = result["runs"].get(test.key, {})
        if not per_server:
            continue
        unit = "msgs/s" if test.kind in ("ws", "ws-h2") else "req/s"
        lines += [
            f"### {test.title}",
            "",
            f"| server | {unit} | spread | p50 | p99 | vs Granian | vs ceiling | CPU % "
            f"| {unit[:-2]}/CPU-s | RSS MiB | errors | load-gen CPU % |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        medians = {name: _median([r["rps"] for r in rs]) for name, rs in per_server.items()}
        ceiling = medians.get("ceiling")
        for name, rs in sorted(per_server.items(), key=lambda kv: -(medians[kv[0]] or 0)):
            med = medians[name]
            rates = [r["rps"] for r in rs]
            spread = f"{_fmt_rate(min(rates))}–{_fmt_rate(max(rates))}" if len(rates) > 1 else "—"
            base = baseline_name(servers[name], test)
            base_med = medians.get(base) if base and base != name else None
            vs_granian = f"{med / base_med:.2f}×" if base_med and med is not None else "—"
            vs_ceiling = (
                f"{med / ceiling:.2f}×"
                if ceiling and name != "ceiling" and med is not None
                else "—"
            )
            errors = sum(r["errors"] for r in rs)
            err = f"**{errors} ⚠**" if errors else "0"
            rss = _median([r["rss_mib"] for r in rs])
            p50 = _fmt_ms(_median([r["p50_ms"] for r in rs]))
            p99 = _fmt_ms(_median([r["p99_ms"] for r in rs]))
            lines.append(
                f"| {name} | {_fmt_rate(med)} | {spread} | {p50} | {p99} | {vs_granian}"
                f" | {vs_ceiling}"
                f" | {_median([r['cpu_pct'] for r in rs]):.0f}"
                f" | {_fmt_rate(_median([r['req_per_cpu_s'] for r in rs]))}"
                f" | {rss:.0f} | {err} | {_median([r['gen_cpu_pct'] for r in rs]):.0f} |"
            )
        lines.append("")
        if test.static:
            lines += _static_ratios(per_server)
        if test.kind == "ws-h2":
            lines += _per_cpu_vs(per_server, "gristmill-asgi", "hypercorn", "msgs")
        if test.note:
            lines += [test.note, ""]
        lines += _missing_baselines(test, per_server, servers)
        if test.access_log:
            lines += _access_log_cost(per_server, servers)
    skipped = {n: s for n, s in servers.items() if s["skipped"]}
    notes = {n: s["notes"] for n, s in servers.items() if s["notes"] and not s["skipped"]}
    if skipped or notes:
        lines += ["Skipped or partial servers in this suite:", ""]
        lines += [f"- **{n}** skipped: {s['skipped']}" for n, s in skipped.items()]
        lines += [f"- **{n}**: {'; '.join(ns)}" for n, ns in notes.items()]
        lines.append("")
    return "\n".join(lines)


def tool_version(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    text = (res.stdout + res.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def environment(args) -> dict:
    peers = {}
    for name in PEERS + ("gristmill",):
        try:
            peers[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            peers[name] = "not installed"
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    command = os.environ.get("BENCH_COMMAND") or shlex.join([Path(sys.executable).name, *sys.argv])
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "cpu": cpu,
        "python": platform.python_version(),
        "command": command,
        "mode": "rss" if args.rss_growth else "full" if args.full else "quick",
        "duration": args.duration,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "versions": peers,
        "wrk": tool_version(["wrk", "-v"]),
        "h2load": tool_version(["h2load", "--version"]),
    }


def render(env: dict, suites: list[dict]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    head = [
        f"# gristmill bench — {env['mode']} run",
        "",
        f"- Date: {env['date']}",
        f"- Machine: `nproc` = {env['nproc']}, kernel `{env['kernel']}`, {env['cpu']}, "
        f"Python {env['python']}",
        f"- Command: `{env['command']}`",
        f"- Runs: {env['rounds']} round(s) of {env['duration']:g} s per test and server, "
        f"server order rotated per round, after a {env['warmup']:g} s warm-up; "
        "medians, spread = min–max over rounds",
        f"- Versions: {versions}",
        f"- Load generators: {env['wrk']}; {env['h2load']}; WebSocket: bench/wsload.py; "
        "WebSocket over HTTP/2: bench/wsh2load.py",
        "",
        "Ratios compare medians from this run only. p50/p99 come from wrk and wsh2load; "
        "h2load and wsload report none. CPU % and RSS cover the server's whole process "
        "tree (100 = one core). A row whose load-gen CPU % is near 100 while the server's "
        "is well below was limited by the load generator: read its req/CPU-s instead. "
        "See bench/RESULTS.md for how to read the table.",
        "",
    ]
    return "\n".join(head) + "\n" + "\n".join(render_suite(s) for s in suites)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full",
        action="store_true",
        help="every suite, 3 rounds of 5 s (default: quick, 1 round of 2 s)",
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 3 full, 1 quick)")
    parser.add_argument("--duration", type=float, help="seconds per run (default 5 / 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per server (2 / 1)")
    parser.add_argument(
        "--suites",
        nargs="*",
        choices=sorted(SUITES),
        help="suites to run (default: w1, plus w2 with --full)",
    )
    parser.add_argument("--servers", nargs="*", help="only these servers (names as reported)")
    parser.add_argument(
        "--tests", nargs="*", choices=[t.key for t in TESTS], help="only these tests"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="Python threads per WSGI worker for gristmill and Granian (default 1)",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for each server's port (default 30)",
    )
    parser.add_argument(
        "--rss-growth",
        type=int,
        metavar="N",
        help="instead of the suites: drive N requests (1000000 for the target) of a route mix "
        "through each server and report its worker's RSS growth (servers: "
        f"{' '.join(RSS_SERVERS)} unless --servers)",
    )
    parser.add_argument(
        "--rss-warmup",
        type=int,
        default=50_000,
        metavar="N",
        help="requests per server before the first RSS sample (default 50000)",
    )
    parser.add_argument(
        "--rss-samples",
        type=int,
        default=20,
        metavar="K",
        help="RSS samples per server after the warm-up, one per turn (default 20)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where to write the Markdown report (default bench/results/latest.md, "
        "or rss.md with --rss-growth); the raw data goes next to it as .json",
    )
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.full else 1)
    args.duration = args.duration or (5.0 if args.full else 2.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if args.full else 1.0)
    suites = args.suites or (["w1", "w2"] if args.full else ["w1"])
    if (os.cpu_count() or 1) < 2:
        print("run.py: fewer than 2 CPUs; the pinned suite cannot pin apart", file=sys.stderr)
        return 2
    if args.rss_growth is not None and args.rss_growth < 1:
        parser.error("--rss-growth needs a positive number of requests")
    python_bin = Path(sys.executable)
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = environment(args)
    if args.rss_growth:
        args.out = args.out or RESULTS / "rss.md"
        rss = run_rss(args, python_bin)
        report, data = render_rss(env, rss), {"env": env, "rss": rss}
    else:
        args.out = args.out or RESULTS / "latest.md"
        results = [run_suite(SUITES[key], args, python_bin) for key in suites]
        report, data = render(env, results), {"env": env, "suites": results}
    print("\n" + report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    print(f"written: {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
