"""A real Starlette application with an HTTP route and a WebSocket route."""

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


async def home(request):
    return PlainTextResponse("starlette says hi")


async def shout(websocket: WebSocket):
    await websocket.accept(subprotocol="shout")
    try:
        while True:
            text = await websocket.receive_text()
            if text == "bye":
                await websocket.close(code=4001, reason="bye")
                return
            await websocket.send_json({"upper": text.upper(), "path": websocket.url.path})
    except WebSocketDisconnect:
        return


app = Starlette(routes=[Route("/", home), WebSocketRoute("/ws/shout", shout)])
