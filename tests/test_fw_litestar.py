"""A real Litestar 2 application (tests/apps/frameworks/litestar_app.py) in both ASGI
modes: a route that reads the request body as a stream and streams a response."""

from __future__ import annotations

import pytest

from _frameworks import FRAMEWORKS_DIR, MIB, check_echo
from _support import Server

pytestmark = pytest.mark.usefixtures("asgi_mode")


@pytest.fixture(scope="module")
def srv(asgi_mode):
    s = Server(["litestar_app:app"], cwd=FRAMEWORKS_DIR)
    s.wait_ready()
    yield s
    s.kill()


def test_json(srv):
    r = srv.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"framework": "litestar"}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_in_stream_out(srv, chunked):
    check_echo(f"{srv.url}/echo", 3 * MIB, chunked=chunked)


def test_empty_body(srv):
    check_echo(f"{srv.url}/echo", 0, chunks=0)
