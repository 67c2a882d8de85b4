"""Metrics fixture: the same routes for WSGI (``application``) and ASGI (``app``).

``/`` answers 200 with the worker's pid, ``/missing`` 404, ``/fail`` 500, ``/slow?s=N``
sleeps N seconds first, ``/echo`` returns the request body; over ASGI, a WebSocket on
any path echoes each message.
"""

import asyncio
import os
import time
from urllib.parse import parse_qs

STATUS = {"/missing": "404 Not Found", "/fail": "500 Internal Server Error"}


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        time.sleep(float(parse_qs(environ["QUERY_STRING"])["s"][0]))
    body = str(os.getpid()).encode()
    if path == "/echo":
        body = environ["wsgi.input"].read()
    start_response(STATUS.get(path, "200 OK"), [("Content-Length", str(len(body)))])
    return [body]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            await send({"type": m["type"] + ".complete"})
            if m["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": m.get("text"), "bytes": m.get("bytes")})
    path = scope["path"]
    if path == "/slow":
        await asyncio.sleep(float(parse_qs(scope["query_string"].decode())["s"][0]))
    body = str(os.getpid()).encode()
    if path == "/echo":
        body = b""
        more = True
        while more:
            m = await receive()
            body += m.get("body", b"")
            more = m.get("more_body", False)
    status = int(STATUS.get(path, "200")[:3])
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})
