"""WSGI response fixture: streaming, write(), start_response rules, close(), file_wrapper.

Markers for close() are files written into the folder named by $GM_TEST_DIR.
"""

import io
import os
import sys
import time
from urllib.parse import parse_qs

CHUNK = b"x" * 65536
PROGRESS = {"big": 0}


def _marker(tag, text="closed"):
    folder = os.environ.get("GM_TEST_DIR")
    if folder and tag:
        with open(os.path.join(folder, tag), "w") as f:
            f.write(text)


class Tracked:
    """An iterable whose close() leaves a marker file."""

    def __init__(self, tag, chunks, fail_after=None):
        self.tag = tag
        self.chunks = chunks
        self.fail_after = fail_after
        self.sent = 0

    def __iter__(self):
        for c in self.chunks:
            if self.fail_after is not None and self.sent >= self.fail_after:
                raise RuntimeError("gm-midstream-error")
            self.sent += 1
            yield c

    def close(self):
        _marker(self.tag, f"closed after {self.sent}")


def _endless():
    for _ in range(1 << 16):  # 4 GiB at most
        yield CHUNK


def _big(total):
    PROGRESS["big"] = 0
    while PROGRESS["big"] < total:
        PROGRESS["big"] += len(CHUNK)
        yield CHUNK


def _gated(gate):
    yield b"first-chunk;"
    deadline = time.monotonic() + 20
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield b"second-chunk"


def application(environ, start_response):
    path = environ["PATH_INFO"]
    qs = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    text = [("Content-Type", "text/plain")]

    if path == "/pid":
        start_response("200 OK", text)
        return [str(os.getpid()).encode()]
    if path == "/progress":
        start_response("200 OK", text)
        return [str(PROGRESS["big"]).encode()]
    if path == "/stream":
        start_response("200 OK", text)
        return _gated(qs["gate"])
    if path == "/write":
        write = start_response("200 OK", text)
        write(b"written-")
        write(b"by-write")
        return []
    if path == "/write-mixed":
        write = start_response("200 OK", text)
        write(b"one-")
        return [b"two-", b"three"]
    if path == "/exc-info":
        start_response("200 OK", text)
        try:
            raise ValueError("gm-handled-error")
        except ValueError:
            start_response(
                "503 Replaced",
                [("Content-Type", "text/plain"), ("X-Replaced", "yes")],
                sys.exc_info(),
            )
        return [b"replaced"]
    if path == "/exc-info-after-sent":
        write = start_response("200 OK", text)
        write(b"partial")
        err = ValueError("gm-late-error")
        try:
            try:
                raise err
            except ValueError:
                start_response("500 Too Late", text, sys.exc_info())
        except BaseException as e:  # noqa: BLE001
            return [b"|reraised-same" if e is err else b"|other:" + type(e).__name__.encode()]
        return [b"|no-error"]
    if path == "/double-start":
        start_response("200 OK", text)
        try:
            start_response("201 Created", text)
        except Exception as e:  # noqa: BLE001
            return [b"second start_response raised " + type(e).__name__.encode()]
        return [b"second start_response did not raise"]
    if path == "/reason":
        start_response("299 Custom Reason", text)
        return [b"custom"]
    if path == "/list-no-length":
        start_response("200 OK", text)
        return [b"abcdef"]
    if path == "/gen-no-length":
        start_response("200 OK", text)
        return (c for c in (b"ab", b"cd", b"", b"ef"))
    if path == "/head":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "11")])
        return [b"hello world"]
    if path == "/closing":
        start_response("200 OK", text)
        return Tracked(qs["tag"], [b"a", b"b", b"c"])
    if path == "/endless":
        start_response("200 OK", text)
        return Tracked(qs["tag"], _endless())
    if path == "/raise-midstream":
        start_response("200 OK", text)
        return Tracked(qs["tag"], [b"a" * 100, b"b" * 100], fail_after=1)
    if path == "/file":
        f = open(qs["path"], "rb")  # noqa: SIM115 - the server closes it via close()
        seek = int(qs.get("seek", "0"))
        f.seek(seek)
        size = os.fstat(f.fileno()).st_size
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(size - seek))],
        )
        return environ["wsgi.file_wrapper"](f, 8192)
    if path == "/file-bytesio":
        data = b"in-memory-" * 1000
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(data)))],
        )
        return environ["wsgi.file_wrapper"](io.BytesIO(data), 4096)
    if path == "/big":
        total = int(qs["mb"]) << 20
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(total))]
        )
        return _big(total)
    if path == "/server-header":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Server", "myapp/1.0")])
        return [b"own server header"]
    start_response("404 Not Found", text)
    return [b"not found"]
