"""ASGI fixture: an application that keeps working after its response was sent.

``/bg`` sends a complete response, logs ``GM-BG-RESPONDED``, then waits for the gate file
``$GM_TEST_DIR/release`` and does half a second more work before it logs
``GM-BG-DONE`` (as a Starlette background task would). ``/ping`` logs ``GM-PING``.
Lifespan shutdown logs ``GM-LIFESPAN-SHUTDOWN``.
"""

import asyncio
import logging
import os

log = logging.getLogger("gristmill.error")


async def _respond(send, body):
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                log.warning("GM-LIFESPAN-SHUTDOWN")
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/bg":
        await _respond(send, b"sent")
        log.warning("GM-BG-RESPONDED")
        gate = os.path.join(os.environ["GM_TEST_DIR"], "release")
        while not os.path.exists(gate):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # the work the application does after its response
        log.warning("GM-BG-DONE")
        return
    log.warning("GM-PING")
    await _respond(send, b"pong")
