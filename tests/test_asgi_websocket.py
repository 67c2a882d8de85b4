"""ASGI WebSocket over HTTP/1.1, driven by the `websockets` client library."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from _support import (
    CLOSE,
    TEXT,
    autobahn,
    autobahn_failures,
    http_request,
    raw_ws,
    read_ws_frame,
    ws_frame,
)

# Every test here runs once per ASGI mode (one thread, loop thread).
pytestmark = pytest.mark.usefixtures("asgi_mode")

APP = "asgi_ws_app:app"


def ws_url(srv, path: str) -> str:
    return f"ws://127.0.0.1:{srv.port}{path}"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_echo_text_bytes_subprotocol_and_accept_headers(server):
    srv = server(APP)

    async def go():
        async with connect(ws_url(srv, "/echo"), subprotocols=["chat", "superchat"]) as ws:
            assert ws.subprotocol == "superchat"
            assert ws.response.headers["x-extra"] == "1"
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\xffbin")
            assert await ws.recv() == b"\x00\xffbin"
            await ws.send("scope")
            keys, subprotocols = eval(await ws.recv())  # noqa: S307 - our own repr
            assert "method" not in keys and "subprotocols" in keys and "headers" in keys
            assert subprotocols == ["chat", "superchat"]

    run(go())


def test_large_and_fragmented_messages(server):
    srv = server(APP)

    async def go():
        async with connect(ws_url(srv, "/echo"), max_size=None) as ws:
            big = bytes(range(256)) * 8192  # 2 MiB
            await ws.send(big)
            assert await ws.recv() == big
            await ws.send(["frag-one ", "frag-two ", "frag-three"])
            assert await ws.recv() == "frag-one frag-two frag-three"
            await ws.send([b"a" * 70000, b"b" * 70000])
            assert await ws.recv() == b"a" * 70000 + b"b" * 70000
            await ws.ping(b"are you there")  # answered by the server
            await asyncio.wait_for(await ws.ping(), 5)

    run(go())


def test_client_close_code_and_reason_reach_app_exactly_once(server):
    srv = server(APP)

    async def go():
        async with connect(ws_url(srv, "/echo")) as ws:
            await ws.send("x")
            await ws.recv()
            await ws.close(code=4100, reason="client bye")

    run(go())
    srv.wait_for_line(r"ws-disconnect /echo 4100 client bye 1$")
    # The count is the line's last field (the timestamp may hold " 2" too).
    assert not [line for line in srv.lines() if re.search(r"ws-disconnect /echo .* 2$", line)]


def test_server_close_code_and_reason_reach_client(server):
    srv = server(APP)

    async def go():
        async with connect(ws_url(srv, "/close")) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 4321
            assert info.value.rcvd.reason == "bye now"
        async with connect(ws_url(srv, "/echo")) as ws:
            await ws.send("close-me")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "asked")

    run(go())
    # The app hears the client's answer to its close: the same code, once.
    srv.wait_for_line(r"ws-disconnect /close 4321 bye now 1$")
    srv.wait_for_line(r"ws-disconnect /echo 4000 asked 1$")


def test_dropped_connection_is_1006(server):
    srv = server(APP)

    async def go():
        async with connect(ws_url(srv, "/echo")) as ws:
            await ws.send("x")
            await ws.recv()
            ws.transport.abort()

    run(go())
    srv.wait_for_line(r"ws-disconnect /echo 1006  1$")


def test_close_before_accept_is_403_and_denial_response(server):
    srv = server(APP)

    async def go():
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url(srv, "/deny")):
                pass
        assert info.value.response.status_code == 403
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url(srv, "/denial")):
                pass
        assert info.value.response.status_code == 418
        assert info.value.response.headers["x-why"] == "teapot"
        assert bytes(info.value.response.body) == b"no sockets here"

    run(go())


def test_invalid_subprotocol_raises_and_leaves_the_handshake_pending(server):
    srv = server(APP)

    async def go():
        async with connect(ws_url(srv, "/bad-subprotocol")) as ws:
            assert ws.subprotocol is None
            assert await ws.recv() == 'invalid subprotocol "bad\\nproto"'
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 4002

    run(go())


def test_max_size_closes_with_1009(server):
    srv = server(APP, "--ws-max-size", "1024")

    async def go():
        async with connect(ws_url(srv, "/echo")) as ws:
            await ws.send("a" * 1000)
            assert await ws.recv() == "a" * 1000
            with pytest.raises(ConnectionClosed) as info:
                await ws.send("b" * 2000)
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009

    run(go())
    srv.wait_for_line(r"ws-disconnect /echo 1009 message too big 1$")


def test_send_after_disconnect_raises_client_disconnected(server):
    """ASGI spec 2.4: send() on a closed connection raises an OSError subclass."""
    srv = server(APP)

    async def go():
        async with connect(ws_url(srv, "/send-after")) as ws:
            await ws.close()

    run(go())
    raised = "ClientDisconnected/oserror=True"
    srv.wait_for_line(rf"ws-send-after {raised} {raised}$")
    assert "Exception in ASGI application" not in srv.output()


def test_send_only_loop_learns_the_client_left(server):
    """A loop that never calls receive() (a broadcast) gets ClientDisconnected from its
    next send() once the client is gone, so it stops instead of sending into nothing."""
    srv = server(APP)

    async def go():
        async with connect(ws_url(srv, "/sender")) as ws:
            assert (await ws.recv()).startswith("tick ")
            await ws.recv()

    run(go())
    srv.wait_for_line(r"ws-sender stopped ClientDisconnected oserror=True$", timeout=10)
    assert "Exception in ASGI application" not in srv.output()


def test_send_after_the_apps_own_close_raises(server):
    srv = server(APP)

    async def go():
        async with connect(ws_url(srv, "/close-then-send")) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()

    run(go())
    srv.wait_for_line(r"ws-close-then-send ClientDisconnected/oserror=True$")


def test_app_exception_closes_with_1011_and_logs(server):
    srv = server(APP)

    async def go():
        async with connect(ws_url(srv, "/raise")) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 1011

    run(go())
    srv.wait_for_output(r"Exception in ASGI application for WebSocket /raise(.|\n)*ws-app-failed")


def test_no_ws_serves_upgrade_requests_as_http(server):
    srv = server(APP, "--no-ws")
    with srv.raw() as conn:
        conn.send(
            "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        resp = conn.response()
    assert resp.status == 200 and resp.body == b"plain http"


def test_bad_handshake_version_is_400(server):
    srv = server(APP)
    with srv.raw() as conn:
        conn.send(
            "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
        )
        resp = conn.response()
    assert resp.status == 400
    assert resp.header("sec-websocket-version") == "13"


def test_sigterm_closes_open_websocket_with_1001(server):
    srv = server(APP)

    async def go():
        async with connect(ws_url(srv, "/echo")) as ws:
            await ws.send("x")
            await ws.recv()
            srv.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 1001

    run(go())
    assert srv.stop(timeout=15) == 0


def test_autobahn_sections_1_to_10(server, tmp_path):
    """Every Autobahn case of sections 1-10: OK, NON-STRICT or INFORMATIONAL, none FAILED."""
    srv = server("asgi_ws_app:echo", "--no-access-log", "--lifespan", "off")
    # Installed with the test extra, next to this interpreter.
    kosoku = [str(Path(sys.executable).parent / "kosoku")]
    select = ["-x", "12.*", "-x", "13.*"]
    results, output = autobahn(kosoku, srv.port, tmp_path / "reports", select, timeout=50)
    assert len(results) >= 300, output
    bad = autobahn_failures(results, {"OK", "NON-STRICT", "INFORMATIONAL"})
    assert bad == {}, bad


def test_starlette_websocket_route(server):
    srv = server("starlette_ws_app:app")
    assert srv.get("/").text == "starlette says hi"

    async def go():
        async with connect(ws_url(srv, "/ws/shout"), subprotocols=["shout"]) as ws:
            assert ws.subprotocol == "shout"
            await ws.send("hello")
            assert json.loads(await ws.recv()) == {"upper": "HELLO", "path": "/ws/shout"}
            await ws.send("bye")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "bye")

    run(go())


def test_cancelled_receive_does_not_lose_the_next_message(server):
    srv = server(APP)

    async def go():
        async with connect(ws_url(srv, "/timeout")) as ws:
            assert await ws.recv() == "timed-out"
            await ws.send("later")
            assert await ws.recv() == "later"

    run(go())


def test_app_returning_after_a_burst_still_closes_with_1000(server):
    srv = server(APP)

    async def go():
        async with connect(ws_url(srv, "/burst")) as ws:
            await asyncio.sleep(0.3)  # let the server's outbound queue fill up
            got = [await ws.recv() for _ in range(64)]
            assert got == [f"m{i}" for i in range(64)]
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 1000

    run(go())


def test_websocket_keeps_its_connection_slot(server):
    """An upgraded connection keeps its slot under --max-connections: with one slot, an
    open WebSocket makes the next client wait until it closes."""
    srv = server(APP, "--max-connections", "1")
    with raw_ws(srv, "/echo") as ws, srv.raw() as other:
        ws.send(ws_frame(TEXT, b"hi"))
        assert read_ws_frame(ws) == (TEXT, b"hi")
        other.send(http_request("GET", "/plain"))
        other.sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            other.sock.recv(1)  # not served while the WebSocket holds the only slot
        ws.send(ws_frame(CLOSE, (1000).to_bytes(2, "big")))
        assert read_ws_frame(ws)[0] == CLOSE
        other.sock.settimeout(10.0)
        resp = other.final_response()
    assert (resp.status, resp.body) == (200, b"plain http")


def test_sigterm_waits_for_a_websocket_holding_the_last_slot(server):
    """The graceful drain counts the WebSocket (it holds its connection's slot): the
    worker sends 1001 and waits for the client's close instead of exiting under it."""
    srv = server(APP, "--max-connections", "1")
    with raw_ws(srv, "/echo") as ws:
        ws.send(ws_frame(TEXT, b"hi"))
        assert read_ws_frame(ws) == (TEXT, b"hi")
        srv.send_signal(signal.SIGTERM)
        opcode, payload = read_ws_frame(ws)
        assert (opcode, int.from_bytes(payload[:2], "big")) == (CLOSE, 1001)
        with pytest.raises(subprocess.TimeoutExpired):
            srv.proc.wait(1.0)  # still draining: the close handshake is not over
        ws.send(ws_frame(CLOSE, (1000).to_bytes(2, "big")))
        srv.wait_for_line(r"ws-disconnect /echo 1000  1$")
    assert srv.proc.wait(15) == 0  # stopping already: no second signal


def test_client_that_stops_reading_is_dropped_after_ws_send_timeout(server):
    """A client that never reads cannot hold the socket and the app's send(): once a
    write stalls for --ws-send-timeout the connection is closed, the app gets 1006."""
    srv = server(APP, "--ws-send-timeout", "1")
    with raw_ws(srv, "/flood", rcvbuf=4096) as ws:
        # Never read: the socket buffers fill up and the server's write stalls.
        srv.wait_for_line(r"ws-disconnect /flood 1006  1$", timeout=20)
        srv.wait_for_line(r"WebSocket /flood: the client stopped reading .*ws_send_timeout")
        srv.wait_for_line(r"ws-flood sends released")
        ws.read_to_eof(10)  # what was in flight, then the server's close of the socket


PING, PONG = 0x9, 0xA


def _answer_pings(ws, count: int) -> None:
    """Read ``count`` keepalive pings, answering each with its pong."""
    for _ in range(count):
        opcode, payload = read_ws_frame(ws)
        assert opcode == PING, (opcode, payload)
        assert len(payload) == 4
        ws.send(ws_frame(PONG, payload))


def test_keepalive_pings_keep_an_answering_client_and_drop_a_silent_one(server):
    """Pings go out every --ws-ping-interval; a client that answers stays through many
    of them, one that stops answering is closed after --ws-ping-timeout with 1006."""
    srv = server(APP, "--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.6")
    with raw_ws(srv, "/echo") as ws:
        _answer_pings(ws, 6)  # over twice the timeout: answered pings keep it open
        ws.send(ws_frame(TEXT, b"still here"))
        while (frame := read_ws_frame(ws))[0] == PING:
            ws.send(ws_frame(PONG, frame[1]))
        assert frame == (TEXT, b"still here")
        # Now stay silent: the next ping goes unanswered and the socket is closed.
        assert read_ws_frame(ws)[0] == PING
        ws.read_to_eof(10)
    srv.wait_for_line(r"ws-disconnect /echo 1006  1$")
    srv.wait_for_line(r"WebSocket /echo: no pong within 0\.6s of a keepalive ping")


def test_client_pings_are_answered_and_unsolicited_pongs_ignored(server):
    srv = server(APP, "--ws-ping-interval", "0")
    with raw_ws(srv, "/echo") as ws:
        ws.send(ws_frame(PONG, b"unasked"))
        ws.send(ws_frame(PING, b"are you there"))
        assert read_ws_frame(ws) == (PONG, b"are you there")
        ws.send(ws_frame(TEXT, b"hello"))
        assert read_ws_frame(ws) == (TEXT, b"hello")
        ws.send(ws_frame(CLOSE, (1000).to_bytes(2, "big")))
        assert read_ws_frame(ws)[0] == CLOSE
    srv.wait_for_line(r"ws-disconnect /echo 1000  1$")


def test_keepalive_with_the_websockets_client_over_idle_periods(server):
    """A real client answers the pings by itself: idle for several ping timeouts, the
    connection is still there and echoes."""
    srv = server(APP, "--ws-ping-interval", "0.1", "--ws-ping-timeout", "0.3")

    async def go():
        async with connect(ws_url(srv, "/echo"), ping_interval=None) as ws:
            await asyncio.sleep(1.5)  # the point of the test: idle through ~15 pings
            await ws.send("after idling")
            assert await ws.recv() == "after idling"

    run(go())
    assert "no pong within" not in srv.output()


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (ws_frame(TEXT, b"\xff\xfe not utf-8"), 1007),
        (ws_frame(0x0, b"nothing to continue"), 1002),
    ],
)
def test_broken_frames_are_answered_with_a_close_code(server, bad, code):
    """A broken frame or invalid UTF-8 fails the connection with 1002 / 1007 in a close
    frame (RFC 6455 §7.1.7); the application gets the same code."""
    srv = server(APP)
    with raw_ws(srv, "/echo") as ws:
        ws.send(bad)
        opcode, payload = read_ws_frame(ws)
        assert (opcode, int.from_bytes(payload[:2], "big")) == (CLOSE, code)
        ws.read_to_eof(10)
    srv.wait_for_line(rf"ws-disconnect /echo {code}  1$")
