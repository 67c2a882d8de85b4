"""Fixture for cheap replacements (``tests/test_recycle_cost.py``): each import appends
the importing process's pid to the file named by ``WARM_APP_IMPORTS``, so a test sees
which processes imported the application; ``/`` answers which worker served it (its
pid, as text) after 5 ms, as ``recycle_app.py`` does: a steady load whose connections are
busy, not idle, when a worker drains (an instant answer makes the documented race of a
request sent on an idle connection as the draining worker closes it frequent).
``application`` is the WSGI app, ``app`` the ASGI one."""

import asyncio
import os
import time

import _lifespan

with open(os.environ["WARM_APP_IMPORTS"], "a") as _f:
    _f.write(f"{os.getpid()}\n")
_PID = str(os.getpid()).encode()


def application(environ, start_response):
    time.sleep(0.005)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [_PID]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan.complete(receive, send)
    await asyncio.sleep(0.005)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": _PID})
