"""HTTP/1.1, limits and logging fixture: small endpoints that make framing observable."""

import os
import sys

CALLS = {"upload": 0}


def _respond(start_response, body, status="200 OK", headers=()):
    start_response(
        status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), *headers]
    )
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/echo":
        return _respond(start_response, environ["wsgi.input"].read())
    if path == "/path":
        return _respond(start_response, f"{path}?{environ['QUERY_STRING']}".encode("latin-1"))
    if path == "/head":
        return _respond(start_response, b"hello world")
    if path == "/gen":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (c for c in (b"chunk-1;", b"chunk-2;", b"chunk-3"))
    if path == "/list":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"listed"]
    if path == "/server-header":
        return _respond(start_response, b"own", headers=[("Server", "myapp/1.0")])
    if path == "/hidden":
        print(f"GM-HIDDEN-REACHED {environ['QUERY_STRING']}", file=sys.stderr, flush=True)
        return _respond(start_response, b"hidden request answered")
    if path == "/upload":
        CALLS["upload"] += 1
        return _respond(start_response, str(len(environ["wsgi.input"].read())).encode())
    if path == "/calls":
        return _respond(start_response, str(CALLS["upload"]).encode())
    if path == "/errors":
        stream = environ["wsgi.errors"]
        stream.write("gm-wsgi-errors-message\n")
        stream.flush()
        return _respond(start_response, b"logged")
    if path == "/osenv":
        return _respond(start_response, repr(os.environ.get(environ["QUERY_STRING"])).encode())
    if path == "/pid":
        return _respond(start_response, str(os.getpid()).encode())
    if path == "/created":
        return _respond(start_response, b"created!", status="201 Created")
    return _respond(start_response, b"hello")
