"""Recycling fixture: ``/`` takes ``RECYCLE_APP_SECONDS`` (default 0.005 s: a steady load
that leaves the CPU some room) and answers which worker served it (its pid, as text);
``/hold?mib=N`` allocates N MiB, keeps it for the life of the worker, and answers the
same way. ``application`` is the WSGI app, ``app`` the ASGI one. The import fails while
the file named by ``RECYCLE_APP_FAIL_IF`` exists (a deploy that broke the application)."""

import asyncio
import os
import time
from urllib.parse import parse_qs

import _lifespan

SECONDS = float(os.environ.get("RECYCLE_APP_SECONDS", "0.005"))
if os.path.exists(os.environ.get("RECYCLE_APP_FAIL_IF", "\0")):
    raise RuntimeError("the application is broken (RECYCLE_APP_FAIL_IF exists)")
_held = []


def _hold(query):
    mib = parse_qs(query).get("mib")
    if mib:
        # Written, not just reserved, so that every page counts in the resident set.
        _held.append(b"\x01" * (int(mib[0]) * 1024 * 1024))
    return str(os.getpid()).encode()


def application(environ, start_response):
    time.sleep(SECONDS)
    body = _hold(environ.get("QUERY_STRING", ""))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan.complete(receive, send)
    await asyncio.sleep(SECONDS)
    body = _hold(scope["query_string"].decode())
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
