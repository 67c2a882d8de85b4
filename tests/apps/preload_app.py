"""An application that says where it was imported: each import appends its pid to
``$PRELOAD_DIR/imports``. It holds 64 MiB of written memory, to see whether the workers
share it. ``/`` answers the worker's pid (WSGI ``application``, ASGI ``app``)."""

import os

with open(os.path.join(os.environ["PRELOAD_DIR"], "imports"), "a") as f:
    f.write(f"{os.getpid()}\n")

BLOB = b"x" * (64 << 20)


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
