"""A real Starlette application broadcasting over WebSockets (tests/test_fw_starlette.py).

Each client of ``/ws?name=N`` gets a message every 20 ms from a loop of its own that only
sends. When the client leaves, the next ``send()`` must fail (ASGI 2.4: an ``OSError``
subclass, which Starlette turns into ``WebSocketDisconnect``); the loop records how it
ended in ``STOPPED``, which ``/stopped`` returns."""

import asyncio

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

#: name -> how that client's send loop ended.
STOPPED: dict[str, str] = {}
#: names of the clients connected now.
CLIENTS: set[str] = set()
TICK = 0.02
MAX_TICKS = 3000  # a loop that never learns of the disconnect still ends (after ~60 s)


async def broadcast(websocket: WebSocket):
    name = websocket.query_params["name"]
    await websocket.accept()
    CLIENTS.add(name)
    try:
        for i in range(MAX_TICKS):
            await websocket.send_text(f"{name} {i} {len(CLIENTS)}")
            await asyncio.sleep(TICK)
        STOPPED[name] = "ran out"
    except WebSocketDisconnect as exc:
        STOPPED[name] = f"WebSocketDisconnect {exc.code}"
    except Exception as exc:  # noqa: BLE001 - recorded for the test to see
        STOPPED[name] = f"{type(exc).__name__}: {exc}"
    finally:
        CLIENTS.discard(name)


async def stopped(request):
    return JSONResponse({"stopped": STOPPED, "clients": sorted(CLIENTS)})


app = Starlette(routes=[WebSocketRoute("/ws", broadcast), Route("/stopped", stopped)])
