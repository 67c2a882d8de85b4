"""A small HTTP/3 client for the tests: aioquic's ``H3Connection`` over asyncio.

``async with h3_connect(port, certs) as conn:`` opens one QUIC connection (ALPN ``h3``,
the test CA trusted, ``localhost`` as the server name) and yields an :class:`H3Client`:

- ``await conn.request(method, path, headers=(), body=b"")`` sends a whole request and
  returns the whole :class:`H3Response`;
- ``conn.start(method, path)`` sends a request and returns its stream id; ``await
  conn.next_event(sid)`` then gives the stream's events one at a time (headers, data,
  the end, a reset), for responses read as they arrive;
- ``conn.vanish()`` drops the connection without a word (no CONNECTION_CLOSE), as a
  client whose network went away; ``conn.close()`` closes it politely.

Every wait is bounded by ``timeout``; a connection the server closed fails the streams
still waiting with :class:`H3Closed` (its error code says how: ``0x100`` is
H3_NO_ERROR).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset

H3_NO_ERROR = 0x100


class H3Closed(Exception):
    """The connection ended while a stream was waiting."""

    def __init__(self, error_code: int, reason: str) -> None:
        super().__init__(f"connection closed: error {error_code:#x} {reason!r}")
        self.error_code = error_code


class H3Reset(Exception):
    """The server reset the stream."""

    def __init__(self, error_code: int) -> None:
        super().__init__(f"stream reset: error {error_code:#x}")
        self.error_code = error_code


@dataclass
class H3Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        for k, v in self.headers:
            if k == key:
                return v.decode()
        return None

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class Event:
    """One thing that happened on a stream: ``kind`` is ``headers``, ``data``, ``end``
    or ``reset`` (``value``: the headers, the bytes, nothing, the error code)."""

    kind: str
    value: object = None


class H3Client(QuicConnectionProtocol):
    timeout: float = 15.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self._streams: dict[int, asyncio.Queue[Event]] = {}
        self.terminated: ConnectionTerminated | None = None
        self.authority = b"localhost"

    # --- events from aioquic -----------------------------------------------------------
    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
            for q in self._streams.values():
                q.put_nowait(Event("closed", event))
            return
        if isinstance(event, StreamReset) and event.stream_id in self._streams:
            self._streams[event.stream_id].put_nowait(Event("reset", event.error_code))
            return
        for h3_event in self.h3.handle_event(event):
            q = self._streams.get(getattr(h3_event, "stream_id", -1))
            if q is None:
                continue
            if isinstance(h3_event, HeadersReceived):
                q.put_nowait(Event("headers", h3_event.headers))
                if h3_event.stream_ended:
                    q.put_nowait(Event("end"))
            elif isinstance(h3_event, DataReceived):
                if h3_event.data:
                    q.put_nowait(Event("data", h3_event.data))
                if h3_event.stream_ended:
                    q.put_nowait(Event("end"))

    # --- requests ----------------------------------------------------------------------
    def start(
        self,
        method: str,
        path: str,
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
        body: bytes = b"",
        end: bool = True,
    ) -> int:
        """Send a request's head (and ``body``); ``end=False`` leaves the body open for
        :meth:`send_body`. Returns the stream id."""
        sid = self._quic.get_next_available_stream_id()
        self._streams[sid] = asyncio.Queue()
        head = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", self.authority),
            (b":path", path.encode()),
            *[(k.lower().encode(), v.encode()) for k, v in headers],
        ]
        self.h3.send_headers(sid, head, end_stream=end and not body)
        if body:
            self.h3.send_data(sid, body, end_stream=end)
        self.transmit()
        return sid

    def send_body(self, sid: int, data: bytes, end: bool = False) -> None:
        self.h3.send_data(sid, data, end_stream=end)
        self.transmit()

    def reset(self, sid: int, error_code: int = 0x10C) -> None:
        """Abandon a request (H3_REQUEST_CANCELLED by default)."""
        self._quic.reset_stream(sid, error_code)
        with contextlib.suppress(Exception):
            self._quic.stop_stream(sid, error_code)
        self.transmit()

    async def next_event(self, sid: int, timeout: float | None = None) -> Event:
        q = self._streams[sid]
        ev = await asyncio.wait_for(q.get(), timeout or self.timeout)
        if ev.kind == "closed":
            term = ev.value
            raise H3Closed(term.error_code, term.reason_phrase)
        return ev

    async def response(self, sid: int, timeout: float | None = None) -> H3Response:
        """The whole response of stream ``sid``."""
        resp: H3Response | None = None
        chunks: list[bytes] = []
        while True:
            ev = await self.next_event(sid, timeout)
            if ev.kind == "headers":
                headers = list(ev.value)  # type: ignore[arg-type]
                if resp is None:
                    status = int(dict(headers)[b":status"])
                    if 100 <= status < 200:
                        continue
                    resp = H3Response(status, [h for h in headers if not h[0].startswith(b":")])
                else:
                    resp.trailers = headers
            elif ev.kind == "data":
                chunks.append(ev.value)  # type: ignore[arg-type]
            elif ev.kind == "reset":
                raise H3Reset(ev.value)  # type: ignore[arg-type]
            elif ev.kind == "end":
                assert resp is not None, "stream ended without a response"
                resp.body = b"".join(chunks)
                del self._streams[sid]
                return resp

    async def request(
        self,
        method: str,
        path: str,
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
        body: bytes = b"",
        timeout: float | None = None,
    ) -> H3Response:
        return await self.response(self.start(method, path, headers, body), timeout)

    async def get(self, path: str, **kw) -> H3Response:
        return await self.request("GET", path, **kw)

    def stop_reading(self) -> None:
        """Stop granting the server more stream credit (MAX_STREAM_DATA), as a client
        that no longer reads: its writes block once a stream's window is full. The
        connection's window still grows, so new streams are served."""
        self._quic._write_stream_limits = lambda *args, **kwargs: None  # type: ignore[method-assign]

    # --- ending ------------------------------------------------------------------------
    def vanish(self) -> None:
        """Stop talking: no CONNECTION_CLOSE, the socket just goes quiet."""
        self._transport.close()  # type: ignore[union-attr]

    async def wait_terminated(self, timeout: float = 10.0) -> ConnectionTerminated:
        await asyncio.wait_for(self.wait_closed(), timeout)
        assert self.terminated is not None
        return self.terminated


def client_config(certs, server_name: str = "localhost") -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=server_name)
    config.load_verify_locations(cadata=certs.ca.cert_pem.bytes())
    return config


@contextlib.asynccontextmanager
async def h3_connect(
    port: int, certs, host: str = "127.0.0.1", timeout: float = 15.0, **quic_options
) -> AsyncIterator[H3Client]:
    """One HTTP/3 connection to ``host:port`` (see the module docs); ``quic_options``
    set attributes of the client's ``QuicConfiguration`` (e.g. ``cipher_suites``)."""
    config = client_config(certs)
    for name, value in quic_options.items():
        setattr(config, name, value)
    ctx = connect(host, port, configuration=config, create_protocol=H3Client)
    conn = await asyncio.wait_for(ctx.__aenter__(), timeout)
    conn.timeout = timeout
    try:
        yield conn  # type: ignore[misc]
    finally:
        if conn._transport is not None and not conn._transport.is_closing():  # type: ignore[attr-defined]
            await asyncio.wait_for(ctx.__aexit__(None, None, None), timeout)


def run(coro, timeout: float = 60.0):
    """Run ``coro`` to its end on a fresh event loop, within ``timeout`` seconds."""

    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def sha_line(data: bytes) -> str:
    """What ``/sha`` of the test apps answers for ``data``."""
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}"
