"""A small WebSocket echo load generator (standard library only) for the bench.

It opens ``--connections`` WebSocket connections to an echo endpoint and keeps ``--window``
messages in flight on each: it writes a batch of ``window`` masked frames in one ``write``,
waits until as many data frames have come back, and repeats until ``--duration`` seconds
have passed. Batching keeps the client's own cost per message small (frames are built
once; only frame headers are parsed on the way back), so with the client pinned to its own
core the server is the bottleneck. Prints one JSON object:
``{"messages": N, "seconds": S, "msgs_per_s": R, "errors": E, "error": "..."}``.

``--check`` sends one message per connection instead and exits non-zero unless every echo
matches, which is how ``run.py`` tells whether a server speaks WebSocket at all.

``--deflate`` sends text messages of ``--size`` bytes of JSON-like text and offers
permessage-deflate (RFC 7692) as browsers do (``client_max_window_bits``). Where the
server accepts, every message goes out compressed (RSV1): compressed once, up front, as
a fresh deflate block, which a server that keeps its context reads like any other, so the
client's cost stays that of the plain run; the echoes are counted, not inflated (only
``--check`` inflates them, keeping the server's context). Where the server declines
(Granian has no permessage-deflate), the same text goes out uncompressed. The JSON
object then says ``"deflate": true`` or ``false``.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import struct
import sys
import time
import urllib.parse
import zlib
from collections.abc import Coroutine
from typing import Any

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING = 0x1, 0x2, 0x8, 0x9


RSV1 = 0x40  # permessage-deflate: this message is compressed
DEFLATE_OFFER = b"permessage-deflate; client_max_window_bits"


def client_frame(payload: bytes, opcode: int = OP_BINARY, rsv1: bool = False) -> bytes:
    """One final, masked client frame (RFC 6455 section 5.2) carrying ``payload``."""
    mask = os.urandom(4)
    size = len(payload)
    b0 = 0x80 | opcode | (RSV1 if rsv1 else 0)
    if size < 126:
        head = struct.pack("!BB", b0, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", b0, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, size)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def json_text(size: int) -> bytes:
    """``size`` bytes of JSON-like text (records with ids, names, tags, flags)."""
    out = bytearray(b"[")
    i = 0
    while len(out) < size:
        out += (
            b'{"id": %d, "user": "user%d", "tags": ["news", "sport", "tech"], '
            b'"score": %d.%d, "active": %s, "text": "message number %d"}, '
            % (i, i % 97, i * 7 % 100, i % 10, b"true" if i % 3 else b"false", i)
        )
        i += 1
    return bytes(out[: size - 1]) + b"]"


def deflate_payload(data: bytes) -> bytes:
    """``data`` as one permessage-deflate message from a fresh compressor (RFC 7692 7.2.1)."""
    c = zlib.compressobj(wbits=-15)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


async def handshake(host: str, port: int, path: str, deflate: bool = False):
    """Open a connection and upgrade it; returns ``(reader, writer, leftover bytes,
    permessage-deflate accepted)``."""
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16))
    writer.write(
        b"GET " + path.encode() + b" HTTP/1.1\r\n"
        b"Host: " + f"{host}:{port}".encode() + b"\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: "
        + key
        + b"\r\nSec-WebSocket-Version: 13\r\n"
        + (b"Sec-WebSocket-Extensions: " + DEFLATE_OFFER + b"\r\n" if deflate else b"")
        + b"\r\n"
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("connection closed during the handshake")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if b" 101 " not in lines[0] + b" ":
        raise ConnectionError(f"handshake refused: {lines[0].decode(errors='replace')}")
    expected = base64.b64encode(hashlib.sha1(key + GUID).digest())
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"sec-websocket-accept") != expected:
        raise ConnectionError("bad Sec-WebSocket-Accept")
    accepted = headers.get(b"sec-websocket-extensions", b"").startswith(b"permessage-deflate")
    return reader, writer, rest, accepted


class FrameReader:
    """Counts (and optionally collects) server frames from a stream, answering pings."""

    def __init__(self, reader, writer, leftover: bytes):
        self.reader = reader
        self.writer = writer
        self.buf = bytearray(leftover)
        self.inflater = None  # --check --deflate: the server's context, kept

    async def read_frames(self, count: int, keep: bool = False, raw: bool = False) -> list:
        """Wait until ``count`` data frames have arrived; return their payloads if ``keep``
        (with ``raw``, as ``(first byte, payload)`` pairs)."""
        got: list = []
        seen = 0
        buf = self.buf
        while seen < count:
            pos = 0
            end = len(buf)
            while end - pos >= 2:
                b0, b1 = buf[pos], buf[pos + 1]
                size = b1 & 0x7F
                hdr = 2
                if size == 126:
                    if end - pos < 4:
                        break
                    size = struct.unpack_from("!H", buf, pos + 2)[0]
                    hdr = 4
                elif size == 127:
                    if end - pos < 10:
                        break
                    size = struct.unpack_from("!Q", buf, pos + 2)[0]
                    hdr = 10
                if end - pos < hdr + size:
                    break
                opcode = b0 & 0x0F
                payload_at = pos + hdr
                pos = payload_at + size
                if opcode == OP_CLOSE:
                    raise ConnectionError("server closed the WebSocket")
                if opcode == OP_PING:
                    pong = client_frame(bytes(buf[payload_at:pos]), 0xA)
                    self.writer.write(pong)
                    continue
                if opcode in (OP_TEXT, OP_BINARY, 0x0) and b0 & 0x80:
                    seen += 1
                    if keep:
                        payload = bytes(buf[payload_at:pos])
                        got.append((b0, payload) if raw else payload)
            del buf[:pos]
            if seen >= count:
                break
            data = await self.reader.read(262144)
            if not data:
                raise ConnectionError("connection closed by the server")
            buf += data
        return got


def message_frame(args, deflated: bool) -> bytes:
    """The frame every message of the load is."""
    if not args.deflate:
        return client_frame(b"x" * args.size)
    text = json_text(args.size)
    if deflated:
        return client_frame(deflate_payload(text), OP_TEXT, rsv1=True)
    return client_frame(text, OP_TEXT)


async def connection(args, host, port, path, deadline, counts, index, negotiated):
    """Drive one connection until ``deadline``, adding its echoed messages to ``counts``."""
    reader, writer, rest, accepted = await handshake(host, port, path, args.deflate)
    negotiated[index] = accepted
    frames = FrameReader(reader, writer, rest)
    frame = message_frame(args, accepted)
    window = args.window
    batch = frame * window
    try:
        while time.perf_counter() < deadline:
            writer.write(batch)
            await frames.read_frames(window)
            counts[index] += window
    finally:
        writer.close()


async def run_load(args, host, port, path) -> dict:
    counts = [0] * args.connections
    negotiated = [False] * args.connections
    start = time.perf_counter()
    deadline = start + args.duration
    tasks = [
        connection(args, host, port, path, deadline, counts, i, negotiated)
        for i in range(args.connections)
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    seconds = time.perf_counter() - start
    errors = [r for r in results if isinstance(r, BaseException)]
    total = sum(counts)
    out = {
        "messages": total,
        "seconds": round(seconds, 3),
        "msgs_per_s": round(total / seconds, 1),
        "errors": len(errors),
    }
    if args.deflate:
        out["deflate"] = all(negotiated)
    if errors:
        out["error"] = repr(errors[0])
    return out


async def run_check(args, host, port, path) -> dict:
    for i in range(args.connections):
        reader, writer, rest, accepted = await handshake(host, port, path, args.deflate)
        frames = FrameReader(reader, writer, rest)
        if args.deflate:
            # Twice the same text: the server may answer the second with a back reference.
            payloads = [json_text(args.size)] * 2
            frame = message_frame(args, accepted)
            writer.write(frame + frame)
        else:
            payloads = [f"message {i}".encode(), os.urandom(args.size)]
            writer.write(client_frame(payloads[0], OP_TEXT) + client_frame(payloads[1]))
        got = await asyncio.wait_for(frames.read_frames(2, keep=True, raw=True), 5)
        writer.close()
        got = [decode(b0, payload, accepted, frames) for b0, payload in got]
        if got != payloads:
            return {"ok": False, "error": f"echo mismatch on connection {i}"}
    return {"ok": True}


def decode(b0: int, payload: bytes, deflated: bool, frames: FrameReader) -> bytes:
    """An echoed message's payload, inflated if the server compressed it (keeping the
    server's context across the connection's messages)."""
    if not b0 & RSV1:
        return payload
    if not deflated:
        raise ConnectionError("RSV1 set without permessage-deflate")
    if frames.inflater is None:
        frames.inflater = zlib.decompressobj(-15)
    return frames.inflater.decompress(payload + b"\x00\x00\xff\xff")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="ws://host:port/path")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--window", type=int, default=16, help="messages in flight per conn")
    parser.add_argument("--size", type=int, default=64, help="payload bytes per message")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds")
    parser.add_argument("--check", action="store_true", help="verify echoes, then exit")
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="JSON-like text messages, with permessage-deflate where the server accepts it",
    )
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.url)
    if url.scheme != "ws" or not url.hostname or not url.port:
        parser.error("the URL must look like ws://127.0.0.1:8000/ws")
    path = url.path or "/"
    if args.check:
        return report(run_check(args, url.hostname, url.port, path))
    return report(run_load(args, url.hostname, url.port, path))


def report(run: Coroutine[Any, Any, dict]) -> int:
    """Run a check or a load run, print its result as one JSON line (a connection that
    failed becomes ``"ok": false`` with one error), and give the exit status: 0 only for
    a run without errors. ``wsh2load.py`` reports the same way."""
    try:
        out = asyncio.run(run)
    except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
        out = {"ok": False, "error": repr(exc), "errors": 1, "messages": 0, "msgs_per_s": 0}
    print(json.dumps(out))
    return 0 if out.get("ok", True) and not out.get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
