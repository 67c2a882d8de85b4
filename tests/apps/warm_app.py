"""Fixture for cheap replacements (``tests/test_recycle_cost.py``): each import appends
the importing process's pid to the file named by ``WARM_APP_IMPORTS``, so a test sees
which processes imported the application; ``/`` answers which worker served it (its
pid, as text) after 5 ms, as ``recycle_app.py`` does: a steady load whose connections are
busy, not idle, when a worker drains (an instant answer makes the documented race of a
request sent on an idle connection as the draining worker closes it frequent).
``/refcounts`` answers the reference counts, as this worker sees them, of a function
it inherited from the supervisor (``logging.getLogger``) and of its own application:
immortal objects (CPython 3.12+) report ``2**32 - 1``.
``application`` is the WSGI app, ``app`` the ASGI one."""

import asyncio
import logging
import os
import sys
import time

import _lifespan

with open(os.environ["WARM_APP_IMPORTS"], "a") as _f:
    _f.write(f"{os.getpid()}\n")
_PID = str(os.getpid()).encode()


def _refcounts():
    return f"{sys.getrefcount(logging.getLogger)} {sys.getrefcount(application)}".encode()


def application(environ, start_response):
    if environ["PATH_INFO"] == "/refcounts":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [_refcounts()]
    time.sleep(0.005)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [_PID]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan.complete(receive, send)
    body = _refcounts() if scope["path"] == "/refcounts" else _PID
    if scope["path"] != "/refcounts":
        await asyncio.sleep(0.005)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
