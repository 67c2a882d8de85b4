"""A small ASGI application with a WebSocket route: `make run-asgi`.

``/`` serves a page that opens a WebSocket to ``/ws``; every message a client sends is
broadcast to every connected client. Lifespan keeps the set of connections in ``state``.
Try it with two browser tabs, or with the `websockets` command line client::

    python -m websockets ws://127.0.0.1:8000/ws
"""

import asyncio
import json

PAGE = b"""<!doctype html>
<title>gristmill chat</title>
<ul id="log"></ul>
<form id="f"><input id="m" autocomplete="off" autofocus><button>send</button></form>
<script>
const ws = new WebSocket(`ws://${location.host}/ws`);
const log = document.getElementById("log");
ws.onmessage = (e) => { const li = document.createElement("li");
  li.textContent = e.data; log.appendChild(li); };
document.getElementById("f").onsubmit = (e) => { e.preventDefault();
  const m = document.getElementById("m"); ws.send(m.value); m.value = ""; };
</script>
"""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["clients"] = set()
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await http(scope, send)
    elif scope["type"] == "websocket":
        await chat(scope, receive, send)


async def http(scope, send):
    if scope["path"] == "/":
        headers = [(b"content-type", b"text/html; charset=utf-8")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": PAGE})
    elif scope["path"] == "/clients":
        body = json.dumps({"connected": len(scope["state"]["clients"])}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    else:
        await send({"type": "http.response.start", "status": 404})
        await send({"type": "http.response.body", "body": b"not found\n"})


async def chat(scope, receive, send):
    if scope["path"] != "/ws":
        await send({"type": "websocket.close", "code": 1008})
        return
    clients = scope["state"]["clients"]
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    clients.add(send)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text") or (message.get("bytes") or b"").decode("utf-8", "replace")
            await asyncio.gather(
                *(peer({"type": "websocket.send", "text": text}) for peer in list(clients)),
                return_exceptions=True,
            )
    finally:
        clients.discard(send)
