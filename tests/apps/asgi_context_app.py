"""ASGI fixture: a context variable set during lifespan startup, read by requests."""

import contextvars

var = contextvars.ContextVar("var", default="unset")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                var.set("from-lifespan")
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    seen = var.get()
    var.set("changed-by-request")
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": seen.encode()})
