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
    """The app reads the first bytes while the client has not sent the rest yet (a body
    with Content-Length streams when it is larger than the 64 KiB read up front)."""
    rest = b" world" + b"x" * 70000
    mark = srv.mark()
    with srv.raw() as conn:
        if framing == "chunked":
            conn.send(
                http_request("POST", "/first-then-rest", headers={"Transfer-Encoding": "chunked"})
            )
            conn.send(b"5\r\nhello\r\n")
        else:
            length = str(5 + len(rest))
            conn.send(
                http_request("POST", "/first-then-rest", headers={"Content-Length": length})
                + b"hello"
            )
        srv.wait_for_line(r"GM-INPUT-FIRST hello", timeout=5, start=mark)
        conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest) if framing == "chunked" else rest)
        resp = conn.final_response()
    assert resp.status == 200
    assert resp.body == b"hello|" + rest


def test_small_body_is_read_before_the_application_runs(srv):
    """Up to 64 KiB with Content-Length: the app is called once the body is complete."""
    mark = srv.mark()
    with srv.raw() as conn:
        conn.send(
            http_request("POST", "/first-then-rest", headers={"Content-Length": "11"}) + b"hello"
        )
        with pytest.raises(AssertionError):
            srv.wait_for_line(r"GM-INPUT-FIRST", timeout=0.5, start=mark)
        conn.send(b" world")
        resp = conn.final_response()
    assert (resp.status, resp.body) == (200, b"hello| world")


def test_expect_100_continue_is_left_to_the_application(srv):
    """A small body behind `Expect: 100-continue` is not read up front: the client only
    sends it once the application reads (hyper then answers 100 Continue)."""
    with srv.raw() as conn:
        conn.send(
            http_request("POST", "/echo", headers={"Content-Length": "5", "Expect": "100-continue"})
        )
        interim = conn.read_head()
        assert interim.status == 100
        conn.send(b"hello")
        resp = conn.final_response()
    assert (resp.status, resp.body) == (200, b"hello")
