"""Edge fixture (tests/test_edge_nginx.py), the same routes in ``application`` (WSGI)
and ``app`` (ASGI):

- ``/``: which worker answered (its pid, as text), after ``EDGE_APP_SECONDS`` (default
  0.005 s: a steady load that leaves the CPU some room);
- ``POST /upload``: reads the body, answers ``<size> <sha256>``;
- ``/download?mib=N``: N MiB of :func:`pattern` bytes, sent in 64 KiB pieces;
- ``/sleep?s=S&mark=DIR``: writes a file into DIR as it starts, then answers after S
  seconds (requests in flight that a test can count);
- WebSocket ``/ws`` (ASGI): echoes every message until the client closes.
"""

import asyncio
import hashlib
import os
import tempfile
import time
from urllib.parse import parse_qs

import _lifespan

SECONDS = float(os.environ.get("EDGE_APP_SECONDS", "0.005"))
PIECE = 64 * 1024


def pattern(n: int) -> bytes:
    """``n`` bytes of the download's content: a repeating 256-byte ramp."""
    return (bytes(range(256)) * (n // 256 + 1))[:n]


PIECE_BYTES = pattern(PIECE)  # PIECE is a multiple of 256: the pieces line up


def _mark(query: dict) -> None:
    folder = query.get("mark", [None])[0]
    if folder:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".")
        os.close(fd)
        os.rename(tmp, tmp.replace("/.", "/started-"))


def application(environ, start_response):
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/upload":
        digest, size = hashlib.sha256(), 0
        stream = environ["wsgi.input"]
        while chunk := stream.read(PIECE):
            digest.update(chunk)
            size += len(chunk)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{size} {digest.hexdigest()}".encode()]
    if path == "/download":
        n = int(query["mib"][0]) * 1024 * 1024
        start_response("200 OK", [("Content-Length", str(n))])
        return (PIECE_BYTES[: n - i] for i in range(0, n, PIECE))
    if path == "/sleep":
        _mark(query)
        time.sleep(float(query["s"][0]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    time.sleep(SECONDS)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan.complete(receive, send)
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            if m.get("text") is not None:
                await send({"type": "websocket.send", "text": m["text"]})
            else:
                await send({"type": "websocket.send", "bytes": m["bytes"]})
    path = scope["path"]
    query = parse_qs(scope["query_string"].decode())

    async def answer(body: bytes, headers=()) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": body})

    if path == "/upload":
        digest, size = hashlib.sha256(), 0
        while True:
            m = await receive()
            digest.update(m.get("body", b""))
            size += len(m.get("body", b""))
            if not m.get("more_body"):
                break
        return await answer(f"{size} {digest.hexdigest()}".encode())
    while (await receive()).get("more_body"):
        pass
    if path == "/download":
        n = int(query["mib"][0]) * 1024 * 1024
        length = [(b"content-length", str(n).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        for i in range(0, n, PIECE):
            body = PIECE_BYTES[: n - i]
            await send({"type": "http.response.body", "body": body, "more_body": True})
        return await send({"type": "http.response.body", "body": b""})
    if path == "/sleep":
        _mark(query)
        await asyncio.sleep(float(query["s"][0]))
        return await answer(b"slept")
    await asyncio.sleep(SECONDS)
    await answer(str(os.getpid()).encode())
