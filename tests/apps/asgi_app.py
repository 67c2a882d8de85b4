"""Loader fixture: ASGI applications (not servable until ASGI support lands)."""


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi"})


class AsgiObject:
    async def __call__(self, scope, receive, send):
        await app(scope, receive, send)


instance = AsgiObject()
