"""A WebSocket app that echoes wrongly now and then (every 7th message upper-cased), for
the test that ``bench/wsh2load.py`` counts a wrong echo as an error."""


async def app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    count = 0
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        count += 1
        text = message.get("text") or ""
        await send({"type": "websocket.send", "text": text.upper() if count % 7 == 0 else text})
