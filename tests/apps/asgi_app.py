"""Loader fixture: ASGI applications in the forms auto-detection must recognise."""


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi"})


class AsgiObject:
    async def __call__(self, scope, receive, send):
        await app(scope, receive, send)


instance = AsgiObject()


class Asgi2:
    """ASGI 2: constructed with the scope, then called with receive and send."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        await app(self.scope, receive, send)
