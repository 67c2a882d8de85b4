"""ASGI fixture: responds after a short pause, logging how each response attempt ended."""

import asyncio
import logging

log = logging.getLogger("gristmill.error")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        log.warning("slow-started")
        await asyncio.sleep(0.2)  # the client is gone by now
        try:
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"late"})
        except OSError as exc:
            log.warning("slow-finished %s", type(exc).__name__)
            raise
        log.warning("slow-finished sent")
        return
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": b"ok"})
