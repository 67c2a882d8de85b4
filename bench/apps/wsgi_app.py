"""The WSGI benchmark app (standard library only), served by every WSGI server in the bench.

Routes, identical in bytes to ``asgi_app.py`` and the Rust ceiling:

- ``GET /``: ``Hello, world!`` (13 bytes, ``text/plain``)
- ``GET /json``: ``{"message":"Hello, world!"}`` (``application/json``)
- ``POST /echo``: the request body, read whole, sent back with its length
- ``GET /big``: 1 MiB of ``x`` in one piece, with ``Content-Length``
- ``GET /stream``: 64 chunks of 16 KiB yielded one by one, no ``Content-Length``

The JSON body is serialised per request (``json.dumps``), as a real app would.
"""

import json

HELLO = b"Hello, world!"
BIG = b"x" * (1024 * 1024)
CHUNK = b"x" * (16 * 1024)
CHUNKS = 64
MESSAGE = {"message": "Hello, world!"}

OCTETS = "application/octet-stream"


def _stream():
    for _ in range(CHUNKS):
        yield CHUNK


def application(environ, start_response):
    """Dispatch on method and path; anything else is 404 or 405."""
    path = environ["PATH_INFO"]
    method = environ["REQUEST_METHOD"]
    if path == "/" and method == "GET":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
        return [HELLO]
    if path == "/json" and method == "GET":
        body = json.dumps(MESSAGE, separators=(",", ":")).encode()
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]
    if path == "/echo" and method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        start_response("200 OK", [("Content-Type", OCTETS), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/big" and method == "GET":
        start_response("200 OK", [("Content-Type", OCTETS), ("Content-Length", str(len(BIG)))])
        return [BIG]
    if path == "/stream" and method == "GET":
        start_response("200 OK", [("Content-Type", OCTETS)])
        return _stream()
    if path in ("/", "/json", "/echo", "/big", "/stream"):
        start_response("405 Method Not Allowed", [("Content-Length", "0")])
        return [b""]
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]
