"""A real Flask 3 application (tests/apps/frameworks/flask_app.py) served over WSGI in
both WSGI modes: a form post, a streamed response (``stream_with_context``) and
``send_file`` of a 4 MiB file, which goes through ``wsgi.file_wrapper``."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from _frameworks import FRAMEWORKS_DIR, MIB, random_file
from _support import WSGI_MODES, Server

SIZE = 4 * MIB + 123


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    return random_file(tmp_path_factory.mktemp("flask"), SIZE, "big.bin")


@pytest.fixture(scope="module", params=list(WSGI_MODES))
def srv(request, big_file):
    s = Server(
        ["flask_app:app", *WSGI_MODES[request.param]],
        env={"GM_FLASK_FILE": str(big_file[0])},
        cwd=FRAMEWORKS_DIR,
    )
    s.wait_ready()
    yield s
    s.kill()


def test_home(srv):
    r = srv.get("/")
    assert r.status_code == 200
    assert r.text == "hello from flask"
    assert r.headers["content-type"] == "text/html; charset=utf-8"


def test_form_post(srv):
    r = srv.post("/form", data={"name": "grist mill & co", "tag": ["a", "é"]})
    assert r.status_code == 200
    assert r.json() == {
        "name": "grist mill & co",
        "tags": ["a", "é"],
        "content_type": "application/x-www-form-urlencoded",
    }
    # A form without the required field is Flask's 400, not a server error.
    assert srv.post("/form", data={"other": "x"}).status_code == 400


def test_streamed_response(srv):
    with httpx.Client(timeout=20) as client:
        with client.stream("GET", f"{srv.url}/stream", params={"n": "100"}) as r:
            assert r.status_code == 200
            assert r.headers["transfer-encoding"] == "chunked"
            assert "content-length" not in r.headers
            body = r.read()
    assert body == "".join(f"/stream {i}\n" for i in range(100)).encode()


def test_send_file(srv, big_file):
    path, digest = big_file
    with httpx.Client(timeout=30) as client:
        r = client.get(f"{srv.url}/file")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-length"] == str(SIZE)
    assert len(r.content) == SIZE
    assert hashlib.sha256(r.content).hexdigest() == digest


def test_send_file_range(srv, big_file):
    path, _ = big_file
    r = srv.get("/file", headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 1000-1999/{SIZE}"
    assert r.content == path.read_bytes()[1000:2000]
