"""Raw HTTP/2 for the protocol tests: frames built with ``hyperframe`` and ``hpack`` (the
``h2`` library's own layers) and written to a plain or TLS socket, so a test can send
exactly the malformed thing it checks and read back exactly what the server answers.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

import hpack
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# RFC 9113 §7 error codes.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


class ConnectionClosed(AssertionError):
    """The server closed the connection."""


class H2Raw:
    """One HTTP/2 client connection speaking raw frames."""

    def __init__(
        self,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        handshake: bool = True,
    ) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.buf = b""
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.server_settings: dict[int, int] = {}
        self.next_stream = 1
        self.held: dict[int, list[Frame]] = {}  # frames of streams nobody waited for yet
        if handshake:
            self.handshake()

    def __enter__(self) -> H2Raw:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # --- sending ---------------------------------------------------------------------
    def send(self, data: bytes | Frame) -> None:
        self.sock.sendall(data.serialize() if isinstance(data, Frame) else data)

    def handshake(self) -> None:
        """Preface + empty SETTINGS; read the server's SETTINGS and ACK them."""
        self.send(PREFACE + SettingsFrame(0).serialize())
        f = self.read_frame()
        assert isinstance(f, SettingsFrame) and "ACK" not in f.flags, f
        self.server_settings = dict(f.settings)
        self.send(SettingsFrame(0, flags=["ACK"]))

    def handshake_with_shut_windows(self) -> None:
        """A handshake that gives every stream a window of 0: the server may send no
        DATA until told (``open_windows``)."""
        self.send(
            PREFACE + SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}).serialize()
        )
        f = self.read_frame()
        assert isinstance(f, SettingsFrame) and "ACK" not in f.flags, f
        self.server_settings = dict(f.settings)
        self.send(SettingsFrame(0, flags=["ACK"]))

    def open_windows(self, sid: int, size: int = 1 << 30) -> None:
        self.send(WindowUpdateFrame(0, window_increment=size))
        self.send(WindowUpdateFrame(sid, window_increment=size))

    def new_stream(self) -> int:
        sid = self.next_stream
        self.next_stream += 2
        return sid

    def headers_frame(
        self,
        sid: int,
        headers: list[tuple[str, str]],
        end_stream: bool = True,
    ) -> HeadersFrame:
        flags = ["END_HEADERS"] + (["END_STREAM"] if end_stream else [])
        return HeadersFrame(sid, data=self.encoder.encode(headers), flags=flags)

    def request_headers(
        self, path: str = "/", method: str = "GET", extra: list[tuple[str, str]] | None = None
    ) -> list[tuple[str, str]]:
        return [
            (":method", method),
            (":scheme", "http"),
            (":authority", "localhost"),
            (":path", path),
            *(extra or []),
        ]

    def request(
        self,
        path: str = "/",
        method: str = "GET",
        body: bytes | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> int:
        sid = self.new_stream()
        self.send(self.headers_frame(sid, self.request_headers(path, method, extra), not body))
        if body:
            self.send(DataFrame(sid, data=body, flags=["END_STREAM"]))
        return sid

    # --- receiving -------------------------------------------------------------------
    def _fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            raise ConnectionClosed(f"connection closed; buffered {self.buf!r}")
        self.buf += data

    def read_frame(self) -> Frame:
        while len(self.buf) < 9:
            self._fill()
        frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
        while len(self.buf) < 9 + length:
            self._fill()
        frame.parse_body(memoryview(self.buf[9 : 9 + length]))
        self.buf = self.buf[9 + length :]
        if isinstance(frame, HeadersFrame):
            # Every header block must go through the decoder, in order (HPACK state).
            frame.decoded = list(self.decoder.decode(frame.data, raw=False))
        if isinstance(frame, DataFrame) and frame.flow_controlled_length:
            # Give the connection window back at once, whoever reads the stream (if
            # anyone), so DATA of an ignored or reset stream cannot starve the others.
            self.send(WindowUpdateFrame(0, window_increment=frame.flow_controlled_length))
        return frame

    def frames_until(self, *kinds: type[Frame]) -> list[Frame]:
        """Read frames (answering PINGs) until one of ``kinds``; return all read."""
        seen = []
        while True:
            f = self.read_frame()
            seen.append(f)
            if isinstance(f, PingFrame) and "ACK" not in f.flags:
                self.send(PingFrame(0, opaque_data=f.opaque_data, flags=["ACK"]))
            if isinstance(f, kinds):
                return seen

    def expect_goaway(self, code: int) -> GoAwayFrame:
        f = self.frames_until(GoAwayFrame)[-1]
        assert f.error_code == code, f"GOAWAY {f.error_code:#x}, expected {code:#x}"
        return f

    def expect_rst(self, sid: int, code: int) -> RstStreamFrame:
        while True:
            f = self.frames_until(RstStreamFrame, GoAwayFrame)[-1]
            assert isinstance(f, RstStreamFrame), f"expected RST_STREAM, got {f}"
            if f.stream_id == sid:
                assert f.error_code == code, f"RST_STREAM {f.error_code:#x}, expected {code:#x}"
                return f

    def response(self, sid: int) -> Response:
        """Read the response of stream ``sid`` (frames of other streams are dropped)."""
        status, headers, body, trailers = 0, [], b"", []
        while True:
            held = self.held.get(sid)
            f = held.pop(0) if held else self.read_frame()
            if isinstance(f, PingFrame) and "ACK" not in f.flags:
                self.send(PingFrame(0, opaque_data=f.opaque_data, flags=["ACK"]))
            if isinstance(f, GoAwayFrame):
                raise AssertionError(f"GOAWAY {f.error_code:#x} while waiting for {sid}")
            if f.stream_id != sid:
                if f.stream_id:
                    self.held.setdefault(f.stream_id, []).append(f)
                continue
            if isinstance(f, RstStreamFrame):
                raise AssertionError(f"RST_STREAM {f.error_code:#x} on {sid}")
            if isinstance(f, HeadersFrame):
                decoded = f.decoded
                if not status:
                    status = int(dict(decoded)[":status"])
                    headers = [(k, v) for k, v in decoded if not k.startswith(":")]
                else:
                    trailers = list(decoded)
            elif isinstance(f, DataFrame):
                body += f.data
                if f.flow_controlled_length and "END_STREAM" not in f.flags:
                    self.send(WindowUpdateFrame(sid, window_increment=f.flow_controlled_length))
            if "END_STREAM" in f.flags:
                return Response(status, headers, body, trailers)


def h2_tls_context(ca, alpn: list[str]) -> ssl.SSLContext:
    """A client context trusting ``ca`` (a trustme CA) and offering ``alpn``."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.set_alpn_protocols(alpn)
    return ctx


__all__ = [
    "PREFACE",
    "H2Raw",
    "Response",
    "ConnectionClosed",
    "h2_tls_context",
    "RstStreamFrame",
    "GoAwayFrame",
    "SettingsFrame",
    "WindowUpdateFrame",
    "DataFrame",
    "HeadersFrame",
    "PingFrame",
    "socket",
]
