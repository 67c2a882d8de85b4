"""A small real FastAPI application (tests/test_fw_fastapi.py): JSON, ``UploadFile``,
``StreamingResponse``, ``BackgroundTasks``, a WebSocket echo and lifespan state."""

import hashlib
import os
from contextlib import asynccontextmanager

from fastapi import BackgroundTasks, FastAPI, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel


@asynccontextmanager
async def lifespan(app):
    # The state yielded here is copied into every request's ``request.state``.
    yield {"started_by": "lifespan", "pid": os.getpid(), "done": []}


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.post("/items")
async def create_item(item: Item):
    return {"item": item.model_dump(), "total": item.price * 2}


@app.get("/state")
async def state(request: Request):
    return {"started_by": request.state.started_by, "pid": request.state.pid, "me": os.getpid()}


@app.post("/upload")
async def upload(file: UploadFile):
    digest = hashlib.sha256()
    size = 0
    while chunk := await file.read(256 * 1024):
        digest.update(chunk)
        size += len(chunk)
    return {"filename": file.filename, "size": size, "sha256": digest.hexdigest()}


@app.get("/stream")
async def stream(n: int = 5):
    async def generate():
        for i in range(n):
            yield f"chunk {i}\n"

    return StreamingResponse(generate(), media_type="text/plain")


def record(done: list, name: str) -> None:
    done.append(name)


@app.post("/tasks/{name}")
async def add_task(name: str, request: Request, background: BackgroundTasks):
    # Runs after the response has been sent.
    background.add_task(record, request.state.done, name)
    return {"queued": name, "done_now": name in request.state.done}


@app.get("/tasks")
async def tasks(request: Request):
    return {"done": request.state.done}


@app.websocket("/ws")
async def echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") is not None:
                await websocket.send_text("echo: " + msg["text"])
            else:
                await websocket.send_bytes(msg["bytes"][::-1])
    except WebSocketDisconnect:
        return
