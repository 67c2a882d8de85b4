"""A small real Litestar application (tests/test_fw_litestar.py): ``POST /echo`` reads the
request body as a stream and streams back a JSON summary line, then the body itself."""

import hashlib
import json

from litestar import Litestar, Request, get, post
from litestar.response import Stream

PIECE = 64 * 1024


@get("/")
async def home() -> dict[str, str]:
    return {"framework": "litestar"}


@post("/echo", status_code=200)
async def echo(request: Request) -> Stream:
    received = bytearray()
    chunks = 0
    async for chunk in request.stream():
        received += chunk
        chunks += chunk != b""
    body = bytes(received)
    summary = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest(), "chunks": chunks}

    async def generate():
        yield json.dumps(summary).encode() + b"\n"
        for i in range(0, len(body), PIECE):
            yield body[i : i + PIECE]

    return Stream(generate(), media_type="application/octet-stream")


app = Litestar(route_handlers=[home, echo])
