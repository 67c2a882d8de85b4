"""A small real Falcon application, WSGI (``falcon_app:app``, ``falcon.App``) and ASGI
(``falcon_app:asgi_app``, ``falcon.asgi.App``), for tests/test_fw_falcon.py:
``POST /echo`` reads the request body and streams back a JSON summary line, then the
body."""

import hashlib
import json

import falcon
import falcon.asgi

PIECE = 64 * 1024


def summary(body: bytes, interface: str) -> bytes:
    info = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest(), "via": interface}
    return json.dumps(info).encode() + b"\n"


class Echo:
    def on_get(self, req, resp):
        resp.media = {"framework": "falcon", "interface": "wsgi"}

    def on_post(self, req, resp):
        if req.content_length is None:
            # Chunked: bounded_stream would read nothing; gristmill sets
            # wsgi.input_terminated, so the raw stream ends with the body.
            body = req.stream.read()
        else:
            body = req.bounded_stream.read()

        def generate():
            yield summary(body, "wsgi")
            for i in range(0, len(body), PIECE):
                yield body[i : i + PIECE]

        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = generate()


class AsyncEcho:
    async def on_get(self, req, resp):
        resp.media = {"framework": "falcon", "interface": "asgi"}

    async def on_post(self, req, resp):
        received = bytearray()
        async for chunk in req.stream:
            received += chunk
        body = bytes(received)

        async def generate():
            yield summary(body, "asgi")
            for i in range(0, len(body), PIECE):
                yield body[i : i + PIECE]

        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = generate()


app = falcon.App()
app.add_route("/echo", Echo())

asgi_app = falcon.asgi.App()
asgi_app.add_route("/echo", AsyncEcho())
