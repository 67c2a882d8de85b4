"""wsgi.input: every read method over Content-Length and chunked bodies, and streaming.

The reference for each method is io.BytesIO over the same bytes: a WSGI input stream
reads like a file (read(n) returns n bytes until the end, readline(n) stops at n or at a
newline), whatever the socket delivered in each recv.
"""

from __future__ import annotations

import hashlib
import io
import json
import os

import pytest

from _support import WSGI_MODES, Server, chunked, http_request

APP = "input_app:application"

BODY = b"first line\n\n" + b"x" * 70000 + b"\nshort\r\n" + b"y" * 3000 + b"\nno newline at the end"


def _split(data: bytes, sizes: list[int]) -> list[bytes]:
    out, i = [], 0
    for s in sizes:
        out.append(data[i : i + s])
        i += s
    out.append(data[i:])
    return [p for p in out if p]


def expected(mode: str, n: int) -> list[bytes]:
    f = io.BytesIO(BODY)
    if mode == "read":
        return [f.read()]
    if mode == "readlines":
        return f.readlines()
    if mode == "iter":
        return list(f)
    out = []
    if mode == "readlines-hint":
        while batch := f.readlines(n):
            out.extend(batch)
        return out
    step = {"read-n": f.read, "readline": lambda _n: f.readline(), "readline-n": f.readline}
    while piece := step[mode](n):
        out.append(piece)
    return out


MODES = [
    ("read", 0),
    ("read-n", 1),
    ("read-n", 1000),
    ("read-n", 65536),
    ("readline", 0),
    ("readline-n", 5),
    ("readline-n", 4096),
    ("readlines", 0),
    ("readlines-hint", 100),
    ("iter", 0),
]


@pytest.fixture(scope="module", params=list(WSGI_MODES))
def srv(request):
    s = Server([APP, *WSGI_MODES[request.param]])
    s.wait_ready()
    yield s
    s.kill()


def _check(resp_body: bytes, mode: str, n: int) -> None:
    report = json.loads(resp_body)
    got = [p.encode("latin-1") for p in report["pieces"]]
    assert b"".join(got) == BODY
    assert got == expected(mode, n)
    assert report["types"] == ["bytes"]
    assert report["after_eof"] == ""


@pytest.mark.parametrize(("mode", "n"), MODES)
def test_content_length_body(srv, mode, n):
    r = srv.post(f"/{mode}?n={n}", content=BODY)
    assert r.status_code == 200, r.text
    _check(r.content, mode, n)


@pytest.mark.parametrize(("mode", "n"), MODES)
def test_chunked_body(srv, mode, n):
    # chunk boundaries fall in the middle of lines and of CRLF
    pieces = _split(BODY, [7, 3, 1, 50000, 20007])
    with srv.raw() as conn:
        conn.send(
            http_request("POST", f"/{mode}?n={n}", headers={"Transfer-Encoding": "chunked"})
            + chunked(*pieces)
        )
        resp = conn.final_response()
    assert resp.status == 200, resp.body
    _check(resp.body, mode, n)


def test_large_streamed_upload_is_hashed_incrementally(srv):
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()

    def gen():
        for i in range(20):
            chunk = bytes([i]) + block[1:]
            digest.update(chunk)
            yield chunk

    r = srv.post("/hash", content=gen(), timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"sha256": digest.hexdigest(), "length": 20 << 20}


def test_large_content_length_upload(srv):
    body = os.urandom(5 << 20)
    r = srv.post("/hash", content=body, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_input_is_streamed_not_buffered_first(srv, framing):
    """The app reads the first bytes while the client has not sent the rest yet."""
    mark = srv.mark()
    with srv.raw() as conn:
        if framing == "chunked":
            conn.send(
                http_request("POST", "/first-then-rest", headers={"Transfer-Encoding": "chunked"})
            )
            conn.send(b"5\r\nhello\r\n")
        else:
            conn.send(
                http_request("POST", "/first-then-rest", headers={"Content-Length": "11"})
                + b"hello"
            )
        srv.wait_for_line(r"GM-INPUT-FIRST hello", timeout=5, start=mark)
        conn.send(b"6\r\n world\r\n0\r\n\r\n" if framing == "chunked" else b" world")
        resp = conn.final_response()
    assert resp.status == 200
    assert resp.body == b"hello| world"
