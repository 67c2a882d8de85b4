"""ASGI lifespan fixture; ``$GM_LIFESPAN`` picks the behaviour, ``$GM_TEST_DIR`` gets markers.

Modes:

- ``ok`` (default): startup writes ``startup-<pid>`` and fills ``state``; shutdown writes
  ``shutdown-<pid>`` (with the number of requests served by then).
- ``fail``: answers startup with ``lifespan.startup.failed`` and a message.
- ``raise``: raises on the lifespan scope (an app that does not speak lifespan).
- ``shutdown-fail``: starts up, answers shutdown with ``lifespan.shutdown.failed``.
- ``shutdown-slow``: takes 3 s to shut down (after writing its marker).

In every mode the first lifespan event seen writes ``lifespan-seen-<pid>``. HTTP requests
answer with a JSON report of ``scope["state"]`` (``null`` when there is none); the query
string ``mutate`` changes the request's own state afterwards.
"""

import asyncio
import json
import os

MODE = os.environ.get("GM_LIFESPAN", "ok")
SERVED = {"requests": 0}


def _marker(name, text=""):
    folder = os.environ["GM_TEST_DIR"]
    tmp = os.path.join(folder, f".{name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(folder, name))


async def lifespan(scope, receive, send):
    _marker(f"lifespan-seen-{os.getpid()}", json.dumps(scope.get("asgi")))
    if MODE == "raise":
        raise RuntimeError("gm-no-lifespan-here")
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if MODE == "fail":
                await send({"type": "lifespan.startup.failed", "message": "gm-startup-failed"})
                return
            scope["state"]["greeting"] = "hello from startup"
            scope["state"]["pid"] = os.getpid()
            _marker(f"startup-{os.getpid()}")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            _marker(f"shutdown-{os.getpid()}", str(SERVED["requests"]))
            if MODE == "shutdown-slow":
                await asyncio.sleep(3)
            if MODE == "shutdown-fail":
                await send({"type": "lifespan.shutdown.failed", "message": "gm-shutdown-failed"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    while (await receive()).get("more_body"):
        pass
    state = scope.get("state")
    body = json.dumps({"state": dict(state) if state is not None else None}).encode()
    if scope["query_string"] == b"mutate" and state is not None:
        state["greeting"] = "changed by a request"
        state["added"] = "by a request"
    SERVED["requests"] += 1
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
