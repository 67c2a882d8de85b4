"""wsgi.input fixture: read the body in the way the path names, report the pieces.

/read /read-n?n= /readline /readline-n?n= /readlines /readlines-hint?n= /iter: JSON list
of the pieces (latin-1 strings) plus `after_eof`, one more read() after the end.
/hash: sha256 and length, read incrementally. /echo: the body back.
/first-then-rest: reads 5 bytes, announces them on stderr, then reads the rest.
/strict: read(); 200 "complete:<n>" only if read() returned, else 400 with the error.
/propagate: read() and let any exception propagate to the server.
"""

import hashlib
import json
import sys
from urllib.parse import parse_qs


def _respond(start_response, status, body, ctype="application/json"):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    qs = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    inp = environ["wsgi.input"]
    n = int(qs.get("n", "0"))

    if path == "/hash":
        digest = hashlib.sha256()
        length = 0
        while True:
            block = inp.read(1 << 16)
            if not block:
                break
            digest.update(block)
            length += len(block)
        return _respond(
            start_response,
            "200 OK",
            json.dumps({"sha256": digest.hexdigest(), "length": length}).encode(),
        )
    if path == "/echo":
        return _respond(start_response, "200 OK", inp.read(), "application/octet-stream")
    if path == "/first-then-rest":
        first = inp.read(5)
        print(f"GM-INPUT-FIRST {first.decode('latin-1')}", file=sys.stderr, flush=True)
        rest = inp.read()
        return _respond(start_response, "200 OK", first + b"|" + rest, "text/plain")
    if path == "/strict":
        try:
            body = inp.read()
        except Exception as e:  # noqa: BLE001 - reporting any error is the point
            print(f"GM-STRICT-READ raised {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            msg = f"read raised {type(e).__name__}".encode()
            return _respond(start_response, "400 Bad Body", msg, "text/plain")
        return _respond(start_response, "200 OK", b"complete:%d" % len(body), "text/plain")
    if path == "/propagate":
        try:
            body = inp.read()
        except Exception as e:
            print(
                f"GM-PROPAGATE raised {type(e).__name__} oserror={isinstance(e, OSError)}",
                file=sys.stderr,
                flush=True,
            )
            raise
        return _respond(start_response, "200 OK", b"complete:%d" % len(body), "text/plain")

    pieces = []
    if path == "/read":
        pieces = [inp.read()]
    elif path == "/read-n":
        while True:
            p = inp.read(n)
            if not p:
                break
            pieces.append(p)
    elif path == "/readline":
        while True:
            p = inp.readline()
            if not p:
                break
            pieces.append(p)
    elif path == "/readline-n":
        while True:
            p = inp.readline(n)
            if not p:
                break
            pieces.append(p)
    elif path == "/readlines":
        pieces = inp.readlines()
    elif path == "/readlines-hint":
        while True:
            batch = inp.readlines(n)
            if not batch:
                break
            pieces.extend(batch)
    elif path == "/iter":
        pieces = list(inp)
    else:
        return _respond(start_response, "404 Not Found", b"unknown", "text/plain")
    report = {
        "pieces": [p.decode("latin-1") for p in pieces],
        "types": sorted({type(p).__name__ for p in pieces}),
        "after_eof": inp.read().decode("latin-1"),
    }
    return _respond(start_response, "200 OK", json.dumps(report).encode())
