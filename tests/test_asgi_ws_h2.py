"""WebSocket over HTTP/2 (RFC 8441): extended CONNECT streams become the same ASGI
``websocket`` scope as over HTTP/1.1, with ``http_version`` "2"; several sockets and
ordinary requests share one connection, each stream flow-controlled on its own."""

from __future__ import annotations

import ast
import os
import signal

import pytest
from hyperframe.frame import DataFrame, HeadersFrame, RstStreamFrame, SettingsFrame

from _h2 import H2Raw, h2_tls_context
from _support import ws_frame
from _ws_h2 import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    H2Client,
    close_payload,
    frame,
)

# Every test here runs once per ASGI mode (one thread, loop thread).
pytestmark = pytest.mark.usefixtures("asgi_mode")

APP = "asgi_ws_app:app"


def echo(c: H2Client, sid: int, text: str) -> str:
    c.send_text(sid, text)
    opcode, payload = c.recv(sid)
    assert opcode == TEXT, (opcode, payload)
    return payload.decode()


def test_extended_connect_is_advertised_for_asgi_only(server):
    srv = server(APP)
    with H2Client(srv.port) as c:
        assert c.connect_protocol
    off = server(APP, "--no-ws")
    with H2Client(off.port) as c:
        assert not c.connect_protocol
    wsgi = server("http_app:application", "--interface", "wsgi")
    with H2Client(wsgi.port) as c:
        assert not c.connect_protocol


def test_echo_subprotocol_scope_and_close_codes(server):
    srv = server(APP)
    with H2Client(srv.port) as c:
        sid, status, headers = c.open_ws("/echo", [("sec-websocket-protocol", "a, b")])
        assert status == 200
        assert headers["sec-websocket-protocol"] == "b"
        assert headers["x-extra"] == "1"
        assert "upgrade" not in headers and "sec-websocket-accept" not in headers
        assert echo(c, sid, "version") == "2 ws"
        keys, subprotocols = ast.literal_eval(echo(c, sid, "scope"))
        assert "method" not in keys and subprotocols == ["a", "b"]
        c.send(sid, BINARY, b"\x00\x01bytes")
        assert c.recv(sid) == (BINARY, b"\x00\x01bytes")
        c.send(sid, PING, b"p")
        assert c.recv(sid) == (PONG, b"p")
        c.send_text(sid, "close-me")
        assert c.recv(sid) == (CLOSE, close_payload(4000, "asked"))
        c.send(sid, CLOSE, close_payload(4000, "asked"))
        c.wait_ended(sid)
    srv.wait_for_line(r"ws-disconnect /echo 4000 asked 1$")


def test_client_close_reaches_the_app(server):
    srv = server(APP)
    with H2Client(srv.port) as c:
        sid, status, _ = c.open_ws("/echo")
        assert status == 200
        c.send(sid, CLOSE, close_payload(4321, "bye"))
        assert c.recv(sid) == (CLOSE, close_payload(4321, "bye"))
    srv.wait_for_line(r"ws-disconnect /echo 4321 bye 1$")


def test_denial_before_accept(server):
    srv = server(APP)
    with H2Client(srv.port) as c:
        sid, status, _ = c.open_ws("/deny")
        assert status == 403
        sid, status, headers = c.open_ws("/denial")
        assert status == 418 and headers["x-why"] == "teapot"
        c.wait_ended(sid)
        assert bytes(c.data[sid]) == b"no sockets here"


def test_missing_version_is_400(server):
    srv = server(APP)
    with H2Client(srv.port) as c:
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(
            sid,
            [
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "http"),
                (":path", "/echo"),
                (":authority", "localhost"),
            ],
        )
        c.flush()
        status, headers = c.wait_response(sid)
        assert status == 400 and headers["sec-websocket-version"] == "13"


def test_many_sockets_and_requests_share_a_connection_and_a_slow_one_stalls_nothing(server):
    """One socket whose client stops reading (its stream window stays shut) fills up;
    the others, and plain requests, on the same connection go on."""
    srv = server(APP, "--ws-send-timeout", "2")
    with H2Client(srv.port) as c:
        slow, status, _ = c.open_ws("/flood", read=False)
        assert status == 200
        socks = [c.open_ws("/echo")[0] for _ in range(5)]
        for round_ in range(20):
            for i, sid in enumerate(socks):
                assert echo(c, sid, f"{round_}-{i}") == f"{round_}-{i}"
            status, body = c.get("/plain")
            assert (status, body) == (200, b"plain http")
        # The flood is stuck behind its shut window and is dropped after the timeout.
        srv.wait_for_line(r"ws-disconnect /flood 1006  1$", timeout=20)
        assert echo(c, socks[0], "after") == "after"


def test_fragments_interleaved_pings_and_a_large_message(server):
    srv = server(APP)
    with H2Client(srv.port) as c:
        sid, _, _ = c.open_ws("/echo")
        c.send_raw(sid, frame(TEXT, b"hel", fin=False))
        c.send_raw(sid, frame(PING, b"mid"))
        c.send_raw(sid, frame(CONT, "lo wörld".encode()[:4], fin=False))
        c.send_raw(sid, frame(CONT, "lo wörld".encode()[4:]))
        assert c.recv(sid) == (PONG, b"mid")
        assert c.recv(sid) == (TEXT, "hello wörld".encode())
        big = os.urandom(1 << 20)
        parts = [big[i : i + 50_000] for i in range(0, len(big), 50_000)]
        c.send_raw(sid, frame(BINARY, parts[0], fin=False))
        for i, part in enumerate(parts[1:], 2):
            c.send_raw(sid, frame(CONT, part, fin=i == len(parts)))
        assert c.recv(sid) == (BINARY, big)


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(TEXT, b"\xff\xfe not utf-8"), 1007),
        (frame(TEXT, b"unmasked", masked=False), 1002),
        (frame(CONT, b"nothing to continue"), 1002),
    ],
)
def test_protocol_errors_close_the_socket_with_the_rfc_code(server, bad, code):
    srv = server(APP)
    with H2Client(srv.port) as c:
        sid, _, _ = c.open_ws("/echo")
        c.send_raw(sid, bad)
        opcode, payload = c.recv(sid)
        assert opcode == CLOSE and int.from_bytes(payload[:2], "big") == code, payload
        # The connection itself goes on.
        assert c.get("/plain") == (200, b"plain http")


def test_max_size_closes_with_1009(server):
    srv = server(APP, "--ws-max-size", "1000")
    with H2Client(srv.port) as c:
        sid, _, _ = c.open_ws("/echo")
        c.send(sid, BINARY, b"x" * 2000)
        opcode, payload = c.recv(sid)
        assert opcode == CLOSE and payload[:2] == (1009).to_bytes(2, "big")
    srv.wait_for_line(r"ws-disconnect /echo 1009 message too big 1$")


def test_sigterm_closes_an_h2_websocket_with_1001(server):
    """The stop sends GOAWAY, and the open WebSocket stream still gets its 1001 close
    and its close handshake. (Raw frames: the ``h2`` library stops reading after a
    GOAWAY, which the stream outlives.)"""
    srv = server(APP)
    with H2Raw(srv.port) as conn:
        assert conn.server_settings.get(SettingsFrame.ENABLE_CONNECT_PROTOCOL) == 1
        sid = conn.new_stream()
        headers = conn.request_headers("/echo", "CONNECT", [("sec-websocket-version", "13")])
        conn.send(
            conn.headers_frame(sid, [headers[0], (":protocol", "websocket"), *headers[1:]], False)
        )
        assert conn.frames_until(HeadersFrame)[-1].decoded[0] == (":status", "200")
        conn.send(DataFrame(sid, data=ws_frame(TEXT, b"hi")))

        def stream_data(want: int) -> bytes:
            data = b""
            while len(data) < want:
                f = conn.read_frame()
                if isinstance(f, DataFrame) and f.stream_id == sid:
                    data += f.data
            return data

        assert stream_data(4) == bytes([0x81, 2]) + b"hi"  # the echo: the socket is open
        srv.send_signal(signal.SIGTERM)
        closing = close_payload(1001, "server shutting down")
        assert stream_data(2 + len(closing)) == bytes([0x88, len(closing)]) + closing
        conn.send(DataFrame(sid, data=ws_frame(CLOSE, close_payload(1001))))
        f = conn.read_frame()
        while not (f.stream_id == sid and "END_STREAM" in f.flags):
            f = conn.read_frame()
    srv.wait_for_line(r"ws-disconnect /echo 1001 ")
    assert srv.stop() == 0


def test_over_tls_with_alpn(server, certs):
    srv = server(APP, *certs.server_args())
    ctx = h2_tls_context(certs.ca, ["h2"])
    with H2Client(srv.port, tls=ctx) as c:
        assert c.sock.selected_alpn_protocol() == "h2"
        sid, status, _ = c.open_ws("/echo")
        assert status == 200
        assert echo(c, sid, "version") == "2 wss"


def test_starlette_websocket_route_over_h2(server):
    srv = server("starlette_ws_app:app")
    with H2Client(srv.port) as c:
        sid, status, headers = c.open_ws("/ws/shout", [("sec-websocket-protocol", "shout")])
        assert status == 200 and headers["sec-websocket-protocol"] == "shout"
        assert ast.literal_eval(echo(c, sid, "hey").replace("true", "True")) == {
            "upper": "HEY",
            "path": "/ws/shout",
        }
        c.send_text(sid, "bye")
        assert c.recv(sid) == (CLOSE, close_payload(4001, "bye"))


def test_get_with_upgrade_over_h2_is_never_an_upgrade(server):
    """Connection-specific headers make an HTTP/2 request malformed (RFC 9113 §8.2.2):
    the stream is reset, nothing reaches the application."""
    srv = server(APP)
    with H2Raw(srv.port) as conn:
        sid = conn.request(
            "/echo",
            extra=[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
            ],
        )
        f = conn.frames_until(RstStreamFrame)[-1]
        assert f.stream_id == sid
    assert "ws-disconnect" not in srv.output()
