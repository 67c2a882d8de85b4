"""Static-file fixture (tests/test_static.py): a WSGI ``app`` and an ASGI ``asgi`` that
answer everything they get with ``app <path>`` (so a test sees whether a request reached
the application), plus the two ways an application hands the server a file:
``/file_wrapper?path=P`` (WSGI ``wsgi.file_wrapper``) and ``/pathsend?path=P`` (ASGI
``http.response.pathsend``), with ``&length=N`` declaring a Content-Length. The ASGI
``/sleep?s=N`` takes N seconds."""

import asyncio
from urllib.parse import parse_qs


def _path_arg(query: str) -> str:
    return parse_qs(query)["path"][0]


def _length(query: str) -> list[tuple[str, str]]:
    length = parse_qs(query).get("length")
    return [("Content-Length", length[0])] if length else []


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/file_wrapper":
        f = open(_path_arg(environ["QUERY_STRING"]), "rb")  # noqa: SIM115 (the server closes it)
        headers = [("Content-Type", "application/octet-stream"), *_length(environ["QUERY_STRING"])]
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f)
    body = f"app {path}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/pathsend":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/octet-stream"),
                    *((k.encode(), v.encode()) for k, v in _length(scope["query_string"].decode())),
                ],
            }
        )
        path = _path_arg(scope["query_string"].decode())
        await send({"type": "http.response.pathsend", "path": path})
        return
    if scope["path"] == "/sleep":
        await asyncio.sleep(float(parse_qs(scope["query_string"].decode())["s"][0]))
    body = f"app {scope['path']}".encode()
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
