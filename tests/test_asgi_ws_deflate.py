"""permessage-deflate (RFC 7692) on ASGI WebSockets: negotiation from raw handshakes,
compressed echo with the ``websockets`` client (compression on and off, window bits, no
context takeover, fragments, large messages), ``--ws-max-size`` on the inflated size
(deflate bombs end in 1009), keepalive pings, subprotocols and drain on stop, over
HTTP/1.1, TLS and HTTP/2 (RFC 8441)."""

from __future__ import annotations

import asyncio
import os
import signal
import zlib

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from _h2 import h2_tls_context
from _support import CLOSE, TEXT, http_request, rss_kib, wait_until
from _ws_h2 import BINARY, PING, H2Client, close_payload

# Every test here runs once per ASGI mode (one thread, loop thread).
pytestmark = pytest.mark.usefixtures("asgi_mode")

APP = "asgi_ws_app:app"
RSV1 = 0x40
#: What the server sends uncompressed (ws_yawc.rs COMPRESS_THRESHOLD).
THRESHOLD = 128
#: The answer to a plain offer: the server always compresses without context takeover.
ACCEPTED = "permessage-deflate; server_no_context_takeover"
TEXTY = (
    b'{"id": 12345, "user": "ada", "tags": ["alpha", "beta", "gamma"], '
    b'"text": "the quick brown fox jumps over the lazy dog", "ok": true}\n'
)


def run(coro, timeout: float = 30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_url(srv, path: str) -> str:
    return f"ws://127.0.0.1:{srv.port}{path}"


def deflate(data: bytes, wbits: int = 15) -> bytes:
    """One message's payload as RFC 7692 §7.2.1 sends it (no context kept)."""
    c = zlib.compressobj(wbits=-wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(payload: bytes, d=None) -> bytes:
    d = d or zlib.decompressobj(-15)
    return d.decompress(payload + b"\x00\x00\xff\xff")


def client_frame(first: int, payload: bytes) -> bytes:
    """One masked client frame of any size; ``first`` is the whole first byte."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        size = bytes([0x80 | n])
    elif n < 1 << 16:
        size = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        size = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    body = int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return bytes([first]) + size + mask + body.to_bytes(n, "big")


def read_frame(conn) -> tuple[int, bytes]:
    """One server frame: (first byte, payload)."""
    b0, b1 = conn.read_exact(2)
    n = b1 & 0x7F
    if n >= 126:
        n = int.from_bytes(conn.read_exact(2 if n == 126 else 8), "big")
    return b0, conn.read_exact(n)


def handshake(srv, offers: list[str], path: str = "/echo", rcvbuf: int | None = None):
    """Open a WebSocket on a raw socket offering ``offers`` (one header line each):
    (connection, the response head)."""
    conn = srv.raw(rcvbuf=rcvbuf)
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        *(("Sec-WebSocket-Extensions", o) for o in offers),
    ]
    conn.send(http_request("GET", path, headers))
    head = conn.read_head()
    assert head.status == 101, head.head
    return conn, head


NEGOTIATION = [
    # (offers, --ws-deflate-max-window-bits, expected Sec-WebSocket-Extensions or None)
    (["permessage-deflate"], 15, "permessage-deflate; server_no_context_takeover"),
    (
        ["permessage-deflate; client_max_window_bits"],
        15,
        "permessage-deflate; server_no_context_takeover",
    ),
    (
        ["permessage-deflate; client_max_window_bits"],
        10,
        "permessage-deflate; client_max_window_bits=10; server_no_context_takeover",
    ),
    (
        ["permessage-deflate; server_max_window_bits=9; client_max_window_bits=12"],
        15,
        "permessage-deflate; server_max_window_bits=9; client_max_window_bits=12; "
        "server_no_context_takeover",
    ),
    (
        ["permessage-deflate; server_max_window_bits=14"],
        11,
        "permessage-deflate; server_max_window_bits=11; server_no_context_takeover",
    ),
    (
        ["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
        15,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    ),
    # Offers we cannot honour: the socket opens without the extension.
    (["permessage-deflate; server_max_window_bits=8"], 15, None),
    (["permessage-deflate; server_max_window_bits=16"], 15, None),
    (["permessage-deflate; client_max_window_bits=7"], 15, None),
    (["permessage-deflate; mystery_param"], 15, None),
    (["permessage-deflate; server_no_context_takeover; server_no_context_takeover"], 15, None),
    (["x-webkit-deflate-frame"], 15, None),
    ([], 15, None),
    # The first offer the server can honour wins, across lines too.
    (
        [
            "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=8, "
            "permessage-deflate; server_max_window_bits=10, permessage-deflate"
        ],
        15,
        "permessage-deflate; server_max_window_bits=10; server_no_context_takeover",
    ),
    (
        ["permessage-deflate; bogus", "permessage-deflate; client_no_context_takeover"],
        15,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    ),
]


def test_negotiation_matrix_from_raw_handshakes(server):
    servers = {
        bits: server(APP, "--ws-deflate-max-window-bits", str(bits)) for bits in (10, 11, 15)
    }
    for offers, bits, expected in NEGOTIATION:
        conn, head = handshake(servers[bits], offers)
        with conn:
            assert head.header("sec-websocket-extensions") == expected, (offers, bits)
            # The socket works either way; a compressed frame is read only with the
            # extension (without, RSV1 is a protocol error).
            payload = TEXTY * 4
            if expected:
                conn.send(client_frame(0x80 | RSV1 | TEXT, deflate(payload)))
                first, body = read_frame(conn)
                assert first == 0x80 | RSV1 | TEXT
                assert inflate(body) == payload
            else:
                conn.send(client_frame(0x80 | TEXT, payload))
                assert read_frame(conn) == (0x80 | TEXT, payload)


def test_off_never_negotiates_and_rsv1_is_then_a_protocol_error(server):
    srv = server(APP, "--no-ws-per-message-deflate")
    conn, head = handshake(srv, ["permessage-deflate; client_max_window_bits"])
    with conn:
        assert head.header("sec-websocket-extensions") is None
        conn.send(client_frame(0x80 | RSV1 | TEXT, deflate(TEXTY)))
        first, body = read_frame(conn)
        assert first & 0x0F == CLOSE and body[:2] == (1002).to_bytes(2, "big")
    srv.wait_for_line(r"ws-disconnect /echo 1002 ")


def test_small_messages_go_out_uncompressed(server):
    srv = server(APP)
    conn, head = handshake(srv, ["permessage-deflate"])
    with conn:
        assert head.header("sec-websocket-extensions") == ACCEPTED
        small = TEXTY[: THRESHOLD - 1]
        conn.send(client_frame(0x80 | RSV1 | TEXT, deflate(small)))
        assert read_frame(conn) == (0x80 | TEXT, small)
        # The client may send uncompressed messages too.
        conn.send(client_frame(0x80 | BINARY, TEXTY))
        first, body = read_frame(conn)
        assert first == 0x80 | RSV1 | BINARY
        # The server keeps no context between messages (server_no_context_takeover):
        # each message inflates on its own, and the same text compresses the same.
        assert inflate(body) == TEXTY
        conn.send(client_frame(0x80 | BINARY, TEXTY))
        assert read_frame(conn) == (first, body)


def test_websockets_client_with_and_without_compression(server):
    srv = server(APP)
    big = TEXTY * 40_000  # ~5 MiB

    async def go(compression):
        async with connect(ws_url(srv, "/echo"), compression=compression, max_size=None) as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions")
            for msg in ["héllo", TEXTY.decode() * 3, b"\x00\xff" * 500, big]:
                await ws.send(msg)
                assert await ws.recv() == msg
            # A fragmented message, compressed as one (RFC 7692 §6.1).
            await ws.send([TEXTY.decode(), "two ", "three"])
            assert await ws.recv() == TEXTY.decode() + "two three"
            return ext

    assert run(go("deflate")) == ACCEPTED
    assert run(go(None)) is None


@pytest.mark.parametrize(
    "factory",
    [
        ClientPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=9),
        ClientPerMessageDeflateFactory(server_max_window_bits=12, client_max_window_bits=10),
        ClientPerMessageDeflateFactory(
            server_no_context_takeover=True, client_no_context_takeover=True
        ),
    ],
    ids=["window-9", "window-12-10", "no-context-takeover"],
)
def test_window_bits_and_no_context_takeover_with_websockets(server, factory):
    srv = server(APP)

    async def go():
        async with connect(
            ws_url(srv, "/echo"), extensions=[factory], compression=None, max_size=None
        ) as ws:
            ext = ws.response.headers["Sec-WebSocket-Extensions"]
            # Varied data over many messages: a window or context mismatch breaks it.
            rnd = __import__("random").Random(7)
            words = [bytes(rnd.choices(b"abcdefghij", k=rnd.randint(2, 9))) for _ in range(300)]
            for i in range(60):
                msg = b" ".join(rnd.choices(words, k=200 + 50 * i)).decode()
                await ws.send(msg)
                assert await ws.recv() == msg
            return ext

    ext = run(go(), 60)
    if factory.server_no_context_takeover:
        assert "server_no_context_takeover" in ext and "client_no_context_takeover" in ext
    else:
        assert f"server_max_window_bits={factory.server_max_window_bits}" in ext
        assert f"client_max_window_bits={factory.client_max_window_bits}" in ext


def test_max_size_applies_to_the_inflated_message(server):
    srv = server(APP, "--ws-max-size", "1000")

    async def go():
        async with connect(ws_url(srv, "/echo")) as ws:
            at_limit = "a" * 1000  # compresses to a few bytes
            await ws.send(at_limit)
            assert await ws.recv() == at_limit
            await ws.send("a" * 1001)
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value.rcvd.code

    assert run(go()) == 1009
    srv.wait_for_line(r"ws-disconnect /echo 1009 message too big 1$")


@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "fragments"])
def test_a_deflate_bomb_is_stopped_at_the_limit(server, fragmented):
    """256 MiB of zeros in a ~256 KiB message: closed with 1009 after inflating at most
    --ws-max-size (1 MiB), and the worker's memory barely moves."""
    srv = server(APP, "--ws-max-size", str(1 << 20))
    (worker,) = srv.worker_pids()
    bomb = deflate(b"\0" * (256 << 20))
    assert len(bomb) < 300_000
    conn, head = handshake(srv, ["permessage-deflate"])
    before = rss_kib(worker)
    with conn:
        assert head.header("sec-websocket-extensions") == ACCEPTED
        if fragmented:
            step = len(bomb) // 4 + 1
            parts = [bomb[i : i + step] for i in range(0, len(bomb), step)]
            frames = [client_frame(RSV1 | BINARY, parts[0])]
            frames += [client_frame(0x00, p) for p in parts[1:-1]]
            frames.append(client_frame(0x80, parts[-1]))
        else:
            frames = [client_frame(0x80 | RSV1 | BINARY, bomb)]
        for f in frames:
            try:
                conn.send(f)
            except OSError:
                break  # closed under us: what is left was never needed
        first, body = read_frame(conn)
        assert first & 0x0F == CLOSE and body[:2] == (1009).to_bytes(2, "big"), (first, body)
    srv.wait_for_line(r"ws-disconnect /echo 1009 ")
    assert rss_kib(worker) - before < 64 * 1024


def test_large_messages_and_fragments_on_a_raw_socket(server):
    srv = server(APP)
    conn, _ = handshake(srv, ["permessage-deflate; client_no_context_takeover"])
    d = zlib.decompressobj(-15)  # one inflater for the socket, as a client keeps it
    with conn:
        big = TEXTY * 30_000  # ~3.6 MiB, over 64 KiB compressed frames
        conn.send(client_frame(0x80 | RSV1 | TEXT, deflate(big)))
        first, body = read_frame(conn)
        assert first == 0x80 | RSV1 | TEXT and inflate(body, d) == big
        # One compressed message in three frames: RSV1 on the first only.
        payload = deflate(TEXTY * 10)
        a, b = len(payload) // 3, 2 * len(payload) // 3
        conn.send(client_frame(RSV1 | TEXT, payload[:a]))
        conn.send(client_frame(0x00, payload[a:b]))
        conn.send(client_frame(0x80, payload[b:]))
        first, body = read_frame(conn)
        assert first == 0x80 | RSV1 | TEXT and inflate(body, d) == TEXTY * 10
        # A control frame between fragments, answered at once.
        conn.send(client_frame(RSV1 | TEXT, payload[:a]))
        conn.send(client_frame(0x80 | PING, b"mid"))
        assert read_frame(conn) == (0x80 | 0x0A, b"mid")
        conn.send(client_frame(0x80, payload[a:]))
        first, body = read_frame(conn)
        assert inflate(body, d) == TEXTY * 10
        # Invalid UTF-8 inside a compressed text message: 1007.
        conn.send(client_frame(0x80 | RSV1 | TEXT, deflate(b"ok \xff\xfe" * 100)))
        first, body = read_frame(conn)
        assert first & 0x0F == CLOSE and body[:2] == (1007).to_bytes(2, "big")
    srv.wait_for_line(r"ws-disconnect /echo 1007 ")


def test_client_that_stops_reading_is_dropped_after_ws_send_timeout(server):
    """A compressed socket's writes are bounded by --ws-send-timeout too."""
    srv = server(APP, "--ws-send-timeout", "1")
    conn, head = handshake(srv, ["permessage-deflate"], "/flood-random", rcvbuf=4096)
    with conn:
        assert head.header("sec-websocket-extensions") == ACCEPTED
        # Never read: the socket buffers fill up and the server's write stalls.
        srv.wait_for_line(r"ws-disconnect /flood-random 1006  1$", timeout=20)
        srv.wait_for_line(r"WebSocket /flood-random: the client stopped reading")
        srv.wait_for_line(r"ws-flood sends released")


def test_keepalive_pings_on_a_compressed_socket(server):
    srv = server(APP, "--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.5")

    async def go():
        async with connect(ws_url(srv, "/echo"), ping_interval=None) as ws:
            assert ws.response.headers["Sec-WebSocket-Extensions"] == ACCEPTED
            for _ in range(5):  # the client answers the server's pings by itself
                await asyncio.sleep(0.3)
                await ws.send(TEXTY.decode())
                assert await ws.recv() == TEXTY.decode()

    run(go())
    # A raw client that never answers is closed after the ping timeout.
    conn, head = handshake(srv, ["permessage-deflate"])
    with conn:
        first, payload = read_frame(conn)
        assert first == 0x80 | PING and len(payload) == 4
    srv.wait_for_line(r"ws-disconnect /echo 1006 ", timeout=10)


def test_subprotocol_with_deflate_and_drain_on_stop(server):
    srv = server(APP)

    async def go():
        async with connect(ws_url(srv, "/echo"), subprotocols=["one", "two"]) as ws:
            assert ws.subprotocol == "two"
            assert ws.response.headers["Sec-WebSocket-Extensions"] == ACCEPTED
            await ws.send(TEXTY.decode())
            assert await ws.recv() == TEXTY.decode()
            srv.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value.rcvd.code

    assert run(go()) == 1001
    assert srv.stop() == 0


def test_over_tls(server, certs):
    srv = server(APP, *certs.server_args())

    async def go():
        ctx = h2_tls_context(certs.ca, ["http/1.1"])
        url = f"wss://localhost:{srv.port}/echo"
        async with connect(url, ssl=ctx) as ws:
            assert ws.response.headers["Sec-WebSocket-Extensions"] == ACCEPTED
            await ws.send("version")
            assert await ws.recv() == "1.1 wss"
            await ws.send(TEXTY.decode() * 100)
            assert await ws.recv() == TEXTY.decode() * 100

    run(go())


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "h2-tls"])
def test_over_http2(server, certs, tls):
    srv = server(APP, *(certs.server_args() if tls else ()))
    ctx = h2_tls_context(certs.ca, ["h2"]) if tls else None
    with H2Client(srv.port, tls=ctx) as c:
        offer = [("sec-websocket-extensions", "permessage-deflate; server_max_window_bits=10")]
        sid, status, headers = c.open_ws("/echo", offer)
        assert status == 200
        assert (
            headers["sec-websocket-extensions"]
            == "permessage-deflate; server_max_window_bits=10; server_no_context_takeover"
        )
        plain, _, plain_headers = c.open_ws("/echo")
        assert "sec-websocket-extensions" not in plain_headers
        d = zlib.decompressobj(-10)
        for i in range(3):
            msg = TEXTY * (5 + i)
            c.send_raw(sid, client_frame(0x80 | RSV1 | TEXT, deflate(msg)))
            first, body = recv_frame(c, sid)
            assert first == 0x80 | RSV1 | TEXT
            assert inflate(body, d) == msg
            c.send_raw(plain, client_frame(0x80 | TEXT, msg))
            assert recv_frame(c, plain) == (0x80 | TEXT, msg)
        c.send_raw(sid, client_frame(0x80 | CLOSE, close_payload(1000)))
        first, body = recv_frame(c, sid)
        assert first & 0x0F == CLOSE
    srv.wait_for_line(r"ws-disconnect /echo 1000 ")


def recv_frame(c: H2Client, sid: int) -> tuple[int, bytes]:
    """The next server frame on an HTTP/2 stream: (first byte, payload)."""
    while True:
        buf = c.data.setdefault(sid, bytearray())
        if len(buf) >= 2:
            n, at = buf[1] & 0x7F, 2
            if n >= 126:
                at = 4 if n == 126 else 10
                n = int.from_bytes(buf[2:at], "big") if len(buf) >= at else -1
            if n >= 0 and len(buf) >= at + n:
                first, payload = buf[0], bytes(buf[at : at + n])
                del buf[: at + n]
                return first, payload
        c._pump()


def test_idle_deflate_sockets_hold_no_compressor(server):
    """A socket that sent and received a compressed message and went idle keeps its
    inflate state (the client keeps its context) but not a compressor: 200 of them cost
    far less than 200 x the ~370 KiB a socket holding both takes."""
    srv = server(APP, "--ws-ping-interval", "0")
    (worker,) = srv.worker_pids()
    conns = []
    try:
        conns.append(handshake(srv, ["permessage-deflate"])[0])
        before = rss_kib(worker)
        for _ in range(200):
            conns.append(handshake(srv, ["permessage-deflate"])[0])
        message = TEXTY * 8
        for conn in conns:
            conn.send(client_frame(0x80 | RSV1 | TEXT, deflate(message)))
            first, body = read_frame(conn)
            assert first == 0x80 | RSV1 | TEXT and inflate(body) == message
        grown = wait_until(lambda: rss_kib(worker) - before, timeout=5)
        assert grown < 200 * 160, f"{grown / 200:.0f} KiB per socket"
    finally:
        for conn in conns:
            conn.close()
