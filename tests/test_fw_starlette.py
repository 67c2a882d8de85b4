"""A real Starlette application (tests/apps/frameworks/starlette_broadcast.py) in both
ASGI modes: a WebSocket broadcast to two clients whose server-side loop for a client that
leaves learns it from ``send()`` (``WebSocketDisconnect``, ASGI 2.4: sending on a closed
WebSocket raises an ``OSError``) and stops, while the other client keeps receiving.

The rest of Starlette (HTTP, lifespan, WebSocket basics) is covered by
tests/test_asgi_starlette.py and tests/test_asgi_websocket.py."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect

from _frameworks import FRAMEWORKS_DIR
from _support import Server, wait_until

pytestmark = pytest.mark.usefixtures("asgi_mode")


@pytest.fixture(scope="module")
def srv(asgi_mode):
    s = Server(["starlette_broadcast:app"], cwd=FRAMEWORKS_DIR)
    s.wait_ready()
    yield s
    s.kill()


def test_broadcast_loop_stops_when_its_client_leaves(srv, request):
    tag = request.node.callspec.id.replace("-", "")
    leaver, stayer = f"leaver{tag}", f"stayer{tag}"
    url = f"ws://127.0.0.1:{srv.port}/ws?name="

    def stopped() -> dict:
        r = srv.get("/stopped")
        assert r.status_code == 200
        return r.json()

    async def run():
        # A short close_timeout: a failing run must not wait 10 s per close handshake.
        async with connect(url + stayer, close_timeout=2) as b:
            async with connect(url + leaver, close_timeout=2) as a:
                for _ in range(3):
                    assert (await a.recv()).startswith(f"{leaver} ")
                    assert (await b.recv()).startswith(f"{stayer} ")
            # a has closed (close handshake done); its loop must learn it from send().
            # Keep reading b meanwhile so that its loop is never blocked on us.
            deadline = asyncio.get_running_loop().time() + 5
            while leaver not in (await asyncio.to_thread(stopped))["stopped"]:
                assert asyncio.get_running_loop().time() < deadline, (
                    f"the server-side loop of {leaver} still runs 5 s after it left: "
                    f"{await asyncio.to_thread(stopped)}"
                )
                await b.recv()
            state = await asyncio.to_thread(stopped)
            assert state["stopped"][leaver].startswith("WebSocketDisconnect"), state
            assert stayer not in state["stopped"]
            assert state["clients"] == [stayer]
            # The other client keeps receiving, now as the only one connected.
            for _ in range(10):
                msg = await b.recv()
                assert msg.startswith(f"{stayer} ")
            assert msg.endswith(" 1")

    asyncio.run(asyncio.wait_for(run(), 30))
    wait_until(
        lambda: stayer in stopped()["stopped"],
        timeout=5,
        message=f"the loop of {stayer} to stop after it closed too",
    )
    assert stopped()["stopped"][stayer].startswith("WebSocketDisconnect")
