"""ASGI HTTP fixture: request bodies, streaming, pathsend, disconnects, contract violations.

What the application observes out of band (a ``receive()`` that returned
``http.disconnect``, the exception a ``send()`` raised) is written as a marker file named
by the ``tag`` query parameter into the folder ``$GM_TEST_DIR``, so a test can wait for
it. Gates are files the test creates to let a paused application carry on.
"""

import asyncio
import gc
import hashlib
import json
import os
import sys
import threading
import time
from urllib.parse import parse_qs

import gristmill

TEXT = [(b"content-type", b"text/plain")]
CHUNK = b"x" * 65536


def _query(scope):
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}


def _marker(tag, text):
    folder = os.environ["GM_TEST_DIR"]
    # Write then rename: a test polling for the file never reads it half written.
    tmp = os.path.join(folder, f".{tag}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(folder, tag))


def _describe(exc):
    return json.dumps(
        {
            "type": type(exc).__name__,
            "oserror": isinstance(exc, OSError),
            "client_disconnected": isinstance(exc, gristmill.ClientDisconnected),
        }
    )


async def _wait_for_file(path, timeout=20.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not os.path.exists(path):
        if loop.time() > deadline:
            raise TimeoutError(f"gate {path} never opened")
        await asyncio.sleep(0.01)


async def _read_body(receive):
    """The whole request body (every http.request message)."""
    parts = []
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _respond(send, body, status=200, headers=TEXT):
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# --- request bodies --------------------------------------------------------------------------
async def upload(scope, receive, send):
    """Hash the body as it arrives; report every message's size and ``more_body``.

    With ``gate`` (and ``tag``), after the first non-empty chunk: write the marker (the
    bytes received so far), then wait for the gate before reading on. With ``listen``
    (a marker name): after the body, receive() once more, report what it returned within
    0.3 s as ``after_body`` (None if it is still waiting), then once the response is
    sent write what it finally returned as the marker.
    """
    q = _query(scope)
    digest = hashlib.sha256()
    sizes, flags, types = [], [], set()
    gated = "gate" not in q
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        body = message["body"]
        types.add(type(body).__name__)
        digest.update(body)
        sizes.append(len(body))
        flags.append(message["more_body"])
        if not gated and body:
            gated = True
            _marker(q["tag"], str(sum(sizes)))
            await _wait_for_file(q["gate"])
        if not message["more_body"]:
            break
    report = {
        "sha256": digest.hexdigest(),
        "size": sum(sizes),
        "messages": len(sizes),
        "largest": max(sizes),
        "more_body": flags,
        "types": sorted(types),
    }
    listener = None
    if "listen" in q:
        # Django's pattern: once the body ended, receive() again to hear of a disconnect
        # while the view runs. That receive() must not return another http.request; it
        # waits until the response is complete (or the client left): http.disconnect.
        listener = asyncio.ensure_future(receive())
        done, _ = await asyncio.wait({listener}, timeout=0.3)
        report["after_body"] = listener.result()["type"] if done else None
    await _respond(send, json.dumps(report).encode(), headers=[(b"content-type", b"app/json")])
    if listener is not None:
        message = await asyncio.wait_for(listener, 10)
        _marker(q["listen"], message["type"])


# --- responses -------------------------------------------------------------------------------
async def stream(scope, receive, send):
    """Two body messages; the second only once the gate file exists."""
    q = _query(scope)
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    await send({"type": "http.response.body", "body": b"first-chunk;", "more_body": True})
    await _wait_for_file(q["gate"])
    await send({"type": "http.response.body", "body": b"second-chunk", "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def big(scope, receive, send):
    """``mb`` MiB in 64 KiB messages."""
    total = int(_query(scope)["mb"]) << 20
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    sent = 0
    while sent < total:
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        sent += len(CHUNK)
    await send({"type": "http.response.body"})


async def single(scope, receive, send):
    await _respond(send, b"hello world")


async def declared_length(scope, receive, send):
    """The app's own content-length, body in two messages."""
    headers = [*TEXT, (b"content-length", b"10")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"01234", "more_body": True})
    await send({"type": "http.response.body", "body": b"56789"})


async def defaults(scope, receive, send):
    """Every optional key left out: no headers, no body, no more_body."""
    status = 204 if scope["query_string"] == b"nc" else 200
    await send({"type": "http.response.start", "status": status})
    await send({"type": "http.response.body"})


async def defaults_stream(scope, receive, send):
    """Optional keys left out of streamed messages: an empty body keeps the stream open."""
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "more_body": True})
    await send({"type": "http.response.body", "body": b"abc", "more_body": True})
    await send({"type": "http.response.body", "more_body": True})
    await send({"type": "http.response.body", "body": b"def"})


async def status_header(scope, receive, send):
    """A status and repeated response headers, as given."""
    headers = [
        (b"content-type", b"text/plain"),
        (b"set-cookie", b"a=1"),
        (b"X-Mixed-Case", b"Kept-Value"),
        (b"set-cookie", b"b=2"),
    ]
    await _respond(send, b"created", status=201, headers=headers)


async def pathsend(scope, receive, send):
    q = _query(scope)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream")],
        }
    )
    await send({"type": "http.response.pathsend", "path": q["path"]})


async def echo(scope, receive, send):
    tag = _query(scope).get("tag")
    if tag:
        _marker(tag, "called")  # before the first receive(): the application ran
    body = await _read_body(receive)
    await _respond(send, b"echo:" + body)


async def loop_info(scope, receive, send):
    loop = asyncio.get_running_loop()
    cls = type(loop)
    thread = "main" if threading.current_thread() is threading.main_thread() else "own"
    await _respond(send, f"{cls.__module__}.{cls.__qualname__} {thread}".encode())


async def in_thread(scope, receive, send):
    """Answers with what a function run in the loop's default executor returned: its
    result comes back through call_soon_threadsafe (the loop's self-pipe)."""
    q = _query(scope)
    delay = float(q.get("delay", "0.2"))
    loop = asyncio.get_running_loop()
    name = await loop.run_in_executor(None, _sleep_then_name, delay)
    await _respond(send, f"from {name}".encode())


def _sleep_then_name(delay):
    time.sleep(delay)
    return "main" if threading.current_thread() is threading.main_thread() else "a worker"


async def gc_frozen(scope, receive, send):
    """How many objects the worker froze before serving (gc.freeze)."""
    await _respond(send, str(gc.get_freeze_count()).encode())


async def timer(scope, receive, send):
    """Answers after an asyncio timer fired (no network activity meanwhile)."""
    delay = float(_query(scope).get("delay", "0.2"))
    loop = asyncio.get_running_loop()
    fired = loop.create_future()
    loop.call_later(delay, fired.set_result, "fired")
    await _respond(send, (await fired).encode())


async def slow(scope, receive, send):
    """Logs GM-SLOW-START, then answers once the gate file exists."""
    q = _query(scope)
    print(f"GM-SLOW-START pid={os.getpid()}", file=sys.stderr, flush=True)
    await _wait_for_file(q["gate"])
    await _respond(send, b"slow done")


# --- disconnects -----------------------------------------------------------------------------
async def disconnect_before_response(scope, receive, send):
    """Read the body, then wait in receive() (the client goes away) and record what came.

    Then try to answer, and record what send() raised.
    """
    q = _query(scope)
    await _read_body(receive)
    _marker(q["tag"] + "-waiting", "")
    message = await receive()
    _marker(q["tag"], message["type"])
    try:
        await send({"type": "http.response.start", "status": 200, "headers": TEXT})
        await send({"type": "http.response.body", "body": b"too late"})
    except Exception as exc:  # noqa: BLE001 - what it is, is the point
        _marker(q["tag"] + "-send", _describe(exc))
        raise
    _marker(q["tag"] + "-send", "no exception")


async def disconnect_after_response(scope, receive, send):
    """Answer in full, then receive(): the request is over, so http.disconnect."""
    q = _query(scope)
    await _read_body(receive)
    await _respond(send, b"done")
    message = await receive()
    _marker(q["tag"], message["type"])


async def disconnect_mid_response(scope, receive, send):
    """Start a streamed response, then wait in receive() until the client goes away."""
    q = _query(scope)
    await _read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    message = await receive()
    _marker(q["tag"], message["type"])


async def stream_until_error(scope, receive, send):
    """Stream until send() raises (the client went away); record the exception."""
    q = _query(scope)
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    try:
        for _ in range(1 << 16):  # 4 GiB at most
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
    except Exception as exc:  # noqa: BLE001 - what it is, is the point
        _marker(q["tag"], _describe(exc))
        raise
    _marker(q["tag"], "never raised")


# --- contract violations ---------------------------------------------------------------------
START = {"type": "http.response.start", "status": 200, "headers": TEXT}


async def v_body_before_start(scope, receive, send):
    await send({"type": "http.response.body", "body": b"no start"})


async def v_start_twice(scope, receive, send):
    await send(START)
    await send(START)


async def v_unknown_type(scope, receive, send):
    await send(START)
    await send({"type": "http.response.bogus", "body": b"x"})


async def v_unknown_type_first(scope, receive, send):
    await send({"type": "gm.bogus"})


async def v_status_str(scope, receive, send):
    await send({"type": "http.response.start", "status": "200", "headers": TEXT})
    await send({"type": "http.response.body", "body": b"x"})


async def v_header_str(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [("x-gm", "text")]})
    await send({"type": "http.response.body", "body": b"x"})


async def v_header_crlf(scope, receive, send):
    headers = [(b"x-gm", b"a\r\nInjected: yes")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"x"})


async def v_body_str(scope, receive, send):
    await send(START)
    await send({"type": "http.response.body", "body": "a str, not bytes"})


async def v_not_a_dict(scope, receive, send):
    await send("http.response.start")


async def v_no_response(scope, receive, send):
    await _read_body(receive)


async def v_start_only(scope, receive, send):
    await send(START)


async def v_raise(scope, receive, send):
    raise RuntimeError("gm-asgi-boom")


async def _start_streaming(scope, send):
    """Start a streamed response: the head and one chunk.

    With ``before`` (and ``tag``): first write the marker ``<tag>-waiting`` and wait for
    the file ``before``, then send the head and the chunk and carry on without a pause.
    With ``gate``: after the chunk, wait until the client let us go on.
    """
    q = _query(scope)
    if "before" in q:
        _marker(q["tag"] + "-waiting", "")
        await _wait_for_file(q["before"])
    await send(START)
    await send({"type": "http.response.body", "body": b"partial-", "more_body": True})
    if "gate" in q:
        await _wait_for_file(q["gate"])


async def v_raise_midstream(scope, receive, send):
    await _start_streaming(scope, send)
    raise RuntimeError("gm-asgi-midstream-boom")


async def v_raise_after_flood(scope, receive, send):
    """Streams ``n`` chunks of 64 KiB to a client that reads nothing yet, then raises:
    the response channel is full when the failure comes."""
    n = int(_query(scope).get("n", "12"))
    await send(START)
    for i in range(n):
        await send(
            {"type": "http.response.body", "body": bytes([65 + i % 26]) * 65536, "more_body": True}
        )
    raise RuntimeError("gm-asgi-flood-boom")


async def v_system_exit(scope, receive, send):
    raise SystemExit(3)


async def v_return_midstream(scope, receive, send):
    await _start_streaming(scope, send)


ROUTES = {
    "/thread": in_thread,
    "/timer": timer,
    "/gc-frozen": gc_frozen,
    "/upload": upload,
    "/stream": stream,
    "/big": big,
    "/single": single,
    "/declared-length": declared_length,
    "/defaults": defaults,
    "/defaults-stream": defaults_stream,
    "/status-header": status_header,
    "/pathsend": pathsend,
    "/echo": echo,
    "/loop": loop_info,
    "/slow": slow,
    "/disconnect-before-response": disconnect_before_response,
    "/disconnect-after-response": disconnect_after_response,
    "/disconnect-mid-response": disconnect_mid_response,
    "/stream-until-error": stream_until_error,
    "/v/body-before-start": v_body_before_start,
    "/v/start-twice": v_start_twice,
    "/v/unknown-type": v_unknown_type,
    "/v/unknown-type-first": v_unknown_type_first,
    "/v/status-str": v_status_str,
    "/v/header-str": v_header_str,
    "/v/header-crlf": v_header_crlf,
    "/v/body-str": v_body_str,
    "/v/not-a-dict": v_not_a_dict,
    "/v/no-response": v_no_response,
    "/v/start-only": v_start_only,
    "/v/raise": v_raise,
    "/v/raise-midstream": v_raise_midstream,
    "/v/return-midstream": v_return_midstream,
    "/v/raise-after-flood": v_raise_after_flood,
    "/v/system-exit": v_system_exit,
}


async def app(scope, receive, send):
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope type {scope['type']!r}")
    handler = ROUTES.get(scope["path"])
    if handler is None:
        found = scope["path"] == "/ok"
        await _respond(send, b"ok" if found else b"not found", status=200 if found else 404)
        return
    await handler(scope, receive, send)


class Asgi2Echo:
    """ASGI 2: constructed with the scope, then called with receive and send."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] != "http":
            raise RuntimeError("http only")
        body = await _read_body(receive)
        await _respond(send, b"asgi2:" + self.scope["method"].encode() + b":" + body)
