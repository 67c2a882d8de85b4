"""A real FastAPI application (tests/apps/frameworks/fastapi_app.py) served over ASGI in
both ASGI modes: JSON with validation, an ``UploadFile`` of 6 MiB, ``StreamingResponse``,
a ``BackgroundTasks`` task, a WebSocket echo and state from the ``lifespan`` context
manager."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from websockets.asyncio.client import connect

from _frameworks import FRAMEWORKS_DIR, MIB, random_file
from _support import Server, wait_until

pytestmark = pytest.mark.usefixtures("asgi_mode")


@pytest.fixture(scope="module")
def srv(asgi_mode):
    s = Server(["fastapi_app:app"], cwd=FRAMEWORKS_DIR)
    s.wait_ready()
    yield s
    s.kill()


def test_json(srv):
    r = srv.post("/items", json={"name": "mill", "price": 2.5, "tags": ["x"]})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"item": {"name": "mill", "price": 2.5, "tags": ["x"]}, "total": 5.0}
    r = srv.post("/items", json={"name": "mill"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "price"]


def test_upload_file(srv, tmp_path):
    path, digest = random_file(tmp_path, 6 * MIB, "six.bin")
    with httpx.Client(timeout=30) as client, path.open("rb") as f:
        r = client.post(f"{srv.url}/upload", files={"file": ("six.bin", f)})
    assert r.status_code == 200, r.text[:2000]
    assert r.json() == {"filename": "six.bin", "size": 6 * MIB, "sha256": digest}


def test_streaming_response(srv):
    with httpx.Client(timeout=20) as client:
        with client.stream("GET", f"{srv.url}/stream", params={"n": 200}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain")
            assert r.headers["transfer-encoding"] == "chunked"
            body = r.read()
    assert body == "".join(f"chunk {i}\n" for i in range(200)).encode()


def test_background_task(srv):
    name = f"task-{srv.port}"
    r = srv.post(f"/tasks/{name}")
    assert r.status_code == 200
    assert r.json() == {"queued": name, "done_now": False}
    wait_until(
        lambda: name in srv.get("/tasks").json()["done"],
        timeout=10,
        interval=0.05,
        message="the background task to run",
    )


def test_lifespan_state(srv):
    r = srv.get("/state")
    assert r.status_code == 200
    data = r.json()
    assert data["started_by"] == "lifespan"
    # The lifespan ran in the worker that serves the request.
    assert data["pid"] == data["me"]


def test_websocket_echo(srv):
    async def run():
        async with connect(f"ws://127.0.0.1:{srv.port}/ws") as ws:
            await ws.send("hello")
            assert await ws.recv() == "echo: hello"
            await ws.send(b"\x01\x02\x03")
            assert await ws.recv() == b"\x03\x02\x01"
            big = "x" * 100_000
            await ws.send(big)
            assert await ws.recv() == "echo: " + big

    asyncio.run(asyncio.wait_for(run(), 20))
    # The server stays healthy after the client closed.
    assert srv.get("/state").status_code == 200
