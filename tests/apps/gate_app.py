"""Requests that wait for a gate, in WSGI (``application``) and ASGI (``app``).

``/hold`` waits (up to 20 s) until the file ``$GATE_DIR/open`` exists, then answers
``held``. ``/ok`` answers ``ok`` at once. Every call appends its path to
``$GATE_DIR/calls``, so a test can tell which requests reached the application.
"""

import asyncio
import os
import time

GATE_DIR = os.environ.get("GATE_DIR", ".")
DEADLINE = 20.0


def _called(path: str) -> None:
    with open(os.path.join(GATE_DIR, "calls"), "a") as f:
        f.write(path + "\n")


def _open() -> bool:
    return os.path.exists(os.path.join(GATE_DIR, "open"))


def application(environ, start_response):
    path = environ["PATH_INFO"]
    _called(path)
    if path == "/hold":
        until = time.monotonic() + DEADLINE
        while not _open() and time.monotonic() < until:
            time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"held" if path == "/hold" else b"ok"]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    _called(path)
    if path == "/hold":
        until = time.monotonic() + DEADLINE
        while not _open() and time.monotonic() < until:
            await asyncio.sleep(0.01)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"held" if path == "/hold" else b"ok"})
