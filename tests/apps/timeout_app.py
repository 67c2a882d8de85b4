"""Request-timeout fixture: ``application`` (WSGI) and ``app`` (ASGI) answer by path.

- ``/`` answers at once with the worker's pid (as text);
- ``/sleep?s=N`` sleeps N seconds before it answers (in a function named
  ``sleeping_in_the_app``, which the logged stack must show), then answers with the pid;
- ``/stream?s=N`` starts a 200 response, sends ``first\\n``, then sleeps N seconds
  before the rest;
- ``/fast`` sleeps 0.2 s, then answers (well within the tests' timeouts).

The WSGI iterable's ``close()`` writes a line to stderr (``closed /path``), so a test can
see that a discarded result was still closed (PEP 3333); WSGI ``/sleep`` writes
``start /sleep`` when it starts. The ASGI app writes
``cancelled /path`` when its task is cancelled. A WebSocket at ``/ws`` is accepted after
``s`` seconds (``?s=N``, default 0) and then echoes one message after ``hold`` seconds.
"""

import asyncio
import os
import sys
import time
from urllib.parse import parse_qs

import _lifespan


def _seconds(query: str, name: str = "s", default: float = 0.0) -> float:
    return float(parse_qs(query).get(name, [default])[0])


def _pid() -> bytes:
    return str(os.getpid()).encode()


def sleeping_in_the_app(seconds: float) -> None:
    time.sleep(seconds)


class _Body:
    """An iterable that says when it is closed."""

    def __init__(self, path: str, chunks) -> None:
        self.path = path
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self) -> None:
        print(f"closed {self.path}", file=sys.stderr, flush=True)


def _stream(seconds: float):
    yield b"first\n"
    sleeping_in_the_app(seconds)
    yield b"rest\n"


def application(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    headers = [("Content-Type", "text/plain")]
    if path == "/sleep":
        print(f"start {path}", file=sys.stderr, flush=True)
        sleeping_in_the_app(_seconds(query))
    elif path == "/fast":
        time.sleep(0.2)
    elif path == "/stream":
        start_response("200 OK", headers)
        return _Body(path, _stream(_seconds(query)))
    start_response("200 OK", headers)
    return _Body(path, [_pid()])


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan.complete(receive, send)
    query = scope["query_string"].decode()
    path = scope["path"]
    try:
        if scope["type"] == "websocket":
            await asyncio.sleep(_seconds(query))
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            msg = await receive()
            await asyncio.sleep(_seconds(query, "hold"))
            await send({"type": "websocket.send", "text": msg.get("text")})
            await send({"type": "websocket.close"})
            return
        start = {"type": "http.response.start", "status": 200, "headers": []}
        if path == "/sleep":
            await asyncio.sleep(_seconds(query))
        elif path == "/fast":
            await asyncio.sleep(0.2)
        elif path == "/stream":
            await send(start)
            await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
            await asyncio.sleep(_seconds(query))
            await send({"type": "http.response.body", "body": b"rest\n"})
            return
        await send(start)
        await send({"type": "http.response.body", "body": _pid()})
    except asyncio.CancelledError:
        print(f"cancelled {path}", file=sys.stderr, flush=True)
        raise
