"""HTTP/2 and TLS fixture: echo, environ, concurrency barrier, streaming with close()."""

import hashlib
import json
import sys
import threading
import time

# Requests to /barrier?N wait until N of them are running at once (one barrier per N).
_barriers: dict[int, threading.Barrier] = {}
_barriers_lock = threading.Lock()


def _barrier(parties: int) -> threading.Barrier:
    with _barriers_lock:
        return _barriers.setdefault(parties, threading.Barrier(parties))


ENVIRON_KEYS = (
    "SERVER_PROTOCOL",
    "HTTP_HOST",
    "REQUEST_METHOD",
    "PATH_INFO",
    "QUERY_STRING",
    "wsgi.url_scheme",
    "HTTPS",
    "SSL_PROTOCOL",
    "SSL_CIPHER",
    "SSL_CLIENT_VERIFY",
    "SSL_CLIENT_CERT",
    "SSL_CLIENT_S_DN",
    "SSL_CLIENT_I_DN",
    "CONTENT_LENGTH",
    "SERVER_NAME",
    "SERVER_PORT",
    "REMOTE_ADDR",
)


class Stream:
    """An endless body that reports when it is closed (the client reset the stream)."""

    def __init__(self, tag):
        self.tag = tag

    def __iter__(self):
        while True:
            yield b"x" * 16384
            time.sleep(0.001)

    def close(self):
        print(f"GM-STREAM-CLOSED {self.tag}", file=sys.stderr, flush=True)


def _respond(start_response, body, ctype="text/plain"):
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/echo":
        return _respond(start_response, environ["wsgi.input"].read())
    if path == "/body-seen":
        # Reports on stderr whether the application got the whole body or an error.
        tag = environ["QUERY_STRING"]
        try:
            body = environ["wsgi.input"].read()
        except Exception as exc:
            print(f"GM-BODY-ERROR {tag} {type(exc).__name__}", file=sys.stderr, flush=True)
            raise
        print(f"GM-BODY-OK {tag} {len(body)}", file=sys.stderr, flush=True)
        return _respond(start_response, body)
    if path == "/sha":
        h, n = hashlib.sha256(), 0
        while block := environ["wsgi.input"].read(65536):
            h.update(block)
            n += len(block)
        return _respond(start_response, f"{n} {h.hexdigest()}".encode())
    if path == "/big":
        n = int(environ["QUERY_STRING"] or "1048576")
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"y" * 65536 for _ in range(n // 65536))
    if path == "/env":
        body = json.dumps({k: environ.get(k) for k in ENVIRON_KEYS}).encode()
        return _respond(start_response, body, "application/json")
    if path == "/barrier":
        _barrier(int(environ["QUERY_STRING"] or "10")).wait(timeout=10)
        return _respond(start_response, b"met")
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Stream(environ["QUERY_STRING"])
    if path == "/hop":
        # Hop-by-hop headers an HTTP/1 app might set; HTTP/2 forbids them in responses.
        start_response(
            "200 OK",
            [("Content-Type", "text/plain"), ("Connection", "keep-alive"), ("Keep-Alive", "5")],
        )
        return [b"hop"]
    return _respond(start_response, f"{environ['SERVER_PROTOCOL']} {path}".encode())
