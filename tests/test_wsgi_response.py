"""WSGI responses: streaming, write(), start_response rules, close(), file_wrapper, errors."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from _support import WSGI_MODES, http_request, rss_kib, wait_until

APP = "response_app:application"
ERRORS = "errors_app:application"
MIB = 1 << 20


@pytest.fixture(params=list(WSGI_MODES))
def rsrv(server, tmp_path, request):
    return server(APP, *WSGI_MODES[request.param], env={"GM_TEST_DIR": str(tmp_path)})


def wait_for_file(path, timeout=10.0) -> str:
    wait_until(path.exists, timeout, message=f"{path.name} to be written")
    return wait_until(path.read_text, 2, message=f"{path.name} to have content")


# --- streaming -----------------------------------------------------------------------------
def test_generator_output_is_streamed(rsrv, tmp_path):
    gate = tmp_path / "gate"
    with (
        httpx.Client(timeout=httpx.Timeout(5.0)) as client,
        client.stream("GET", f"{rsrv.url}/stream", params={"gate": str(gate)}) as r,
    ):
        assert r.status_code == 200
        chunks = r.iter_raw()
        # the app is now blocked until the gate exists: the first chunk must arrive anyway
        first = next(chunks)
        assert first == b"first-chunk;"
        gate.write_text("open")
        rest = b"".join(chunks)
    assert rest == b"second-chunk"


def test_write_callable(rsrv):
    r = rsrv.get("/write")
    assert r.status_code == 200
    assert r.content == b"written-by-write"


def test_write_mixed_with_iterable(rsrv):
    r = rsrv.get("/write-mixed")
    assert r.status_code == 200
    assert r.content == b"one-two-three"


def test_exc_info_before_headers_sent_replaces_status(rsrv):
    with rsrv.raw() as conn:
        conn.send(http_request("GET", "/exc-info"))
        resp = conn.final_response()
    assert resp.status_line == "HTTP/1.1 503 Replaced"
    assert resp.header("x-replaced") == "yes"
    assert resp.body == b"replaced"


def test_exc_info_after_headers_sent_reraises(rsrv):
    r = rsrv.get("/exc-info-after-sent")
    assert r.status_code == 200
    assert r.content == b"partial|reraised-same"


def test_second_start_response_without_exc_info_raises(rsrv):
    r = rsrv.get("/double-start")
    assert r.status_code == 200
    assert r.content.startswith(b"second start_response raised ")


def test_reason_phrase_is_kept(rsrv):
    with rsrv.raw() as conn:
        conn.send(http_request("GET", "/reason"))
        resp = conn.final_response()
    assert resp.status_line == "HTTP/1.1 299 Custom Reason"
    assert resp.body == b"custom"


def test_content_length_set_for_single_item_list(rsrv):
    with rsrv.raw() as conn:
        conn.send(http_request("GET", "/list-no-length"))
        resp = conn.final_response()
    assert resp.header("content-length") == "6"
    assert resp.header("transfer-encoding") is None
    assert resp.body == b"abcdef"


def test_generator_without_length_is_chunked(rsrv):
    with rsrv.raw() as conn:
        conn.send(http_request("GET", "/gen-no-length"))
        resp = conn.final_response()
        assert resp.chunked
        assert resp.header("content-length") is None
        assert resp.body == b"abcdef"
        # the connection is still usable: the chunked framing ended cleanly
        conn.send(http_request("GET", "/list-no-length"))
        assert conn.final_response().body == b"abcdef"


# --- close() --------------------------------------------------------------------------------
def test_close_called_after_normal_response(rsrv, tmp_path):
    r = rsrv.get("/closing", params={"tag": "normal"})
    assert r.content == b"abc"
    assert wait_for_file(tmp_path / "normal") == "closed after 3"


def test_close_called_when_client_disconnects_mid_stream(rsrv, tmp_path):
    with rsrv.raw() as conn:
        conn.send(http_request("GET", "/endless?tag=gone"))
        head = conn.read_head()
        assert head.status == 200
        received = 0
        while received < 512 * 1024:
            data = conn.recv_some()
            assert data, "server closed the stream early"
            received += len(data)
    text = wait_for_file(tmp_path / "gone")
    assert text.startswith("closed after")
    # the worker is still serving
    assert rsrv.get("/pid").status_code == 200


def test_close_called_when_iteration_raises(rsrv, tmp_path):
    with rsrv.raw() as conn:
        conn.send(http_request("GET", "/raise-midstream?tag=raised"))
        try:
            conn.final_response()
        except Exception:  # noqa: BLE001 - a truncated or reset response is acceptable here
            pass
    assert wait_for_file(tmp_path / "raised").startswith("closed after")
    rsrv.wait_for_line("gm-midstream-error")
    assert rsrv.get("/pid").status_code == 200


# --- file_wrapper ---------------------------------------------------------------------------
@pytest.mark.parametrize("seek", [0, 1000, 99999])
def test_file_wrapper(rsrv, tmp_path, seek):
    data = os.urandom(300_000)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    with rsrv.raw() as conn:
        conn.send(http_request("GET", f"/file?path={path}&seek={seek}"))
        resp = conn.final_response()
    assert resp.status == 200
    assert resp.header("content-length") == str(len(data) - seek)
    assert resp.body == data[seek:]


def test_file_wrapper_without_fileno(rsrv):
    r = rsrv.get("/file-bytesio")
    assert r.status_code == 200
    assert r.content == b"in-memory-" * 1000


# --- a large response is not buffered ---------------------------------------------------------
def test_large_generator_response_is_not_buffered(server, tmp_path):
    # Two Python threads: /progress must be answered while /big is stalled.
    rsrv = server(APP, *WSGI_MODES["pool"], env={"GM_TEST_DIR": str(tmp_path)})
    pid = int(rsrv.get("/pid").text)
    baseline = rss_kib(pid)
    total = 200 * MIB
    with rsrv.raw(timeout=10, rcvbuf=64 * 1024) as conn:
        conn.send(http_request("GET", "/big?mb=200"))
        head = conn.read_head()
        assert head.status == 200
        assert head.header("content-length") == str(total)
        received = 0
        while received < 2 * MIB:
            data = conn.recv_some()
            assert data, "stream ended early"
            received += len(data)
        # Paused: the generator must stall (backpressure) instead of racing ahead.
        last, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            produced = int(rsrv.get("/progress").text)
            if produced != last:
                last, stable_since = produced, time.monotonic()
            elif time.monotonic() - stable_since > 0.5:
                break
            time.sleep(0.05)
        assert last < 64 * MIB, f"the app produced {last} bytes while the client read 2 MiB"
        rss = rss_kib(pid)
        assert rss < 150 * 1024, f"worker RSS {rss} KiB while paused"
        assert rss - baseline < 100 * 1024, f"worker RSS grew {rss - baseline} KiB"
        # resume: the whole body arrives
        while received < total:
            data = conn.recv_some(4 * MIB)
            assert data, f"stream ended after {received} of {total} bytes"
            received += len(data)
    assert received == total


# --- application errors and invalid output ---------------------------------------------------
def test_exception_before_start_response(server):
    srv = server(ERRORS)
    mark = srv.mark()
    r = srv.get("/raise-before")
    assert r.status_code == 500
    srv.wait_for_line(r"Traceback", start=mark, stream="any")
    srv.wait_for_line(r"RuntimeError: gm-boom-before-start", start=mark)
    assert srv.get("/ok").text == "ok"


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("/no-sr", r"start_response"),
        ("/st-int", r"status"),
        ("/st-short", r"status"),
        ("/st-garbage", r"status"),
        ("/hn-bytes", r"header"),
        ("/hv-number", r"header"),
        ("/hv-crlf", r"header"),
        ("/hn-space", r"header"),
        ("/body-text", r"bytes"),
        ("/body-42", r"iterable|\bint\b"),
    ],
)
def test_invalid_output_is_a_500_and_logged(server, path, what):
    srv = server(ERRORS)
    mark = srv.mark()
    with srv.raw() as conn:
        conn.send(http_request("GET", path))
        resp = conn.final_response()
    assert resp.status == 500, resp.head
    assert b"Injected" not in resp.head
    srv.wait_for_line(r"\[ERROR\]", start=mark, stream="stderr")
    # the report says what was wrong (the message or its traceback)
    srv.wait_for_output(what, start=mark, stream="stderr")
    assert srv.get("/ok").text == "ok"
