"""The ASGI benchmark app (standard library only), served by every ASGI server in the bench.

HTTP routes are identical in bytes to ``wsgi_app.py`` and the Rust ceiling (see there);
``/stream`` sends 64 ``http.response.body`` messages of 16 KiB with ``more_body``.
``/ws`` is a WebSocket echo: every text or binary message comes back unchanged.
"""

import json

HELLO = b"Hello, world!"
BIG = b"x" * (1024 * 1024)
CHUNK = b"x" * (16 * 1024)
CHUNKS = 64
MESSAGE = {"message": "Hello, world!"}

OCTETS = b"application/octet-stream"
ROUTES = ("/", "/json", "/echo", "/big", "/stream")


def _start(status, content_type, length=None):
    headers = [(b"content-type", content_type)]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": status, "headers": headers}


async def _send_all(send, content_type, body):
    await send(_start(200, content_type, len(body)))
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive):
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _http(scope, receive, send):
    path = scope["path"]
    method = scope["method"]
    if path == "/" and method == "GET":
        await _send_all(send, b"text/plain", HELLO)
    elif path == "/json" and method == "GET":
        body = json.dumps(MESSAGE, separators=(",", ":")).encode()
        await _send_all(send, b"application/json", body)
    elif path == "/echo" and method == "POST":
        body = await _read_body(receive)
        if body is not None:
            await _send_all(send, OCTETS, body)
    elif path == "/big" and method == "GET":
        await _send_all(send, OCTETS, BIG)
    elif path == "/stream" and method == "GET":
        await send(_start(200, OCTETS))
        for _ in range(CHUNKS - 1):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": CHUNK})
    else:
        await send(_start(405 if path in ROUTES else 404, b"text/plain", 0))
        await send({"type": "http.response.body", "body": b""})


async def _websocket(scope, receive, send):
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if scope["path"] != "/ws":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.receive":
            if message.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
            else:
                await send({"type": "websocket.send", "text": message.get("text", "")})
        elif message["type"] == "websocket.disconnect":
            return


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    """Dispatch on the scope type: HTTP routes, the WebSocket echo, and lifespan."""
    kind = scope["type"]
    if kind == "http":
        await _http(scope, receive, send)
    elif kind == "websocket":
        await _websocket(scope, receive, send)
    elif kind == "lifespan":
        await _lifespan(receive, send)
