"""A real Starlette application served end to end (HTTP and lifespan).

Its WebSocket route (``/ws``) is exercised by the WebSocket tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal

import httpx
import pytest

from _support import Server, http_request, wait_for_file

# Every test here runs once per ASGI mode (one thread, loop thread).
pytestmark = pytest.mark.usefixtures("asgi_mode")

APP = "starlette_app:app"
MIB = 1 << 20


@pytest.fixture(scope="module")
def markers(tmp_path_factory):
    return tmp_path_factory.mktemp("starlette-markers")


@pytest.fixture(scope="module")
def srv(asgi_mode, markers):
    s = Server([APP], env={"GM_TEST_DIR": str(markers)})
    s.wait_ready()
    yield s
    s.kill()


def test_plain_text_route(srv):
    r = srv.get("/")
    assert r.status_code == 200
    assert r.text == "hello from starlette"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["content-length"] == str(len(r.content))


def test_head_request(srv):
    r = httpx.head(f"{srv.url}/", timeout=10)
    assert r.status_code == 200
    assert r.content == b""


def test_path_and_query_params(srv):
    r = srv.get("/items/42", params=[("q", "a b"), ("q", "café")])
    assert r.status_code == 200
    data = r.json()
    assert data["item_id"] == 42
    assert data["q"] == ["a b", "café"]
    assert data["path"] == "/items/42"
    assert data["root_path"] == ""
    assert data["url_for"] == f"{srv.url}/items/7"
    assert data["client_port_is_int"] is True


def test_unknown_route_and_wrong_method(srv):
    assert srv.get("/nope").status_code == 404
    assert srv.get("/items/not-an-int").status_code == 404
    r = srv.get("/json")
    assert r.status_code == 405
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"POST", "PUT"}


def test_json_request_and_response(srv):
    payload = {"name": "gristmill", "list": [1, 2.5, None, True], "text": "café ✓"}
    r = srv.post("/json", json=payload)
    assert r.status_code == 201
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"received": payload, "method": "POST"}


def test_malformed_json_is_a_server_error_not_a_crash(srv):
    mark = srv.mark()
    r = srv.post("/json", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 500
    srv.wait_for_output(r"JSONDecodeError", start=mark, stream="stderr", flags=0)
    assert srv.get("/").status_code == 200


def test_request_body_streamed(srv):
    data = os.urandom(MIB)

    def gen():
        for _ in range(8):
            yield data

    with httpx.Client(timeout=30) as client:
        r = client.post(f"{srv.url}/upload", content=gen())
    assert r.status_code == 200
    report = r.json()
    assert report["sha256"] == hashlib.sha256(data * 8).hexdigest()
    assert report["size"] == 8 * MIB
    assert report["chunks"] > 1


def test_headers_and_cookies(srv):
    with srv.raw() as conn:
        conn.send(
            http_request(
                "GET",
                "/headers",
                headers=[
                    ("X-Multi", "one"),
                    ("User-Agent", "gm-test"),
                    ("X-Multi", "two"),
                    ("Cookie", "a=1; b=2"),
                ],
            )
        )
        resp = conn.final_response()
    assert resp.status == 200
    assert resp.header("x-served-by") == "starlette"
    data = json.loads(resp.body)
    assert data == {
        "x_multi": ["one", "two"],
        "cookies": {"a": "1", "b": "2"},
        "user_agent": "gm-test",
    }


def test_streaming_response(srv, markers):
    gate = markers / "stream.gate"
    with (
        httpx.Client(timeout=httpx.Timeout(5.0)) as client,
        client.stream("GET", f"{srv.url}/stream", params={"gate": str(gate)}) as r,
    ):
        assert r.status_code == 200
        assert r.headers["transfer-encoding"] == "chunked"
        chunks = r.iter_raw()
        assert next(chunks) == b"first;"  # while the generator waits for the gate
        gate.write_text("open")
        assert b"".join(chunks) == b"second"


def test_client_abort_ends_a_streaming_response_quietly(srv, markers):
    tag = "endless-aborted"
    mark = srv.mark()
    with srv.raw(rcvbuf=64 * 1024) as conn:
        conn.send(http_request("GET", f"/endless?tag={tag}"))
        assert conn.read_head().status == 200
        received = 0
        while received < 256 * 1024:
            data = conn.recv_some()
            assert data, "stream ended early"
            received += len(data)
    # send() raised an OSError into Starlette, which stopped and closed the generator
    assert wait_for_file(markers / tag) == "generator closed"
    # the request is over (access log line), and it was not logged as an error
    srv.wait_for_line(re.escape(f"GET /endless?tag={tag} "), start=mark, stream="stdout")
    assert not [line for line in srv.stderr_lines(mark) if "ERROR" in line]
    assert srv.get("/").status_code == 200


def test_lifespan_state(srv):
    (worker,) = srv.worker_pids()
    r = srv.get("/state")
    assert r.status_code == 200
    assert r.json() == {"token": "gm-lifespan-token", "started_in": worker}


def test_file_response(srv, tmp_path):
    data = os.urandom(500_000)
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    r = srv.get("/file", params={"path": str(path)})
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(data))
    assert r.content == data


def test_exception_is_a_500_and_logged(srv):
    mark = srv.mark()
    r = srv.get("/error")
    assert r.status_code == 500
    srv.wait_for_output(
        r"Traceback(.|\n)*RuntimeError: gm-starlette-boom", start=mark, stream="stderr", flags=0
    )
    assert srv.get("/").text == "hello from starlette"


def test_mounted_sub_application(srv):
    r = srv.get("/sub/hello")
    assert r.status_code == 200
    assert r.text == "sub:/sub/hello"


@pytest.mark.parametrize("target", ["/api/items/3", "/items/3"])
def test_root_path(server, tmp_path, target):
    srv = server("--root-path", "/api", APP, env={"GM_TEST_DIR": str(tmp_path)})
    r = srv.get(target)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["item_id"] == 3
    assert data["root_path"] == "/api"
    assert data["path"] == "/api/items/3"
    assert data["url_for"] == f"{srv.url}/api/items/7"
    assert srv.get("/api/sub/hello").text == "sub:/api/sub/hello"


def test_lifespan_startup_and_shutdown(server, tmp_path):
    srv = server(APP, env={"GM_TEST_DIR": str(tmp_path)})
    (worker,) = srv.worker_pids()
    assert (tmp_path / "startup").read_text() == str(worker)
    assert not (tmp_path / "shutdown").exists()
    assert srv.get("/state").json()["token"] == "gm-lifespan-token"
    assert srv.stop(signal.SIGTERM) == 0, srv.output()
    assert (tmp_path / "shutdown").read_text() == str(worker)
