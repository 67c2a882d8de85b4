"""ASGI HTTP: the scope, request bodies, responses, disconnects and contract violations.

Every test drives a real ``python -m gristmill`` serving an ASGI fixture app. What the app
observes out of band is written to marker files in a temporary folder ($GM_TEST_DIR).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import signal
import socket
import threading
import time

import httpx
import pytest

from _support import (
    Server,
    answer_while_io_thread_blocked,
    chunked,
    chunked_payload,
    head_in_two_pieces,
    http_request,
    io_gated_args,
    stalled_upload,
    wait_for_file,
    wait_until,
)

# Every test here runs once per ASGI mode (one thread, loop thread).
pytestmark = pytest.mark.usefixtures("asgi_mode")

SCOPE_APP = "asgi_scope_app:app"
APP = "asgi_http_app:app"
MIB = 1 << 20

LIFESPAN_STATE = {"from_lifespan": "yes", "items": 1}


@pytest.fixture(scope="module")
def ssrv(asgi_mode):
    s = Server([SCOPE_APP])
    s.wait_ready()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def rootsrv(asgi_mode):
    s = Server(["--root-path", "/mount", SCOPE_APP])
    s.wait_ready()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def markers(tmp_path_factory):
    return tmp_path_factory.mktemp("asgi-markers")


@pytest.fixture(scope="module")
def hsrv(asgi_mode, markers):
    s = Server([APP], env={"GM_TEST_DIR": str(markers)})
    s.wait_ready()
    yield s
    s.kill()


def scope_of(srv: Server, request: bytes) -> tuple[dict, int]:
    """Send one raw request; return the app's view of the scope and our local port."""
    with srv.raw() as conn:
        conn.send(request)
        resp = conn.final_response()
        port = conn.local_port
    assert resp.status == 200, resp.body
    return ast.literal_eval(resp.body.decode("utf-8")), port


# --- the scope -------------------------------------------------------------------------------
def test_scope_of_a_get(ssrv):
    scope, port = scope_of(
        ssrv,
        http_request(
            "GET", "/some/path?a=1&b=%20c&d", host=f"127.0.0.1:{ssrv.port}", headers={"X-A": "1"}
        ),
    )
    assert scope["missing"] == []
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/some/path"
    assert scope["raw_path"] == b"/some/path"
    assert scope["query_string"] == b"a=1&b=%20c&d"
    assert scope["root_path"] == ""
    assert scope["headers"] == [(b"host", f"127.0.0.1:{ssrv.port}".encode()), (b"x-a", b"1")]
    assert scope["header_types"] == ["bytes"]
    # (host, port) tuples, the port an int
    assert scope["client"] == ("127.0.0.1", port)
    assert type(scope["client"]) is tuple and type(scope["client"][1]) is int
    assert scope["server"] == ("127.0.0.1", ssrv.port)
    assert type(scope["server"]) is tuple and type(scope["server"][1]) is int
    assert scope["state"] == LIFESPAN_STATE
    assert "http.response.pathsend" in scope["extensions"]
    assert scope["more_body"] == [False] and scope["body_size"] == 0


def test_scope_http_1_0(ssrv):
    scope, _ = scope_of(ssrv, http_request("GET", "/old", version="HTTP/1.0"))
    assert scope["http_version"] == "1.0"
    assert scope["path"] == "/old"


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("GET", b""),
        ("POST", b"a=1&b=2"),
        ("PUT", b"x" * 1000),
        ("PATCH", b"{}"),
        ("DELETE", b""),
        ("OPTIONS", b""),
        ("PURGE", b""),  # not a standard method: passed through as is
    ],
)
def test_scope_method(ssrv, method, body):
    r = httpx.request(method, f"{ssrv.url}/m", content=body, timeout=10)
    assert r.status_code == 200
    scope = ast.literal_eval(r.text)
    assert scope["method"] == method
    assert r.headers["x-scope-method"] == method
    assert scope["body_size"] == len(body)


def test_scope_method_head(ssrv):
    r = httpx.head(f"{ssrv.url}/m", timeout=10)
    assert r.status_code == 200
    assert r.headers["x-scope-method"] == "HEAD"
    assert r.content == b""


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/plain/path", "/plain/path"),
        ("/", "/"),
        ("/a%20b", "/a b"),
        ("/caf%C3%A9/%E2%9C%93", "/café/✓"),
        ("/a%2Fb", "/a/b"),
        ("/%7Euser/x+y", "/~user/x+y"),  # '+' is not a space in a path
        ("/caf\xc3\xa9", "/café"),  # UTF-8 bytes sent unencoded (obs-text)
    ],
)
def test_scope_path_and_raw_path(ssrv, target, path):
    scope, _ = scope_of(ssrv, http_request("GET", target + "?q=1"))
    assert scope["path"] == path
    assert scope["raw_path"] == target.encode("latin-1")  # the bytes as sent
    assert scope["query_string"] == b"q=1"


@pytest.mark.parametrize(
    ("target", "query"),
    [
        ("/q", b""),
        ("/q?", b""),
        ("/q?flag", b"flag"),
        ("/q?a=1&a=2&b=", b"a=1&a=2&b="),
        ("/q?s=%20x+y&c=caf%C3%A9&p=%2B", b"s=%20x+y&c=caf%C3%A9&p=%2B"),
    ],
)
def test_scope_query_string_is_raw_bytes(ssrv, target, query):
    scope, _ = scope_of(ssrv, http_request("GET", target))
    assert scope["query_string"] == query
    assert scope["path"] == "/q"


def test_scope_headers(ssrv):
    sent = [
        ("X-Custom", "one"),
        ("X-Other", "Three"),
        ("x-custom", "two"),
        ("X-MiXeD-Case", "Value Kept AS Sent"),
        ("X-Latin", "caf\xe9"),  # a latin-1 byte, not UTF-8
        ("Cookie", "a=1"),
        ("X-Custom", "three"),
        ("Cookie", "b=2"),
        ("X-Empty", ""),
    ]
    scope, _ = scope_of(ssrv, http_request("GET", "/h", headers=sent))
    headers = scope["headers"]
    assert scope["header_types"] == ["bytes"]
    expected = [(b"host", b"127.0.0.1")] + [
        (k.lower().encode(), v.encode("latin-1")) for k, v in sent
    ]
    # Every header, lower-cased names, values as sent, repeats kept (not joined).
    assert sorted(headers) == sorted(expected)
    # The order of a name's values is the order they came in (the spec leaves the order
    # of different names free).
    for name in (b"x-custom", b"cookie"):
        assert [v for k, v in headers if k == name] == [v for k, v in expected if k == name]


def test_scope_state_is_a_shallow_copy_per_request(ssrv):
    mutated, _ = scope_of(ssrv, http_request("GET", "/state?mutate"))
    assert mutated["state"] == LIFESPAN_STATE  # what the app saw before changing it
    for _ in range(2):
        scope, _ = scope_of(ssrv, http_request("GET", "/state"))
        assert scope["state"] == LIFESPAN_STATE


@pytest.mark.parametrize(
    ("target", "path", "raw_path"),
    [
        ("/mount/x", "/mount/x", b"/mount/x"),
        ("/mount", "/mount", b"/mount"),
        ("/mount/", "/mount/", b"/mount/"),
        ("/x", "/mount/x", b"/x"),  # a proxy stripped the prefix: put it back
        ("/", "/mount/", b"/"),
        ("/mountain", "/mount/mountain", b"/mountain"),  # not under /mount
        ("/mount/caf%C3%A9", "/mount/café", b"/mount/caf%C3%A9"),
    ],
)
def test_scope_root_path(rootsrv, target, path, raw_path):
    scope, _ = scope_of(rootsrv, http_request("GET", target + "?k=v"))
    assert scope["root_path"] == "/mount"
    assert scope["path"] == path
    assert scope["raw_path"] == raw_path
    assert scope["query_string"] == b"k=v"


# --- request bodies --------------------------------------------------------------------------
def test_no_body_is_one_empty_message(hsrv):
    r = hsrv.get("/upload")
    assert r.status_code == 200
    report = r.json()
    assert report["size"] == 0
    assert report["more_body"] == [False]
    assert report["types"] == ["bytes"]


def test_small_body(hsrv):
    body = os.urandom(1000)
    report = hsrv.post("/upload", content=body).json()
    assert report["sha256"] == hashlib.sha256(body).hexdigest()
    assert report["size"] == 1000
    assert report["more_body"][-1] is False


def _check_streamed(report: dict, data: bytes) -> None:
    assert report["sha256"] == hashlib.sha256(data).hexdigest()
    assert report["size"] == len(data)
    assert report["types"] == ["bytes"]
    flags = report["more_body"]
    # More than one message, each but the last with more_body=True.
    assert len(flags) > 1
    assert flags[-1] is False
    assert all(flags[:-1]), flags
    assert report["largest"] < len(data)


def test_large_chunked_upload_from_a_generator(hsrv):
    data = os.urandom(MIB)
    total = 20

    def gen():
        for _ in range(total):
            yield data

    with httpx.Client(timeout=30) as client:
        r = client.post(f"{hsrv.url}/upload", content=gen())
    assert r.status_code == 200
    report = r.json()
    assert report["sha256"] == hashlib.sha256(data * total).hexdigest()
    assert report["size"] == total * MIB
    flags = report["more_body"]
    assert len(flags) > 1 and flags[-1] is False and all(flags[:-1])
    assert report["largest"] <= 4 * MIB, "the body was not delivered in pieces"


def test_large_content_length_upload(hsrv):
    data = os.urandom(5 * MIB)
    with httpx.Client(timeout=30) as client:
        r = client.post(f"{hsrv.url}/upload", content=data)
    assert r.status_code == 200
    _check_streamed(r.json(), data)


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_body_reaches_the_app_before_it_is_complete(hsrv, markers, framing):
    """The app gets the first part of the body while the client still holds the rest."""
    tag = f"upload-gated-{framing}"
    gate = markers / f"{tag}.gate"
    first, rest = os.urandom(200_000), os.urandom(300_000)
    target = f"/upload?tag={tag}&gate={gate}"
    with hsrv.raw() as conn:
        if framing == "chunked":
            head = http_request("POST", target, headers={"Transfer-Encoding": "chunked"})
            conn.send(head + b"%x\r\n%s\r\n" % (len(first), first))
        else:
            length = str(len(first) + len(rest))
            head = http_request("POST", target, headers={"Content-Length": length})
            conn.send(head + first)
        received = int(wait_for_file(markers / tag))
        assert 0 < received <= len(first)
        gate.write_text("open")
        conn.send(chunked(rest) if framing == "chunked" else rest)
        resp = conn.final_response()
    assert resp.status == 200, resp.body
    report = json.loads(resp.body)
    assert report["sha256"] == hashlib.sha256(first + rest).hexdigest()
    assert report["more_body"][-1] is False and all(report["more_body"][:-1])


def _send_body(srv: Server, framing: str, target: str, data: bytes) -> dict:
    """POST ``data`` to ``target`` framed as ``framing``; return the JSON report."""
    if framing == "empty":
        r = httpx.get(srv.url + target, timeout=20)
    elif framing in ("buffered", "content-length"):
        r = httpx.post(srv.url + target, content=data, timeout=20)
    elif framing == "chunked":
        r = httpx.post(srv.url + target, content=iter([data[:MIB], data[MIB:]]), timeout=20)
    elif framing == "http2":
        with httpx.Client(http1=False, http2=True, timeout=20) as c:
            r = c.post(srv.url + target, content=data)
        assert r.http_version == "HTTP/2"
    else:
        with srv.raw(timeout=20) as conn:
            if framing == "chunk-boundary":
                # The last data chunk arrives alone; its end is only known from the zero
                # chunk sent after it (the body ends at a chunk boundary).
                head = http_request("POST", target, headers={"Transfer-Encoding": "chunked"})
                conn.send(head + b"%x\r\n%s\r\n" % (len(data), data))
                conn.send(b"0\r\n\r\n")
            else:  # expect-100-continue, as curl sends a large upload
                headers = {"Content-Length": str(len(data)), "Expect": "100-continue"}
                conn.send(http_request("POST", target, headers=headers))
                assert conn.response().status == 100
                conn.send(data)
            resp = conn.final_response()
        assert resp.status == 200, resp.body
        return json.loads(resp.body)
    assert r.status_code == 200, r.text
    return r.json()


BODY_FRAMINGS = {
    "empty": 0,
    "buffered": 1000,
    "content-length": 5 * MIB,
    "chunked": 3 * MIB,
    "chunk-boundary": 200_000,
    "expect-100-continue": 3 * MIB,
    "http2": 3 * MIB,
}


@pytest.mark.parametrize("framing", list(BODY_FRAMINGS))
def test_the_body_ends_once(hsrv, markers, framing):
    """After the http.request with more_body false, receive() never returns another
    http.request: it waits, and returns http.disconnect once the response is complete
    (Django asserts on this: a second http.request made its multipart uploads a 500)."""
    data = os.urandom(BODY_FRAMINGS[framing])
    tag = f"listen-{framing}"
    report = _send_body(hsrv, framing, f"/upload?listen={tag}", data)
    assert report["sha256"] == hashlib.sha256(data).hexdigest()
    assert report["size"] == len(data)
    assert report["more_body"][-1] is False and all(report["more_body"][:-1])
    assert report["after_body"] is None, "receive() answered again after the body ended"
    assert wait_for_file(markers / tag) == "http.disconnect"


def test_expect_100_continue(hsrv):
    with hsrv.raw() as conn:
        conn.send(
            http_request(
                "POST", "/echo", headers={"Content-Length": "10", "Expect": "100-continue"}
            )
        )
        # the app asks for the body: only then does the client get to send it
        interim = conn.response()
        assert interim.status == 100
        conn.send(b"0123456789")
        resp = conn.final_response()
    assert resp.status == 200
    assert resp.body == b"echo:0123456789"


def test_chunked_body_over_max_body_size_is_a_413(server, tmp_path):
    srv = server("--max-body-size", "1000", APP, env={"GM_TEST_DIR": str(tmp_path)})
    with srv.raw() as conn:
        conn.send(
            http_request("POST", "/echo", headers={"Transfer-Encoding": "chunked"})
            + chunked(b"a" * 600, b"b" * 600)
        )
        resp = conn.final_response()
    assert resp.status == 413
    assert srv.post("/echo", content=b"small").content == b"echo:small"


# --- responses -------------------------------------------------------------------------------
def test_streaming_response_arrives_before_the_app_finishes(hsrv, markers):
    gate = markers / "stream.gate"
    with (
        httpx.Client(timeout=httpx.Timeout(5.0)) as client,
        client.stream("GET", f"{hsrv.url}/stream", params={"gate": str(gate)}) as r,
    ):
        assert r.status_code == 200
        assert r.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in r.headers
        chunks = r.iter_raw()
        # the app now waits for the gate: the first chunk must arrive anyway
        assert next(chunks) == b"first-chunk;"
        gate.write_text("open")
        rest = b"".join(chunks)
    assert rest == b"second-chunk"


@pytest.mark.parametrize("cut", [1, 3, 23, 24, 25, 40])
def test_head_in_two_pieces_around_the_protocol_sniff(hsrv, cut):
    """A head cut before, at or after the 24 bytes the worker reads itself to tell
    HTTP/1.1 from HTTP/2 is still one request; the connection serves another after it."""
    head = http_request("GET", "/ok", headers={"X-Padding": "p" * 64})
    for resp in head_in_two_pieces(hsrv, head, cut, http_request("GET", "/ok")):
        assert resp.status == 200 and resp.body == b"ok"


def test_single_body_message_gets_content_length(hsrv):
    with hsrv.raw() as conn:
        conn.send(http_request("GET", "/single"))
        resp = conn.final_response()
        assert resp.status == 200
        assert resp.header("content-length") == "11"
        assert resp.header("transfer-encoding") is None
        assert resp.body == b"hello world"
        # keep-alive: the framing was exact
        conn.send(http_request("GET", "/single"))
        assert conn.final_response().body == b"hello world"


def test_declared_content_length_is_used(hsrv):
    with hsrv.raw() as conn:
        conn.send(http_request("GET", "/declared-length"))
        resp = conn.final_response()
    assert resp.header("content-length") == "10"
    assert not resp.chunked
    assert resp.body == b"0123456789"


def test_status_and_repeated_headers(hsrv):
    with hsrv.raw() as conn:
        conn.send(http_request("GET", "/status-header"))
        resp = conn.final_response()
    assert resp.status == 201
    assert resp.headers_all("set-cookie") == ["a=1", "b=2"]
    assert resp.header("x-mixed-case") == "Kept-Value"
    assert resp.body == b"created"


def test_optional_keys_omitted_are_defaults(hsrv):
    mark = hsrv.mark()
    with hsrv.raw() as conn:
        # http.response.start without headers, http.response.body without body
        conn.send(http_request("GET", "/defaults"))
        resp = conn.final_response()
        assert resp.status == 200
        assert resp.body == b""
        assert resp.header("content-length") == "0"
        conn.send(http_request("GET", "/defaults?nc"))
        resp = conn.final_response()
        assert resp.status == 204
        # streamed messages without body, and a last one without more_body
        conn.send(http_request("GET", "/defaults-stream"))
        resp = conn.final_response()
        assert resp.status == 200
        assert resp.body == b"abcdef"
    assert not [line for line in hsrv.stderr_lines(mark) if "ERROR" in line]


def test_pathsend(hsrv, tmp_path):
    data = os.urandom(300_000)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    with hsrv.raw() as conn:
        conn.send(http_request("GET", f"/pathsend?path={path}"))
        resp = conn.final_response()
        assert resp.status == 200
        assert resp.header("content-type") == "application/octet-stream"
        assert resp.header("content-length") == str(len(data))
        assert resp.body == data
        conn.send(http_request("GET", "/single"))
        assert conn.final_response().body == b"hello world"


def test_large_streamed_response(hsrv):
    total = 32 * MIB
    received = 0
    with (
        httpx.Client(timeout=httpx.Timeout(10.0)) as client,
        client.stream("GET", f"{hsrv.url}/big", params={"mb": "32"}) as r,
    ):
        assert r.status_code == 200
        for chunk in r.iter_raw():
            assert set(chunk) <= {ord("x")}
            received += len(chunk)
    assert received == total


# --- disconnects -----------------------------------------------------------------------------
def test_disconnect_delivered_when_the_client_aborts(hsrv, markers):
    tag = "abort-before-response"
    with hsrv.raw() as conn:
        conn.send(http_request("POST", f"/disconnect-before-response?tag={tag}", body=b"abc"))
        # the app has read the body and waits in receive(); now the client leaves
        wait_for_file(markers / f"{tag}-waiting")
    assert wait_for_file(markers / tag) == "http.disconnect"
    assert hsrv.get("/ok").text == "ok"


def test_send_after_disconnect_raises_client_disconnected(hsrv, markers):
    tag = "send-after-abort"
    with hsrv.raw() as conn:
        conn.send(http_request("GET", f"/disconnect-before-response?tag={tag}"))
        wait_for_file(markers / f"{tag}-waiting")
    assert wait_for_file(markers / tag) == "http.disconnect"
    raised = json.loads(wait_for_file(markers / f"{tag}-send"))
    assert raised == {"type": "ClientDisconnected", "oserror": True, "client_disconnected": True}
    assert hsrv.get("/ok").text == "ok"


def test_disconnect_delivered_after_the_response(hsrv, markers):
    tag = "after-response"
    r = hsrv.post(f"/disconnect-after-response?tag={tag}", content=b"body")
    assert r.status_code == 200
    assert r.content == b"done"
    assert wait_for_file(markers / tag) == "http.disconnect"


def test_disconnect_delivered_mid_response(hsrv, markers):
    tag = "mid-response"
    with hsrv.raw() as conn:
        conn.send(http_request("GET", f"/disconnect-mid-response?tag={tag}"))
        head = conn.read_head()
        assert head.status == 200
        got = b""
        while b"partial" not in got:
            data = conn.recv_some()
            assert data, "closed before the first chunk"
            got += data
    assert wait_for_file(markers / tag) == "http.disconnect"
    assert hsrv.get("/ok").text == "ok"


def test_send_while_streaming_to_a_gone_client_raises(hsrv, markers):
    tag = "stream-until-error"
    with hsrv.raw(rcvbuf=64 * 1024) as conn:
        conn.send(http_request("GET", f"/stream-until-error?tag={tag}"))
        assert conn.read_head().status == 200
        received = 0
        while received < 256 * 1024:
            data = conn.recv_some()
            assert data, "stream ended early"
            received += len(data)
    raised = json.loads(wait_for_file(markers / tag))
    assert raised == {"type": "ClientDisconnected", "oserror": True, "client_disconnected": True}
    assert hsrv.get("/ok").text == "ok"


# --- contract violations ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "what"),
    [
        (
            "/v/body-before-start",
            r"Expected ASGI message 'http\.response\.start', but got 'http\.response\.body'",
        ),
        (
            "/v/start-twice",
            r"Expected ASGI message 'http\.response\.body', but got 'http\.response\.start'",
        ),
        (
            "/v/unknown-type",
            r"Expected ASGI message 'http\.response\.body', but got 'http\.response\.bogus'",
        ),
        (
            "/v/unknown-type-first",
            r"Expected ASGI message 'http\.response\.start', but got 'gm\.bogus'",
        ),
        ("/v/status-str", r"'status' must be an int, got '200'"),
        ("/v/header-str", r"header names and values must be bytes"),
        ("/v/header-crlf", r"invalid value for header .x-gm."),
        ("/v/body-str", r"'body' must be bytes"),
        ("/v/not-a-dict", r"ASGI messages must be dicts, got str"),
        ("/v/no-response", r"returned without starting a response"),
        ("/v/start-only", r"returned without sending the response body"),
        ("/v/raise", r"Traceback(.|\n)*RuntimeError: gm-asgi-boom"),
    ],
)
def test_contract_violation_is_a_500_and_logged(hsrv, path, what):
    mark = hsrv.mark()
    with hsrv.raw() as conn:
        conn.send(http_request("GET", path))
        resp = conn.final_response()
    assert resp.status == 500, resp.head
    assert b"Injected" not in resp.head
    hsrv.wait_for_line(r"\[ERROR\].*" + re.escape(f"GET {path}"), start=mark, stream="stderr")
    hsrv.wait_for_output(what, start=mark, stream="stderr", flags=0)
    assert hsrv.get("/ok").text == "ok"


MIDSTREAM = [
    ("/v/raise-midstream", r"Traceback(.|\n)*RuntimeError: gm-asgi-midstream-boom"),
    ("/v/return-midstream", r"returned without completing the response"),
]


@pytest.mark.parametrize(("path", "what"), MIDSTREAM)
def test_failure_after_streaming_started_aborts_the_connection(hsrv, markers, path, what):
    gate = markers / f"{path.rsplit('/', 1)[-1]}.gate"
    mark = hsrv.mark()
    with hsrv.raw() as conn:
        conn.send(http_request("GET", f"{path}?gate={gate}"))
        head = conn.read_head()
        assert head.status == 200
        assert head.header("transfer-encoding") == "chunked"
        got = b""
        while b"partial-" not in got:
            data = conn.recv_some()
            assert data, f"closed before the first chunk; got {got!r}"
            got += data
        gate.write_text("open")  # now the app fails
        got += conn.read_to_eof(5.0)
    # what was sent arrived, but the chunked body never ends: the client can tell
    assert not got.endswith(b"0\r\n\r\n"), got
    hsrv.wait_for_output(what, start=mark, stream="stderr", flags=0)
    assert hsrv.get("/ok").text == "ok"


def test_system_exit_from_the_app_replaces_the_worker(server, tmp_path):
    """SystemExit out of a request task ends the event loop: the worker exits with a
    failure, the supervisor starts another, and it serves."""
    srv = server(APP, env={"GM_TEST_DIR": str(tmp_path)})
    (victim,) = srv.worker_pids()
    mark = srv.mark()
    with srv.raw() as conn:
        conn.send(http_request("GET", "/v/system-exit"))
        conn.read_to_eof(10.0)  # no answer: the worker is gone
    srv.wait_for_line(
        rf"Worker {victim} exited unexpectedly \(.+\); starting a new one", start=mark
    )
    wait_until(lambda: srv.worker_pids() - {victim}, 10, message="a replacement worker")
    assert srv.get("/ok").text == "ok"


def test_failure_behind_a_full_response_channel_still_aborts(hsrv):
    """The app streams 10 MiB to a client that reads slowly, so its response channel is
    full whenever a send() completes, then raises: every chunk sent still arrives, and
    the body never ends (the abort used to be dropped when the channel was full, and
    the body then ended as if complete)."""
    mark = hsrv.mark()
    with hsrv.raw(rcvbuf=65536) as conn:
        conn.send(http_request("GET", "/v/raise-after-flood?n=160"))
        assert conn.read_head().status == 200
        got = b""
        while not got.endswith(b"0\r\n\r\n"):
            time.sleep(0.002)  # a slow reader: the server stays blocked on the socket
            data = conn.recv_some(65536)
            if not data:
                break
            got += data
    assert not got.endswith(b"0\r\n\r\n"), "the body ended as if complete"
    assert chunked_payload(got) == b"".join(bytes([65 + i % 26]) * 65536 for i in range(160))
    hsrv.wait_for_output("gm-asgi-flood-boom", start=mark, stream="stderr", flags=0)


@pytest.mark.parametrize(("path", "what"), MIDSTREAM)
def test_failure_right_after_the_first_chunk_sends_it_then_aborts(
    server, tmp_path, asgi_mode, path, what
):
    """The app sends the head and one chunk (more_body) and fails at once, all before the
    connection wrote a byte (its I/O thread is held up meanwhile): the head and the chunk
    still reach the client, then the connection is aborted, the body never ended."""
    srv = server(
        "asgi_http_app:app", *io_gated_args(tmp_path, asgi_mode), env={"GM_TEST_DIR": str(tmp_path)}
    )
    with srv.raw() as conn:
        conn.send(http_request("GET", f"{path}?tag=once&before={tmp_path / 'before'}"))
        # Its access line says the app is over: head, chunk and failure are all queued.
        answer_while_io_thread_blocked(srv, tmp_path, r'"GET /v/\S+ HTTP/1\.1" 200')
        head = conn.read_head()
        assert head.status == 200, head.head
        assert head.header("transfer-encoding") == "chunked"
        rest = conn.read_to_eof(5.0)
    assert rest == b"8\r\npartial-\r\n", rest  # the chunk, and no last chunk
    srv.wait_for_output(what, stream="stderr", flags=0)
    assert srv.get("/ok").text == "ok"


# --- ASGI 2, event loops, graceful stop -----------------------------------------------------
@pytest.mark.parametrize("interface", ["auto", "asgi"])
def test_asgi2_application(server, interface):
    srv = server("--interface", interface, "asgi_http_app:Asgi2Echo")
    r = srv.post("/", content=b"payload")
    assert r.status_code == 200
    assert r.content == b"asgi2:POST:payload"


def _loop_of(srv) -> str:
    r = srv.get("/loop")
    assert r.status_code == 200
    return r.text


@pytest.mark.parametrize(
    ("args", "loop", "thread"),
    [
        # One runtime thread: the loop runs on the main thread and turns the runtime.
        ((), "asyncio.", "main"),
        (("--loop", "asyncio"), "asyncio.", "main"),
        # uvloop, or more runtime threads: the loop has a thread of its own.
        (("--loop", "uvloop"), "uvloop.", "own"),
        (("--runtime-threads", "2"), "uvloop.", "own"),
        (("--runtime-threads", "2", "--loop", "asyncio"), "asyncio.", "own"),
    ],
)
def test_which_loop_runs_where(server, tmp_path, args, loop, thread):
    srv = server(*args, APP, env={"GM_TEST_DIR": str(tmp_path), "GRISTMILL_LOOP": "auto"})
    kind, where = _loop_of(srv).split()
    assert kind.startswith(loop)
    assert where == thread
    assert srv.get("/single").content == b"hello world"


def test_loop_uvloop_without_uvloop_is_a_clear_error(gristmill_exit, tmp_path):
    # A uvloop that cannot be imported, first on the path.
    (tmp_path / "uvloop.py").write_text("raise ImportError('no uvloop here')\n")
    code, out = gristmill_exit(
        ["--port", "0", "--loop", "uvloop", APP],
        env={"GM_TEST_DIR": str(tmp_path), "PYTHONPATH": str(tmp_path)},
    )
    assert code == 3, out
    assert "uvloop is not installed" in out
    assert "Listening on" not in out


def _listening_fds(pid: int, port: int) -> int:
    """How many descriptors of process ``pid`` refer to the socket listening on ``port``."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
        except FileNotFoundError:
            pass
    return count


def _stop_with_request_in_flight(srv, gate) -> tuple[threading.Thread, dict[str, object]]:
    """Start /slow, SIGTERM the server, return once the worker stopped accepting."""
    result: dict[str, object] = {}

    def slow_request():
        try:
            r = httpx.get(f"{srv.url}/slow", params={"gate": str(gate)}, timeout=15)
            result["status"], result["body"] = r.status_code, r.content
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            result["error"] = repr(e)

    (worker,) = srv.worker_pids()
    listening = _listening_fds(worker, srv.port)
    assert listening > 0
    mark = srv.mark()
    t = threading.Thread(target=slow_request)
    t.start()
    srv.wait_for_line(r"GM-SLOW-START", start=mark)
    srv.send_signal(signal.SIGTERM)
    srv.wait_for_line(r"Shutting down \(SIGTERM\)", start=mark)
    # The worker closes its listener when it starts the graceful stop.
    wait_until(
        lambda: _listening_fds(worker, srv.port) < listening, 10, message="the worker to stop"
    )
    assert t.is_alive() and not result, (result, srv.output())
    return t, result


def test_sigterm_lets_an_in_flight_request_finish(server, tmp_path):
    srv = server("--graceful-timeout", "10", APP, env={"GM_TEST_DIR": str(tmp_path)})
    gate = tmp_path / "slow.gate"
    t, result = _stop_with_request_in_flight(srv, gate)
    gate.write_text("open")
    t.join(15)
    assert result == {"status": 200, "body": b"slow done"}
    assert srv.proc.wait(15) == 0, srv.output()
    srv.join_output(5)
    assert "Shutdown complete" in srv.output()


def test_new_connections_are_refused_during_a_graceful_stop(server, tmp_path):
    """While the in-flight request finishes, the port must not take new connections that
    nobody will ever serve (they would hang, then be reset when the worker exits)."""
    srv = server("--graceful-timeout", "10", APP, env={"GM_TEST_DIR": str(tmp_path)})
    gate = tmp_path / "slow.gate"
    t, result = _stop_with_request_in_flight(srv, gate)
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
    finally:
        gate.write_text("open")
        t.join(15)
    assert result == {"status": 200, "body": b"slow done"}
    assert srv.proc.wait(15) == 0, srv.output()


def test_stalled_small_body_gets_408_before_the_application_runs(server, tmp_path):
    srv = server(APP, "--body-read-timeout", "0.5", env={"GM_TEST_DIR": str(tmp_path)})
    mark = srv.mark()
    status, waited = stalled_upload(srv, "/echo?tag=called", b"part")
    assert status == 408
    assert 0.4 < waited < 5
    srv.wait_for_line(r"POST /echo: no request body bytes arrived for 0.5 s", start=mark)
    srv.wait_for_line(r'"POST /echo\?tag=called HTTP/1.1" 408', start=mark)
    # /echo?tag= leaves a marker as soon as it is called: it never was.
    assert not (tmp_path / "called").exists()
    assert srv.post("/echo", content=b"next").content == b"echo:next"


def test_client_that_stops_reading_is_dropped_after_send_timeout(server, tmp_path):
    srv = server(
        APP, "--send-timeout", "1", "--log-level", "debug", env={"GM_TEST_DIR": str(tmp_path)}
    )
    mark = srv.mark()
    with srv.raw(rcvbuf=16 * 1024) as stalled:
        stalled.send(http_request("GET", "/big?mb=64"))
        assert stalled.read_head().status == 200
        srv.wait_for_line(r"took none of the response for 1 s \(send_timeout\)", start=mark)
        received = len(stalled.read_to_eof(timeout=10))
    assert received < 64 << 20
    assert srv.get("/single").content == b"hello world"
