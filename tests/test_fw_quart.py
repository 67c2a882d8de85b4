"""A real Quart application (tests/apps/frameworks/quart_app.py) in both ASGI modes: a
route that reads the request body and streams a response, and a WebSocket route."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from _frameworks import FRAMEWORKS_DIR, MIB, check_echo
from _support import Server

pytestmark = pytest.mark.usefixtures("asgi_mode")


@pytest.fixture(scope="module")
def srv(asgi_mode):
    s = Server(["quart_app:app"], cwd=FRAMEWORKS_DIR)
    s.wait_ready()
    yield s
    s.kill()


def test_json(srv):
    r = srv.get("/")
    assert r.status_code == 200
    assert r.json() == {"framework": "quart"}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_in_stream_out(srv, chunked):
    check_echo(f"{srv.url}/echo", 2 * MIB, chunked=chunked)


def test_websocket(srv):
    async def run():
        async with connect(f"ws://127.0.0.1:{srv.port}/ws") as ws:
            await ws.send("hi")
            assert await ws.recv() == "quart: hi"
            await ws.send(b"abc")
            assert await ws.recv() == b"cba"
            await ws.send("close")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 4000
            assert ws.close_reason == "asked to"

    asyncio.run(asyncio.wait_for(run(), 20))
