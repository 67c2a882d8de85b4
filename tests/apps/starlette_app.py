"""A real Starlette application: routes, JSON, bodies, streaming, files, lifespan state.

Lifespan writes ``startup``/``shutdown`` markers into ``$GM_TEST_DIR`` and yields state
that requests read back through ``request.state``. ``/ws`` is a WebSocket echo route.
"""

import asyncio
import contextlib
import hashlib
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


def _marker(name, text=""):
    folder = os.environ["GM_TEST_DIR"]
    tmp = os.path.join(folder, f".{name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(folder, name))


@contextlib.asynccontextmanager
async def lifespan(app):
    _marker("startup", str(os.getpid()))
    yield {"token": "gm-lifespan-token", "started_in": os.getpid()}
    _marker("shutdown", str(os.getpid()))


async def home(request: Request):
    return PlainTextResponse("hello from starlette")


async def item(request: Request):
    return JSONResponse(
        {
            "item_id": request.path_params["item_id"],
            "q": request.query_params.getlist("q"),
            "path": request.url.path,
            "root_path": request.scope["root_path"],
            "url_for": str(request.url_for("item", item_id=7)),
            "client_port_is_int": isinstance(request.client.port, int),
        }
    )


async def echo_json(request: Request):
    data = await request.json()
    return JSONResponse({"received": data, "method": request.method}, status_code=201)


async def upload(request: Request):
    digest, size, chunks = hashlib.sha256(), 0, 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
        chunks += bool(chunk)
    return JSONResponse({"sha256": digest.hexdigest(), "size": size, "chunks": chunks})


async def headers(request: Request):
    return JSONResponse(
        {
            "x_multi": request.headers.getlist("x-multi"),
            "cookies": request.cookies,
            "user_agent": request.headers.get("user-agent"),
        },
        headers={"x-served-by": "starlette"},
    )


async def stream(request: Request):
    gate = request.query_params["gate"]

    async def body():
        yield b"first;"
        for _ in range(2000):  # 20 s at most
            if os.path.exists(gate):
                break
            await asyncio.sleep(0.01)
        yield b"second"

    return StreamingResponse(body(), media_type="text/plain")


async def endless(request: Request):
    tag = request.query_params["tag"]

    async def body():
        sent = 0
        try:
            while sent < 1 << 32:
                yield b"y" * 65536
                sent += 65536
        finally:
            _marker(tag, "generator closed")

    return StreamingResponse(body(), media_type="application/octet-stream")


async def state(request: Request):
    return JSONResponse({"token": request.state.token, "started_in": request.state.started_in})


async def file(request: Request):
    return FileResponse(request.query_params["path"], media_type="application/octet-stream")


async def error(request: Request):
    raise RuntimeError("gm-starlette-boom")


async def sub_hello(request: Request):
    return PlainTextResponse(f"sub:{request.url.path}")


async def ws_echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


app = Starlette(
    routes=[
        Route("/", home),
        Route("/items/{item_id:int}", item, name="item"),
        Route("/json", echo_json, methods=["POST", "PUT"]),
        Route("/upload", upload, methods=["POST"]),
        Route("/headers", headers),
        Route("/stream", stream),
        Route("/endless", endless),
        Route("/state", state),
        Route("/file", file),
        Route("/error", error),
        Mount("/sub", routes=[Route("/hello", sub_hello)]),
        WebSocketRoute("/ws", ws_echo),
    ],
    lifespan=lifespan,
)
