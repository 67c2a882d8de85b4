"""Memory per idle keep-alive connection: each bench server (1 worker) takes N
connections that each made one request and then stay open, idle; the server tree's
resident memory before and after, divided by N.

This is what a server pays to hold clients that are not talking (browsers behind a proxy
without connection pooling, long-polling clients, a load balancer's idle pool): the
socket buffers are the kernel's and not counted, the rest (the connection's task, its
protocol state and buffers) is the server's. A worker that replaces another (recycling,
SIGHUP) allocates this afresh for each client that reconnects to it.

Usage (server names from ``run.py``'s table; it needs N + ~100 descriptors)::

    BENCH_VENV=/path/to/venv python bench/idle_conns.py gristmill-wsgi granian-wsgi \
        gristmill-asgi granian-asgi uvicorn --connections 500
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402 - the bench's own server table and helpers

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
BODY = b"Hello, world!"


def one_request(sock: socket.socket) -> None:
    """Send ``GET /`` and read until the whole 13-byte body has arrived."""
    sock.sendall(REQUEST)
    data = b""
    while not data.endswith(BODY):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response was complete")
        data += chunk


def open_idle(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.create_connection((run.HOST, port), timeout=10)
        one_request(s)
        socks.append(s)
    return socks


def measure(srv: run.Server, count: int, logdir: Path) -> str:
    if not Path(srv.cmd[0]).exists():
        return f"{srv.name}: skipped ({Path(srv.cmd[0]).name} is not installed or built)"
    srv.port = run.pick_ports(1, 18400)[0]
    run.start_server(srv, 1, None, logdir)
    try:
        if not run.wait_ready(srv, 30):
            return f"{srv.name}: skipped ({srv.skipped})"
        warm = open_idle(srv.port, 20)  # first-use allocations are not per connection
        time.sleep(0.5)
        before = run.tree_rss_mib(srv.proc.pid)
        try:
            socks = open_idle(srv.port, count)
        except OSError as e:
            return f"{srv.name}: could not hold {count} connections ({e})"
        time.sleep(0.5)
        after = run.tree_rss_mib(srv.proc.pid)
        # Every connection must still be open: a server that closed some would look cheap.
        alive = 0
        for s in socks:
            try:
                one_request(s)
                alive += 1
            except OSError:
                pass
        for s in socks + warm:
            s.close()
        per = (after - before) * 1024 / count
        note = "" if alive == count else f" ({count - alive} closed by the server: not comparable)"
        return (
            f"{srv.name}: {per:.1f} KiB per idle connection ({before:.1f} -> {after:.1f} MiB){note}"
        )
    finally:
        run.stop_server(srv)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("servers", nargs="+", help="server names as in run.py")
    ap.add_argument(
        "--connections", type=int, default=500, help="within every server's connection limit"
    )
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 200
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    venv = Path(os.environ.get("BENCH_VENV") or Path(__file__).parent / ".venv").resolve()
    specs = {s.name: s for s in run.server_specs(venv / "bin" / "python", 1, 1)}
    run.compile_apps(venv / "bin" / "python")
    logdir = Path("/tmp") / f"gristmill-idle-conns-{os.getpid()}"
    logdir.mkdir(parents=True, exist_ok=True)
    for name in args.servers:
        print(measure(specs[name], args.connections, logdir), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
