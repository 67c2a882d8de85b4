"""Drain fixture: every request takes ``DRAIN_APP_SECONDS`` (default 0.1 s) and reports which
worker served it, on which client connection, and when its application call started and
ended (``time.monotonic()``, comparable across processes), as JSON. ``application`` is
the WSGI app, ``app`` the ASGI one."""

import asyncio
import json
import os
import time

import _lifespan

SECONDS = float(os.environ.get("DRAIN_APP_SECONDS", "0.1"))


def _report(port, start):
    return json.dumps(
        {"pid": os.getpid(), "port": port, "start": start, "end": time.monotonic()}
    ).encode()


def application(environ, start_response):
    start = time.monotonic()
    environ["wsgi.input"].read()
    time.sleep(SECONDS)
    body = _report(int(environ["REMOTE_PORT"]), start)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan.complete(receive, send)
    start = time.monotonic()
    while (await receive()).get("more_body"):
        pass
    await asyncio.sleep(SECONDS)
    body = _report(scope["client"][1], start)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"x")]})
    await send({"type": "http.response.body", "body": body})
