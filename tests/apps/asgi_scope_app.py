"""ASGI scope fixture: answers every request with the ``repr`` of its scope.

The test reads the answer back with ``ast.literal_eval``, so bytes stay bytes and tuples
stay tuples: the types the server put into the scope are what the test sees. The request
body is read to the end (its length and the ``more_body`` flags are reported too).

Lifespan startup puts ``{"from_lifespan": "yes", "items": 1}`` into ``state``. A request
with the query string ``mutate`` changes its own ``scope["state"]`` (replaces a key, adds
one), which must not reach the next request's scope (a shallow copy per request).
"""

KEYS = (
    "type",
    "asgi",
    "http_version",
    "method",
    "scheme",
    "path",
    "raw_path",
    "query_string",
    "root_path",
    "headers",
    "client",
    "server",
    "state",
    "extensions",
)


async def _lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            scope["state"]["from_lifespan"] = "yes"
            scope["state"]["items"] = 1
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    assert scope["type"] == "http"
    more_body, size = [], 0
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        size += len(message.get("body", b""))
        more_body.append(message.get("more_body", False))
        if not more_body[-1]:
            break
    report = {key: scope[key] for key in KEYS if key in scope}
    if "state" in scope:
        report["state"] = dict(scope["state"])  # as it came, before any change below
    report["missing"] = [key for key in KEYS if key not in scope]
    report["headers"] = [tuple(pair) for pair in scope["headers"]]
    report["header_types"] = sorted({type(x).__name__ for pair in scope["headers"] for x in pair})
    report["body_size"] = size
    report["more_body"] = more_body
    if scope["query_string"] == b"mutate" and "state" in scope:
        scope["state"]["from_lifespan"] = "mutated"
        scope["state"]["added_by_request"] = True
    body = repr(report).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"x-scope-method", scope["method"].encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
