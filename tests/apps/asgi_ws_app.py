"""WebSocket fixture app: echo, subprotocols, close codes, denial and disconnect records.

Paths: ``/echo`` echoes text and bytes (``close-me`` makes the app close with 4000),
``/close`` accepts and closes at once with 4321, ``/return`` accepts and returns,
``/deny`` closes before accepting, ``/denial`` answers 418 through
``websocket.http.response.*``, ``/bad-subprotocol`` accepts with an invalid subprotocol,
then validly, and sends the error it got, ``/flood`` sends 64 KiB messages until the
client stops reading (2000 at most; ``/flood-random``: random bytes, which
compression cannot shrink) and logs ``ws-flood sends released`` once its
sends returned, ``/send-after`` keeps sending after the client left, ``/raise``
accepts then raises, ``/sender`` only sends (never receives) until a send raises,
``/close-then-send`` sends after its own close. On the echo paths, the text ``scope``
is answered with the scope's keys and ``version`` with its ``http_version`` and
``scheme``. Every disconnect the app sees is logged
at WARNING to ``gristmill.error`` as ``ws-disconnect <path> <code> <reason> <count>`` so tests can
wait for it. A send to a closed connection must raise an ``OSError`` (ASGI spec
2.4): ``/send-after``, ``/sender`` and ``/close-then-send`` log what each send raised
(``ws-send-after``, ``ws-sender stopped``, ``ws-close-then-send``).
"""

import asyncio
import logging
import os

import _lifespan

log = logging.getLogger("gristmill.error")


async def _raised(send, payload) -> str:
    """What sending ``payload`` raised: its class name and whether it is an OSError."""
    key = "text" if isinstance(payload, str) else "bytes"
    try:
        await send({"type": "websocket.send", key: payload})
    except Exception as e:  # noqa: BLE001 - reported to the test
        return f"{type(e).__name__}/oserror={isinstance(e, OSError)}"
    return "nothing"


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan.complete(receive, send)
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"plain http"})
        return
    path = scope["path"]
    first = await receive()
    assert first["type"] == "websocket.connect", first
    if path == "/deny":
        await send({"type": "websocket.close"})
        return
    if path == "/denial":
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 418,
                "headers": [(b"x-why", b"teapot")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"no sockets here"})
        return
    if path == "/bad-subprotocol":
        # An invalid accept raises; the handshake is still pending, so accept again.
        try:
            await send({"type": "websocket.accept", "subprotocol": "bad\nproto"})
        except ValueError as exc:
            error = str(exc)
        else:
            error = "accepted an invalid subprotocol"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": error})
        await send({"type": "websocket.close", "code": 4002})
        return
    sub = scope["subprotocols"][-1] if scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": sub, "headers": [(b"x-extra", b"1")]})
    if path == "/return":
        return
    if path == "/close":
        await send({"type": "websocket.close", "code": 4321, "reason": "bye now"})
    if path == "/raise":
        raise RuntimeError("ws-app-failed")
    if path == "/timeout":
        # A receive() given up on by the application must not swallow the next message.
        try:
            await asyncio.wait_for(receive(), 0.05)
        except asyncio.TimeoutError:
            await send({"type": "websocket.send", "text": "timed-out"})
        m = await receive()
        await send({"type": "websocket.send", "text": m.get("text")})
        return
    if path in ("/flood", "/flood-random"):
        # Send until the client stops reading; report when the sends are released.
        # /flood-random sends random bytes, which compression cannot shrink.
        done = asyncio.Event()
        random = path == "/flood-random"

        async def flood():
            for _ in range(2000):
                if done.is_set():
                    return
                try:
                    data = os.urandom(65536) if random else b"x" * 65536
                    await send({"type": "websocket.send", "bytes": data})
                except OSError:
                    return  # the connection was closed under the waiting send
                await asyncio.sleep(0)

        sender = asyncio.ensure_future(flood())
        m = await receive()
        done.set()
        log.warning("ws-disconnect %s %s %s %d", path, m["code"], m["reason"], 1)
        await sender
        log.warning("ws-flood sends released")
        return
    if path == "/sender":
        # A broadcast loop: it never calls receive(), so a send that raises is the only
        # way it learns the client left.
        sent = 0
        while True:
            try:
                await send({"type": "websocket.send", "text": f"tick {sent}"})
            except Exception as e:  # noqa: BLE001 - reported to the test
                log.warning(
                    "ws-sender stopped %s oserror=%s", type(e).__name__, isinstance(e, OSError)
                )
                return
            sent += 1
            await asyncio.sleep(0.005)
    if path == "/close-then-send":
        await send({"type": "websocket.close", "code": 1000})
        log.warning("ws-close-then-send %s", await _raised(send, "after close"))
        return
    if path == "/burst":
        # More messages than the outbound queue holds, then return without closing.
        for i in range(64):
            await send({"type": "websocket.send", "text": f"m{i}"})
        return
    disconnects = 0
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            disconnects += 1
            log.warning("ws-disconnect %s %s %s %d", path, m["code"], m["reason"], disconnects)
            if path == "/send-after":
                text = await _raised(send, "into the void")
                data = await _raised(send, b"still nothing")
                log.warning("ws-send-after %s %s", text, data)
            return
        if m.get("text") == "close-me":
            await send({"type": "websocket.close", "code": 4000, "reason": "asked"})
            continue
        if m.get("text") == "version":
            await send(
                {"type": "websocket.send", "text": f"{scope['http_version']} {scope['scheme']}"}
            )
            continue
        if m.get("text") == "scope":
            keys = sorted(k for k in scope if k != "state")
            await send({"type": "websocket.send", "text": repr((keys, scope["subprotocols"]))})
            continue
        await send({"type": "websocket.send", "bytes": m.get("bytes"), "text": m.get("text")})


async def echo(scope, receive, send):
    """A bare echo endpoint for the Autobahn suite."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "bytes": m.get("bytes"), "text": m.get("text")})
