"""A WebSocket-over-HTTP/2 (RFC 8441) echo load generator for the bench, on the ``h2`` library.

It opens ``--connections`` HTTP/2 connections (h2c with prior knowledge for a ``ws://``
URL, TLS with ALPN ``h2`` for ``wss://``, certificates not verified) and on each
``--streams`` WebSockets by extended CONNECT (``:protocol websocket``), once the server
has advertised ``SETTINGS_ENABLE_CONNECT_PROTOCOL``. Each WebSocket keeps ``--window``
messages in flight, as ``wsload.py`` does per connection: it writes a batch of ``window``
masked frames (built once) as DATA on its stream, within the flow-control windows the
server grants, waits until as many echoes have come back, and repeats until
``--duration`` seconds have passed. Messages are ``--size`` bytes of JSON-like text
(``wsload.json_text``).

Every echo is checked: its payload must equal the message sent (inflated first when the
server compressed it, keeping the server's context across the stream's messages), so a
server that answers wrongly or not at all cannot look fast. A mismatch counts as an error.

``--deflate`` offers permessage-deflate (RFC 7692) in ``sec-websocket-extensions``, as
``wsload.py --deflate`` does; where the server accepts, every message goes out as one
fresh deflate block (RSV1), compressed once up front. The JSON object then says
``"deflate": true`` (every stream accepted) or ``false``.

Prints one JSON object in ``wsload.py``'s format plus the latency percentiles:
``{"messages": N, "seconds": S, "msgs_per_s": R, "errors": E, "p50_ms": ..., "p99_ms":
..., "error": "..."}``, where a message's latency runs from the write of its batch to its
echo, and ``errors`` counts the WebSockets that failed (refused, reset, closed, the
connection lost) plus the echoes that did not match.

``h2`` is pure Python: one process of it saturates its core long before a Rust server
does, so msgs/s measures the generator. Compare servers by msgs per server CPU-second
(``run.py``'s req/CPU-s column), as for the HTTP/3 row.

``--check`` opens two WebSockets per connection instead, sends a text and a binary
message on each (with ``--deflate``, the same text twice), and exits non-zero unless every
echo matches, which is how ``run.py`` tells whether a server speaks RFC 8441 at all.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import struct
import sys
import time
import urllib.parse
import zlib

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

from wsload import (
    DEFLATE_OFFER,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    RSV1,
    client_frame,
    deflate_payload,
    json_text,
    report,
)

OP_PONG = 0xA
# h2 formats every frame it receives for a trace log, even with logging off
# (``H2Connection._receive_frame`` calls ``repr(frame)``), and a DATA frame's repr
# hex-dumps its payload: about 15 % of this client's CPU at 1 KiB a message. A short repr
# keeps the client's cost per message, and so the load it can offer, where it belongs.
hyperframe.frame.DataFrame.__repr__ = lambda self: f"DataFrame(stream_id={self.stream_id})"

# Our receive windows: large, so the server is never held back by a WINDOW_UPDATE that the
# busy client has not sent yet.
RECV_WINDOW = 1 << 20


class Stream:
    """One WebSocket on a stream: what it sends, what it expects back, what came back."""

    def __init__(self, sid: int, payloads: list[bytes]):
        self.sid = sid
        self.payloads = payloads  # the messages, in order; the load cycles the first
        self.frames = b""  # the batch: its frames, built once the extension is known
        self.deflate = False
        self.inflater = None
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.expect = 0  # index into payloads of the next echo
        self.outstanding = 0
        self.sent_at = 0.0
        self.echoes = 0
        self.mismatches = 0
        self.opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()


class Connection(asyncio.Protocol):
    """One HTTP/2 connection carrying ``streams`` WebSockets."""

    def __init__(self, args, authority: str, scheme: str, deadline: float, latencies: list):
        self.args = args
        self.authority = authority
        self.scheme = scheme
        self.deadline = deadline
        self.latencies = latencies
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        self.transport = None
        self.streams: dict[int, Stream] = {}
        self.settings: asyncio.Future = asyncio.get_running_loop().create_future()

    # --- asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: RECV_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(RECV_WINDOW * 16)
        self.flush()

    def connection_lost(self, exc) -> None:
        self.fail(exc or ConnectionError("the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.fail(exc)
            self.transport.close()
            return
        consumed: dict[int, int] = {}  # credit to give back, per stream, once per read
        for ev in events:
            if isinstance(ev, h2.events.DataReceived):
                sid = ev.stream_id
                consumed[sid] = consumed.get(sid, 0) + ev.flow_controlled_length
                st = self.streams.get(sid)
                if st is not None:
                    st.inbuf += ev.data
                    self.on_data(st)
            elif isinstance(ev, h2.events.WindowUpdated):
                if ev.stream_id:
                    st = self.streams.get(ev.stream_id)
                    if st is not None:
                        self.pump(st)
                else:
                    for st in self.streams.values():
                        self.pump(st)
            elif isinstance(ev, h2.events.ResponseReceived):
                self.on_response(ev.stream_id, ev.headers)
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                if not self.settings.done():
                    self.settings.set_result(None)
            elif isinstance(ev, (h2.events.StreamReset, h2.events.StreamEnded)):
                what = "reset" if isinstance(ev, h2.events.StreamReset) else "ended"
                self.fail_stream(ev.stream_id, ConnectionError(f"the server {what} the stream"))
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.fail(ConnectionError(f"GOAWAY {ev.error_code!r}"))
        for sid, size in consumed.items():
            try:
                self.h2.acknowledge_received_data(size, sid)
            except h2.exceptions.NoSuchStreamError:
                pass  # a stream that ended: nothing to give back to it
        self.flush()

    # --- helpers

    def flush(self) -> None:
        out = self.h2.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def fail(self, exc: BaseException) -> None:
        if not self.settings.done():
            self.settings.set_exception(exc)
        for sid in list(self.streams):
            self.fail_stream(sid, exc)

    def fail_stream(self, sid: int, exc: BaseException) -> None:
        st = self.streams.get(sid)
        if st is None:
            return
        for fut in (st.opened, st.done):
            if not fut.done():
                fut.set_exception(exc)

    def open(self, payloads: list[bytes]) -> Stream:
        """Send an extended CONNECT; the stream's ``opened`` future resolves on a 200."""
        sid = self.h2.get_next_available_stream_id()
        st = Stream(sid, payloads)
        self.streams[sid] = st
        headers = [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", self.scheme.encode()),
            (b":path", self.args.path.encode()),
            (b":authority", self.authority.encode()),
            (b"sec-websocket-version", b"13"),
        ]
        if self.args.deflate:
            headers.append((b"sec-websocket-extensions", DEFLATE_OFFER))
        self.h2.send_headers(sid, headers)
        return st

    def on_response(self, sid: int, headers) -> None:
        st = self.streams.get(sid)
        if st is None or st.opened.done():
            return
        head = {k.lower(): v for k, v in headers}
        status = head.get(b":status", b"?")
        if status != b"200":
            st.opened.set_exception(ConnectionError(f"extended CONNECT answered {status!r}"))
            return
        ext = head.get(b"sec-websocket-extensions", b"")
        st.deflate = ext.startswith(b"permessage-deflate")
        if st.deflate and not self.args.deflate:
            st.opened.set_exception(ConnectionError("permessage-deflate accepted unoffered"))
            return
        st.opened.set_result(None)

    def send(self, st: Stream, data: bytes) -> None:
        st.outbuf += data
        self.pump(st)

    def pump(self, st: Stream) -> None:
        """Send what the stream has queued, as far as the flow-control windows allow."""
        while st.outbuf:
            room = min(self.h2.local_flow_control_window(st.sid), self.h2.max_outbound_frame_size)
            if room <= 0:
                return
            chunk = bytes(st.outbuf[:room])
            del st.outbuf[:room]
            self.h2.send_data(st.sid, chunk)

    def send_batch(self, st: Stream) -> None:
        st.outstanding = self.args.window
        st.sent_at = time.perf_counter()
        self.send(st, st.frames)

    def on_data(self, st: Stream) -> None:
        """Take the whole frames off the stream's buffer: check each echo, answer pings,
        and start the next batch when the last one is back."""
        buf = st.inbuf
        pos, end = 0, len(buf)
        now = None
        while end - pos >= 2:
            b0, size = buf[pos], buf[pos + 1] & 0x7F
            hdr = 2
            if size == 126:
                if end - pos < 4:
                    break
                size, hdr = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif size == 127:
                if end - pos < 10:
                    break
                size, hdr = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if end - pos < hdr + size:
                break
            payload = bytes(buf[pos + hdr : pos + hdr + size])
            pos += hdr + size
            opcode = b0 & 0x0F
            if opcode == OP_PING:
                self.send(st, client_frame(payload, OP_PONG))
                continue
            if opcode == OP_CLOSE:
                self.fail_stream(st.sid, ConnectionError("the server closed the WebSocket"))
                continue
            if opcode not in (OP_TEXT, OP_BINARY) or not b0 & 0x80:
                st.mismatches += 1  # the bench never sends fragments: none come back
                continue
            if b0 & RSV1:
                if not st.deflate:
                    st.mismatches += 1
                    continue
                if st.inflater is None:
                    st.inflater = zlib.decompressobj(-15)
                payload = st.inflater.decompress(payload + b"\x00\x00\xff\xff")
            want = st.payloads[st.expect % len(st.payloads)]
            st.expect += 1
            if payload != want:
                st.mismatches += 1
            if now is None:
                now = time.perf_counter()
            self.latencies.append(now - st.sent_at)
            st.echoes += 1
            st.outstanding -= 1
            if st.outstanding == 0:
                if not self.args.check and now < self.deadline:
                    self.send_batch(st)
                elif not st.done.done():
                    st.done.set_result(None)
        del buf[:pos]


def message_frames(payloads: list[bytes], deflated: bool, binary: list[bool]) -> bytes:
    out = b""
    for payload, is_binary in zip(payloads, binary, strict=True):
        if deflated:
            out += client_frame(deflate_payload(payload), OP_BINARY if is_binary else OP_TEXT, True)
        else:
            out += client_frame(payload, OP_BINARY if is_binary else OP_TEXT)
    return out


async def connect(args, loop, deadline: float, latencies: list) -> Connection:
    ctx = None
    if args.tls:
        # The bench's own self-signed certificate: nothing to verify it against.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
    authority = f"{args.host}:{args.port}"
    scheme = "https" if args.tls else "http"
    _, conn = await loop.create_connection(
        lambda: Connection(args, authority, scheme, deadline, latencies),
        args.host,
        args.port,
        ssl=ctx,
    )
    if args.tls:
        proto = conn.transport.get_extra_info("ssl_object").selected_alpn_protocol()
        if proto != "h2":
            raise ConnectionError(f"ALPN chose {proto!r}, not h2")
    await asyncio.wait_for(conn.settings, 10)
    enabled = conn.h2.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
    if not enabled:
        conn.transport.close()
        raise ConnectionError("no SETTINGS_ENABLE_CONNECT_PROTOCOL: the server has no RFC 8441")
    return conn


async def drive(args, deadline: float, latencies: list) -> tuple[list[Stream], list]:
    """One connection's WebSockets, from the CONNECTs until their last batch is back."""
    loop = asyncio.get_running_loop()
    conn = await connect(args, loop, deadline, latencies)
    text = json_text(args.size)
    try:
        if args.check:
            if args.deflate:  # the server may answer the second with a back reference
                payloads, binary = [text, text], [False, False]
            else:
                payloads, binary = [text, os.urandom(args.size)], [False, True]
        else:
            payloads, binary = [text], [False]
        streams = [conn.open(payloads) for _ in range(2 if args.check else args.streams)]
        conn.flush()
        await asyncio.wait_for(asyncio.gather(*(st.opened for st in streams)), 10)
        for st in streams:
            if args.check:
                st.frames = message_frames(payloads, st.deflate, binary)
                st.outstanding = len(payloads)
                st.sent_at = time.perf_counter()
                conn.send(st, st.frames)
            else:
                one = message_frames(payloads, st.deflate, binary)
                st.frames = one * args.window
                conn.send_batch(st)
        conn.flush()
        timeout = 10 if args.check else max(10.0, deadline - time.perf_counter() + 10)
        results = await asyncio.wait_for(
            asyncio.gather(*(st.done for st in streams), return_exceptions=True), timeout
        )
        return streams, [r for r in results if isinstance(r, BaseException)]
    finally:
        conn.transport.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(args) -> dict:
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + args.duration
    results = await asyncio.gather(
        *(drive(args, deadline, latencies) for _ in range(args.connections)),
        return_exceptions=True,
    )
    seconds = time.perf_counter() - start
    streams: list[Stream] = []
    failures: list[BaseException] = []
    per_conn = 2 if args.check else args.streams
    failed = 0  # a connection that failed counts for each of its WebSockets
    for res in results:
        if isinstance(res, BaseException):
            failures.append(res)
            failed += per_conn
        else:
            streams += res[0]
            failures += res[1]
            failed += len(res[1])
    mismatches = sum(st.mismatches for st in streams)
    total = sum(st.echoes for st in streams) - mismatches
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    out = {
        "messages": total,
        "seconds": round(seconds, 3),
        "msgs_per_s": round(total / seconds, 1) if seconds else 0.0,
        "errors": failed + mismatches,
        "streams": len(streams),
        "p50_ms": round(p50 * 1000, 3) if p50 is not None else None,
        "p99_ms": round(p99 * 1000, 3) if p99 is not None else None,
    }
    if args.deflate:
        out["deflate"] = bool(streams) and all(st.deflate for st in streams)
    if mismatches:
        out["error"] = f"{mismatches} echoes did not match what was sent"
    if failures:
        out["error"] = repr(failures[0])
    if args.check:
        out["ok"] = not out["errors"] and total == len(streams) * 2 == args.connections * 4
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="ws://host:port/path (h2c) or wss://host:port/path (TLS)")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--streams", type=int, default=8, help="WebSockets per connection")
    parser.add_argument("--window", type=int, default=4, help="messages in flight per WebSocket")
    parser.add_argument("--size", type=int, default=1024, help="bytes of text per message")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds")
    parser.add_argument("--check", action="store_true", help="verify echoes, then exit")
    parser.add_argument(
        "--deflate", action="store_true", help="offer permessage-deflate; compress if accepted"
    )
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.url)
    if url.scheme not in ("ws", "wss") or not url.hostname or not url.port:
        parser.error("the URL must look like ws://127.0.0.1:8000/ws or wss://...")
    args.host, args.port, args.path = url.hostname, url.port, url.path or "/"
    args.tls = url.scheme == "wss"
    return report(run(args))


if __name__ == "__main__":
    sys.exit(main())
