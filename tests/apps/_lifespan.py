"""Test apps' ASGI lifespan: accept startup and shutdown, do nothing else."""


async def complete(receive, send) -> None:
    """Answer each lifespan event with its ``.complete`` until shutdown."""
    while True:
        m = await receive()
        await send({"type": m["type"] + ".complete"})
        if m["type"] == "lifespan.shutdown":
            return
