"""A small HTTP/3 load generator for the bench, on aioquic (the only HTTP/3 client in the
bench venv; h2load and wrk have no HTTP/3 here).

It opens ``--connections`` QUIC connections and keeps ``--streams`` GET requests in flight
on each: when a response ends, the next request goes out on a new stream, until
``--duration`` seconds have passed. Certificates are not verified (the bench's are
self-signed). Prints one JSON object:
``{"requests": N, "seconds": S, "rps": R, "errors": E, "error": "..."}`` where
``requests`` counts 2xx responses and ``errors`` everything else (other statuses, resets,
connections that failed).

aioquic is pure Python: one process of it saturates its core long before a Rust server
does, so req/s measures the generator. Compare servers by ``req/CPU-s`` (requests per
second of server CPU) instead, which ``run.py`` reports for every row.

``--check`` sends one request per connection instead and exits non-zero unless each
answer is ``200`` with the bench apps' ``Hello, world!``, which is how ``run.py`` tells
whether a server speaks HTTP/3 at all.
"""

import argparse
import asyncio
import json
import ssl
import sys
import time
import urllib.parse

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset

HELLO = b"Hello, world!"


class Load(QuicConnectionProtocol):
    """One connection: keeps its window of requests in flight until ``deadline``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.head: list[tuple[bytes, bytes]] = []
        self.deadline = 0.0
        self.ok = 0
        self.errors = 0
        self.bodies: dict[int, bytearray] = {}
        self.status: dict[int, int] = {}
        self.in_flight = 0
        self.last_body = b""
        self.idle = asyncio.Event()

    def send_request(self) -> None:
        sid = self._quic.get_next_available_stream_id()
        self.h3.send_headers(sid, self.head, end_stream=True)
        self.bodies[sid] = bytearray()
        self.in_flight += 1

    def _done(self, sid: int, good: bool) -> None:
        body = self.bodies.pop(sid, None)
        if body is None:
            return
        status = self.status.pop(sid, 0)
        if good and 200 <= status < 300:
            self.ok += 1
        else:
            self.errors += 1
        self.last_body = bytes(body)
        self.in_flight -= 1
        if time.monotonic() < self.deadline:
            self.send_request()
        elif self.in_flight == 0:
            self.idle.set()

    def quic_event_received(self, event) -> None:
        if isinstance(event, ConnectionTerminated):
            self.errors += self.in_flight
            self.in_flight = 0
            self.bodies.clear()
            self.idle.set()
            return
        if isinstance(event, StreamReset):
            self._done(event.stream_id, False)
            self.transmit()
            return
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                if ev.stream_id not in self.status:
                    self.status[ev.stream_id] = int(dict(ev.headers).get(b":status", b"0"))
                if ev.stream_ended:
                    self._done(ev.stream_id, True)
            elif isinstance(ev, DataReceived):
                if ev.stream_id in self.bodies:
                    self.bodies[ev.stream_id] += ev.data
                if ev.stream_ended:
                    self._done(ev.stream_id, True)
        self.transmit()


async def one_connection(url, streams: int, duration: float, check: bool) -> tuple[int, int, str]:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE)
    try:
        async with connect(
            url.hostname, url.port or 443, configuration=config, create_protocol=Load
        ) as conn:
            path = url.path or "/"
            authority = f"{url.hostname}:{url.port}".encode()
            conn.head = [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority),
                (b":path", path.encode()),
                (b"user-agent", b"h3load"),
            ]
            conn.deadline = 0.0 if check else time.monotonic() + duration
            for _ in range(1 if check else streams):
                conn.send_request()
            conn.transmit()
            await asyncio.wait_for(conn.idle.wait(), duration + 30)
            if check and (conn.ok != 1 or conn.last_body != HELLO):
                return conn.ok, conn.errors + 1, f"wrong answer: {conn.last_body[:80]!r}"
            return conn.ok, conn.errors, ""
    except (OSError, asyncio.TimeoutError, ConnectionError) as e:
        return 0, 1, f"{type(e).__name__}: {e}"


async def main_async(args) -> dict:
    url = urllib.parse.urlsplit(args.url)
    t0 = time.monotonic()
    results = await asyncio.gather(
        *(
            one_connection(url, args.streams, args.duration, args.check)
            for _ in range(args.connections)
        )
    )
    seconds = time.monotonic() - t0
    requests = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    error = next((r[2] for r in results if r[2]), "")
    return {
        "requests": requests,
        "seconds": round(seconds, 3),
        "rps": round(requests / seconds, 1) if seconds else 0.0,
        "errors": errors,
        "error": error,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="https://HOST:PORT/PATH")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--streams", type=int, default=8, help="requests in flight per connection")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--check", action="store_true", help="one request per connection")
    args = p.parse_args()
    out = asyncio.run(main_async(args))
    print(json.dumps(out))
    if args.check:
        return 0 if out["errors"] == 0 and out["requests"] == args.connections else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
