"""HTTP/1.1: framing, keep-alive, pipelining, HEAD, 100-continue, Date/Server, strictness.

Raw sockets, because real clients normalise away exactly what is tested here.
"""

from __future__ import annotations

import email.utils
import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from _support import WSGI_MODES, Server, chunked, head_in_two_pieces, http_request

APP = "http_app:application"
STATUS_LINE = re.compile(rb"(?:^|\r\n)(HTTP/1\.[01] (\d{3})[^\r\n]*)\r\n")


@pytest.fixture(scope="module", params=list(WSGI_MODES))
def hsrv(request):
    s = Server([APP, *WSGI_MODES[request.param]])
    s.wait_ready()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def isrv():
    s = Server(["input_app:application"])
    s.wait_ready()
    yield s
    s.kill()


def status_lines(data: bytes) -> list[tuple[bytes, int]]:
    return [(m.group(1), int(m.group(2))) for m in STATUS_LINE.finditer(data)]


# --- keep-alive and connection handling ---------------------------------------------------
def test_keep_alive_several_requests_on_one_connection(hsrv):
    with hsrv.raw() as conn:
        for i in range(5):
            conn.send(http_request("GET", f"/path?n={i}"))
            resp = conn.final_response()
            assert resp.status == 200
            assert resp.body == f"/path?n={i}".encode()
            assert (resp.header("connection") or "").lower() != "close"


@pytest.mark.parametrize("cut", [1, 3, 23, 24, 25, 40])
def test_head_in_two_pieces_around_the_protocol_sniff(hsrv, cut):
    """The worker reads the first bytes of a connection itself (HTTP/1.1 or HTTP/2?) and
    hands them to hyper with whatever else the socket holds; a head that arrives in two
    pieces, cut before, at or after those 24 bytes, is still one request, and the
    connection serves another after it."""
    head = http_request("GET", "/path?piece", headers={"X-Padding": "p" * 64})
    first, second = head_in_two_pieces(hsrv, head, cut, http_request("GET", "/path?again"))
    assert first.status == 200 and first.body == b"/path?piece"
    assert second.status == 200 and second.body == b"/path?again"


def test_connection_close_is_honoured(hsrv):
    with hsrv.raw() as conn:
        conn.send(http_request("GET", "/path?x", headers={"Connection": "close"}))
        resp = conn.final_response()
        assert resp.status == 200 and resp.body == b"/path?x"
        assert conn.read_to_eof(5) == b""


def test_http10_without_keep_alive_closes(hsrv):
    with hsrv.raw() as conn:
        conn.send(http_request("GET", "/path?old", version="HTTP/1.0"))
        resp = conn.final_response()
        assert resp.status == 200 and resp.body == b"/path?old"
        assert conn.read_to_eof(5) == b""


def test_pipelining(hsrv):
    with hsrv.raw() as conn:
        conn.send(
            http_request("GET", "/path?1")
            + http_request("POST", "/echo", body=b"second body")
            + http_request("GET", "/path?3")
        )
        bodies = [conn.final_response().body for _ in range(3)]
    assert bodies == [b"/path?1", b"second body", b"/path?3"]


def test_pipelined_requests_after_a_chunked_body(hsrv):
    with hsrv.raw() as conn:
        conn.send(
            http_request("POST", "/echo", headers={"Transfer-Encoding": "chunked"})
            + chunked(b"abc", b"defgh")
            + http_request("GET", "/path?after")
        )
        assert conn.final_response().body == b"abcdefgh"
        assert conn.final_response().body == b"/path?after"


# --- bodies -------------------------------------------------------------------------------
def test_chunked_request_body_reaches_app_whole(hsrv):
    pieces = [b"x" * 1, b"y" * 4096, b"z" * 100000, b"end"]
    with hsrv.raw() as conn:
        conn.send(
            http_request("POST", "/echo", headers={"Transfer-Encoding": "chunked"})
            + chunked(*pieces)
        )
        resp = conn.final_response()
    assert resp.status == 200
    assert resp.body == b"".join(pieces)


def test_chunk_extensions_and_trailers_are_accepted(hsrv):
    body = b"5;name=value\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"
    with hsrv.raw() as conn:
        conn.send(http_request("POST", "/echo", headers={"Transfer-Encoding": "chunked"}) + body)
        assert conn.final_response().body == b"hello"


def test_generator_response_is_chunked(hsrv):
    with hsrv.raw() as conn:
        conn.send(http_request("GET", "/gen"))
        resp = conn.final_response()
    assert resp.chunked and resp.header("content-length") is None
    assert resp.body == b"chunk-1;chunk-2;chunk-3"


def test_list_response_gets_content_length(hsrv):
    with hsrv.raw() as conn:
        conn.send(http_request("GET", "/list"))
        resp = conn.final_response()
    assert resp.header("content-length") == "6"
    assert not resp.chunked
    assert resp.body == b"listed"


@pytest.mark.parametrize("path", ["/head", "/gen"])
def test_head_sends_headers_but_no_body(hsrv, path):
    with hsrv.raw() as conn:
        conn.send(http_request("HEAD", path) + http_request("GET", "/path?next"))
        head = conn.response(method="HEAD")
        assert head.status == 200
        if path == "/head":
            assert head.header("content-length") == "11"
        # any body bytes would corrupt the next response on this connection
        nxt = conn.final_response()
    assert nxt.status == 200 and nxt.body == b"/path?next"


def test_expect_100_continue(hsrv):
    with hsrv.raw() as conn:
        conn.send(
            http_request("POST", "/echo", headers={"Content-Length": "5", "Expect": "100-continue"})
        )
        interim = conn.response()
        assert interim.status_line.startswith("HTTP/1.1 100 Continue")
        conn.send(b"hello")
        resp = conn.final_response()
    assert resp.status == 200
    assert resp.body == b"hello"


# --- Date and Server ----------------------------------------------------------------------
def test_date_and_server_headers(hsrv):
    with hsrv.raw() as conn:
        conn.send(http_request("GET", "/"))
        resp = conn.final_response()
    date = email.utils.parsedate_to_datetime(resp.header("date"))
    assert abs(date.timestamp() - time.time()) < 60
    assert resp.headers_all("server") == ["gristmill"]


def test_app_server_header_wins(hsrv):
    with hsrv.raw() as conn:
        conn.send(http_request("GET", "/server-header"))
        resp = conn.final_response()
    assert resp.headers_all("server") == ["myapp/1.0"]


def test_no_server_header(server):
    srv = server("--no-server-header", APP)
    with srv.raw() as conn:
        conn.send(http_request("GET", "/"))
        resp = conn.final_response()
    assert resp.status == 200
    assert resp.headers_all("server") == []
    assert resp.header("date") is not None


# --- RFC 9112 strictness ------------------------------------------------------------------
BAD_REQUESTS = {
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    "host-with-space": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "host-with-inner-space": b"GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n",
    "host-with-slash": b"GET / HTTP/1.1\r\nHost: foo/bar\r\n\r\n",
    "cl-and-te": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    ),
    "cl-list": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
    "cl-signed": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
    "te-not-chunked": (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
    "te-chunked-not-last": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
    ),
    "request-line-garbage": b"this is not http\r\nHost: x\r\n\r\n",
    "request-line-extra-token": b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    "header-without-colon": b"GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_400_and_close(hsrv, case):
    with hsrv.raw() as conn:
        conn.send(BAD_REQUESTS[case])
        resp = conn.final_response()
        assert resp.status == 400, resp.head
        rest = conn.read_to_eof(5)
    assert status_lines(rest) == [], rest
    # the server is fine afterwards
    assert hsrv.get("/path?ok").text == "/path?ok"


SMUGGLE = {
    "cl-then-te": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        b"GET /hidden?smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
    "te-then-cl": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 4\r\n\r\n0\r\n\r\n"
        b"GET /hidden?smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
    "te-gzip-then-request": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
        b"\r\nGET /hidden?smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
}


@pytest.mark.parametrize("case", list(SMUGGLE))
def test_smuggled_request_is_never_answered(hsrv, case):
    with hsrv.raw() as conn:
        conn.send(SMUGGLE[case])
        data = conn.read_to_eof(5)
    lines = status_lines(data)
    assert len(lines) == 1, data
    assert lines[0][1] == 400, data
    # the hidden request never reached the app: a later request's line shows up, not its
    mark = hsrv.mark()
    hsrv.get("/hidden?sentinel")
    hsrv.wait_for_line(r"GM-HIDDEN-REACHED sentinel", start=mark)
    assert not any("GM-HIDDEN-REACHED smuggled" in line for line in hsrv.lines())


def test_length_conflict_is_answered_on_its_own_request_not_an_earlier_one(hsrv):
    """Two pipelined requests with the same request line, in one write: the first is a
    valid chunked POST, the second has both Content-Length and Transfer-Encoding. The 400
    belongs to the second; the first is served."""
    first = http_request("POST", "/echo", headers={"Transfer-Encoding": "chunked"})
    second = http_request(
        "POST", "/echo", headers={"Content-Length": "5", "Transfer-Encoding": "chunked"}
    )
    with hsrv.raw() as conn:
        conn.send(first + chunked(b"hello") + second + chunked(b"smugg"))
        resp = conn.final_response()
        assert (resp.status, resp.body) == (200, b"hello"), resp.head
        resp = conn.final_response()
        assert resp.status == 400, resp.head
        rest = conn.read_to_eof(5)
    assert status_lines(rest) == [], rest


# --- invalid chunked bodies make wsgi.input raise -----------------------------------------
INVALID_BODIES = {
    "bad-hex-size": b"5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n",
    "size-overflow": b"5\r\nhello\r\nFFFFFFFFFFFFFFFFFF\r\nmore\r\n0\r\n\r\n",
    "data-longer-than-size": b"5\r\nhello\r\n3\r\nabcdefgh\r\n0\r\n\r\n",
    "eof-mid-chunk": b"5\r\nhello\r\na\r\nabc",
    "eof-before-last-chunk": b"5\r\nhello\r\n",
}


@pytest.mark.parametrize("case", list(INVALID_BODIES))
def test_invalid_chunked_body_makes_read_raise(isrv, case):
    mark = isrv.mark()
    with isrv.raw() as conn:
        conn.send(
            http_request("POST", "/strict", headers={"Transfer-Encoding": "chunked"})
            + INVALID_BODIES[case]
        )
        if case.startswith("eof"):
            conn.sock.shutdown(socket.SHUT_WR)
        data = conn.read_to_eof(5)
    # never a 200: that would mean the app was handed a truncated body as complete
    assert all(code != 200 for _, code in status_lines(data)), data
    assert b"complete:" not in data
    isrv.wait_for_line(r"GM-STRICT-READ raised", start=mark, timeout=5)
    assert isrv.post("/echo", content=b"fine").content == b"fine"


def test_truncated_content_length_body_makes_read_raise(isrv):
    mark = isrv.mark()
    with isrv.raw() as conn:
        conn.send(
            http_request("POST", "/strict", headers={"Content-Length": "100"}) + b"only ten b"
        )
        conn.sock.shutdown(socket.SHUT_WR)
        data = conn.read_to_eof(5)
    assert all(code != 200 for _, code in status_lines(data)), data
    isrv.wait_for_line(r"GM-STRICT-READ raised", start=mark, timeout=5)


# --- a real client: curl -----------------------------------------------------------------
def curl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    return subprocess.run(["curl", "-sS", "--http1.1", *args], capture_output=True, timeout=timeout)


def test_curl_upload_with_expect_100_continue(hsrv, tmp_path):
    payload = os.urandom(2 << 20)
    path = tmp_path / "upload.bin"
    path.write_bytes(payload)
    start = time.monotonic()
    # curl waits up to --expect100-timeout for "100 Continue" before sending the body
    out = curl(
        "--expect100-timeout",
        "10",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        f"@{path}",
        "-o",
        str(tmp_path / "echo.bin"),
        "-w",
        "%{http_code}",
        f"{hsrv.url}/echo",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"200"
    assert time.monotonic() - start < 5, "the server never sent 100 Continue"
    assert (tmp_path / "echo.bin").read_bytes() == payload


def test_curl_chunked_upload(hsrv, tmp_path):
    path = tmp_path / "upload.txt"
    path.write_bytes(b"line\n" * 10000)
    out = curl("-H", "Transfer-Encoding: chunked", "--data-binary", f"@{path}", f"{hsrv.url}/echo")
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"line\n" * 10000


def test_curl_reuses_the_connection(hsrv):
    out = curl("-v", f"{hsrv.url}/path?one", f"{hsrv.url}/path?two")
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"/path?one/path?two"
    assert re.search(rb"Re-using existing connection|Reusing existing", out.stderr), out.stderr


def test_curl_head(hsrv):
    out = curl("-I", f"{hsrv.url}/head")
    assert out.returncode == 0, out.stderr
    head = out.stdout.decode("latin-1").lower()
    assert head.startswith("http/1.1 200")
    assert "content-length: 11\r\n" in head
