"""Memory of idle WebSocket connections with permessage-deflate (standard library only).

Starts a server (gristmill, or uvicorn with websockets for comparison) with one worker on
``bench/apps/asgi_app.py``'s ``/ws`` echo, opens ``--connections`` WebSockets offering
permessage-deflate as browsers do, and reads the RSS of the server's process tree three
times: before any connection, with every socket open and idle (handshake only), and
after each socket echoed one ``--size``-byte JSON-like text message, compressed both
ways, and went idle again. That last state is a chat or dashboard at rest: each
connection then holds its deflate and inflate state (context takeover keeps them for
the next message), which is the cost to bound (``--ws-deflate-max-window-bits``).
Prints one JSON object per server:
``{"server", "connections", "deflate", "rss_kib": {"before", "open", "after_message"},
"per_connection_kib": {"open", "after_message"}}``.

The file-descriptor limit is raised to the hard limit for this process and the server.
Run it on a quiet machine (see ``bench/NOTES.md``); the default is 5,000 connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wsload import FrameReader, client_frame, deflate_payload, handshake, json_text  # noqa: E402

BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"
OP_TEXT = 0x1


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_command(name: str, port: int, connections: int, extra: list[str]) -> list[str]:
    vbin = Path(sys.executable).parent
    if name == "gristmill":
        return [
            sys.executable,
            "-m",
            "gristmill",
            "--interface",
            "asgi",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
            "--max-connections",
            str(connections + 64),
            "--backlog",
            "4096",
            "--no-access-log",
            *extra,
            "asgi_app:app",
        ]
    if name == "uvicorn":
        return [
            str(vbin / "uvicorn"),
            "--host",
            HOST,
            "--port",
            str(port),
            "--ws",
            "websockets",
            "--backlog",
            "4096",
            "--no-access-log",
            "--log-level",
            "warning",
            "asgi_app:app",
        ]
    raise SystemExit(f"unknown server {name!r}")


def tree_rss_kib(root: int) -> int:
    """The RSS of ``root`` and its descendants, KiB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            ppid = int(data[data.rindex(b")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not start listening")


def settle(pid: int, seconds: float = 2.0) -> int:
    """The RSS once the server has had ``seconds`` to go quiet."""
    time.sleep(seconds)
    return tree_rss_kib(pid)


async def open_all(port: int, n: int, batch: int = 200) -> tuple[list, bool]:
    conns: list = []
    for start in range(0, n, batch):
        conns += await asyncio.gather(
            *(handshake(HOST, port, "/ws", deflate=True) for _ in range(min(batch, n - start)))
        )
    return conns, all(c[3] for c in conns)


async def one_message_each(conns: list, size: int, batch: int = 200) -> None:
    text = json_text(size)

    async def echo(conn):
        reader, writer, rest, accepted = conn
        payload = deflate_payload(text) if accepted else text
        writer.write(client_frame(payload, OP_TEXT, rsv1=accepted))
        await FrameReader(reader, writer, rest).read_frames(1)

    for start in range(0, len(conns), batch):
        await asyncio.gather(*(echo(c) for c in conns[start : start + batch]))


def measure(name: str, connections: int, size: int, extra: list[str]) -> dict:
    port = free_port()
    proc = subprocess.Popen(
        server_command(name, port, connections, extra),
        cwd=BENCH / "apps",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, proc)
        before = settle(proc.pid)

        async def run() -> dict:
            conns, deflate = await open_all(port, connections)
            opened = await asyncio.to_thread(settle, proc.pid)
            await one_message_each(conns, size)
            after = await asyncio.to_thread(settle, proc.pid)
            for _, writer, _, _ in conns:
                writer.close()
            return {"deflate": deflate, "open": opened, "after_message": after}

        got = asyncio.run(run())
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {
        "server": name,
        "connections": connections,
        "deflate": got["deflate"],
        "rss_kib": {"before": before, "open": got["open"], "after_message": got["after_message"]},
        "per_connection_kib": {
            k: round((got[k] - before) / connections, 1) for k in ("open", "after_message")
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--size", type=int, default=1024, help="bytes of the one message")
    parser.add_argument(
        "--servers", nargs="+", default=["gristmill", "uvicorn"], help="gristmill, uvicorn"
    )
    parser.add_argument(
        "--gristmill-args",
        default="",
        help="more gristmill arguments, e.g. '--ws-deflate-max-window-bits 10'",
    )
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections * 2 + 256:
        parser.error(f"the open-file limit ({hard}) is too low for {args.connections}")
    for name in args.servers:
        if name == "uvicorn" and not shutil.which("uvicorn", path=str(Path(sys.executable).parent)):
            print(json.dumps({"server": name, "error": "not installed"}))
            continue
        extra = args.gristmill_args.split() if name == "gristmill" else []
        out = measure(name, args.connections, args.size, extra)
        if extra:
            out["args"] = args.gristmill_args
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
