"""Recycling fixture: ``/`` answers which worker served it (its pid, as text);
``/hold?mib=N`` allocates N MiB, keeps it for the life of the worker, and answers the
same way. ``application`` is the WSGI app, ``app`` the ASGI one."""

import os
from urllib.parse import parse_qs

_held = []


def _serve(query):
    mib = parse_qs(query).get("mib")
    if mib:
        # Written, not just reserved, so that every page counts in the resident set.
        _held.append(b"\x01" * (int(mib[0]) * 1024 * 1024))
    return str(os.getpid()).encode()


def application(environ, start_response):
    body = _serve(environ.get("QUERY_STRING", ""))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            await send({"type": m["type"] + ".complete"})
            if m["type"] == "lifespan.shutdown":
                return
    body = _serve(scope["query_string"].decode())
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
