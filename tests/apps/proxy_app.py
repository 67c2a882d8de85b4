"""Proxy-headers fixture: answers with what the server decided about the request, as
JSON. ``wsgi`` reports the environ keys a proxy can change; ``asgi`` the scope keys, for
HTTP requests and WebSocket connections (sent as the first text message)."""

import json

ENVIRON_KEYS = (
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "wsgi.url_scheme",
    "HTTP_HOST",
    "SERVER_NAME",
    "SERVER_PORT",
    "SCRIPT_NAME",
    "PATH_INFO",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_FORWARDED",
    "HTTPS",
)


def wsgi(environ, start_response):
    body = json.dumps({k: environ.get(k) for k in ENVIRON_KEYS}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _report(scope):
    headers = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
    return {
        "type": scope["type"],
        "client": scope["client"],
        "scheme": scope["scheme"],
        "server": scope["server"],
        "root_path": scope["root_path"],
        "path": scope["path"],
        "headers": headers,
    }


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(_report(scope))})
        await send({"type": "websocket.close", "code": 1000})
        return
    while (await receive()).get("more_body"):
        pass
    body = json.dumps(_report(scope)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
