"""ASGI fixture for TLS: reports the scheme and the `tls` extension as JSON, and over a
WebSocket echoes the scheme."""

import json


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return  # no lifespan support: `auto` carries on
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": scope["scheme"]})
        await send({"type": "websocket.close"})
        return
    tls = scope["extensions"].get("tls")
    body = json.dumps(
        {"scheme": scope["scheme"], "http_version": scope["http_version"], "tls": tls}
    )
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": body.encode()})
