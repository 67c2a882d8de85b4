"""HTTP/3 fixture, the same routes as WSGI (``application``) and ASGI (``app``):

- ``/`` hello; ``/env`` what the application sees of the request, as JSON;
- ``/sha`` the length and SHA-256 of the request body, read in blocks;
- ``/stream?N`` N chunks of 16 KiB, one at a time;
- ``/endless?TAG`` an endless body that says on stderr when the server stops it
  (``GM-H3-CLOSED TAG``);
- ``/slow?SECONDS`` answers after a sleep (``GM-H3-SLOW-START`` on stderr first);
- ``/file`` this file, through ``wsgi.file_wrapper`` / ``http.response.pathsend``;
- ``/trailers?N`` (ASGI) N body parts, then trailers in two messages when the scope
  announces ``http.response.trailers`` (N = 0: one body message).
"""

import asyncio
import hashlib
import json
import os
import sys
import time

CHUNK = b"x" * 16384


def _say(line):
    print(line, file=sys.stderr, flush=True)


# --- WSGI --------------------------------------------------------------------------------


class _Endless:
    def __init__(self, tag):
        self.tag = tag

    def __iter__(self):
        while True:
            yield CHUNK
            time.sleep(0.01)

    def close(self):
        _say(f"GM-H3-CLOSED {self.tag}")


def application(environ, start_response):
    path, query = environ["PATH_INFO"], environ["QUERY_STRING"]
    if path == "/env":
        keys = (
            "SERVER_PROTOCOL",
            "wsgi.url_scheme",
            "HTTPS",
            "HTTP_HOST",
            "REQUEST_METHOD",
            "PATH_INFO",
            "QUERY_STRING",
            "SERVER_NAME",
            "SERVER_PORT",
            "SSL_PROTOCOL",
            "SSL_CIPHER",
            "CONTENT_LENGTH",
        )
        body = json.dumps({"pid": os.getpid(), **{k: environ.get(k) for k in keys}}).encode()
    elif path == "/sha":
        h, n = hashlib.sha256(), 0
        while block := environ["wsgi.input"].read(65536):
            h.update(block)
            n += len(block)
        body = f"{n} {h.hexdigest()}".encode()
    elif path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (CHUNK for _ in range(int(query or 4)))
    elif path == "/endless":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _Endless(query)
    elif path == "/file":
        start_response("200 OK", [("Content-Type", "text/x-python")])
        return environ["wsgi.file_wrapper"](open(__file__, "rb"), 4096)
    elif path == "/slow":
        _say("GM-H3-SLOW-START")
        time.sleep(float(query.split("&")[0] or 1))
        body = b"slow done"
    else:
        body = b"hello h3"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


# --- ASGI --------------------------------------------------------------------------------


async def _read_body(receive):
    h, n = hashlib.sha256(), 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise RuntimeError("client went away")
        h.update(msg.get("body", b""))
        n += len(msg.get("body", b""))
        if not msg.get("more_body"):
            return n, h.hexdigest()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path, query = scope["path"], scope["query_string"].decode()
    stream_head = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/octet-stream")],
    }
    if path == "/env":
        body = json.dumps(
            {
                "http_version": scope["http_version"],
                "scheme": scope["scheme"],
                "method": scope["method"],
                "path": scope["path"],
                "query_string": query,
                "server_port": scope["server"][1],
                "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
                "tls": "tls" in scope.get("extensions", {}),
                "tls_ext": scope.get("extensions", {}).get("tls"),
                "trailers_ext": "http.response.trailers" in scope.get("extensions", {}),
                "pid": os.getpid(),
            }
        ).encode()
    elif path == "/sha":
        n, digest = await _read_body(receive)
        body = f"{n} {digest}".encode()
    elif path == "/stream":
        await send(stream_head)
        for _ in range(int(query or 4)):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    elif path == "/endless":
        await send(stream_head)
        try:
            while True:
                await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
                await asyncio.sleep(0.01)
        except OSError:
            _say(f"GM-H3-CLOSED {query}")
        return
    elif path == "/trailers":
        announced = "http.response.trailers" in scope.get("extensions", {})
        await send({**stream_head, "trailers": announced})
        n = int(query or 0)
        if n == 0:
            await send({"type": "http.response.body", "body": b"whole"})
        for i in range(n):
            await send({"type": "http.response.body", "body": b"part %d\n" % i, "more_body": True})
        if n:
            await send({"type": "http.response.body", "body": b""})
        if announced:
            await send(
                {
                    "type": "http.response.trailers",
                    "headers": [(b"x-checksum", b"abc")],
                    "more_trailers": True,
                }
            )
            await send({"type": "http.response.trailers", "headers": [(b"x-count", b"%d" % n)]})
        return
    elif path == "/file":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": os.path.abspath(__file__)})
        return
    elif path == "/slow":
        _say("GM-H3-SLOW-START")
        await asyncio.sleep(float(query.split("&")[0] or 1))
        body = b"slow done"
    else:
        body = b"hello h3"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})
