"""A small real Quart application (tests/test_fw_quart.py): ``POST /echo`` reads the
request body and streams back a JSON summary line, then the body; ``/ws`` is a
WebSocket that answers each message."""

import hashlib
import json

from quart import Quart, request, websocket

app = Quart(__name__)
PIECE = 64 * 1024


@app.get("/")
async def home():
    return {"framework": "quart"}


@app.post("/echo")
async def echo():
    body = await request.get_data()
    summary = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    async def generate():
        yield json.dumps(summary).encode() + b"\n"
        for i in range(0, len(body), PIECE):
            yield body[i : i + PIECE]

    return generate(), 200, {"Content-Type": "application/octet-stream"}


@app.websocket("/ws")
async def ws():
    await websocket.accept()
    while True:
        data = await websocket.receive()
        if data == "close":
            await websocket.close(4000, "asked to")
            return
        await websocket.send(f"quart: {data}" if isinstance(data, str) else data[::-1])
