"""A WebSocket-over-HTTP/2 client (RFC 8441) for the tests, on the ``h2`` library.

``h2`` speaks extended CONNECT: the client opens a stream with ``:method CONNECT`` and
``:protocol websocket`` once the server advertised ``SETTINGS_ENABLE_CONNECT_PROTOCOL``,
and the stream's DATA then carries WebSocket frames (masked, as over HTTP/1.1). Several
sockets and ordinary requests can share the connection; each stream keeps its own
buffer, and a test chooses whether to give flow-control credit back (``read=False``
leaves a stream's window closed, as a client that stops reading would).
"""

from __future__ import annotations

import os
import socket
import ssl

import h2.config
import h2.connection
import h2.events
import h2.settings

from _support import ws_frame

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    """One client frame of any size; ``fin=False`` starts or continues a fragmented
    message, ``masked=False`` breaks RFC 6455 §5.1 on purpose."""
    n = len(payload)
    if n < 126:
        size = bytes([n])
    elif n < 1 << 16:
        size = bytes([126]) + n.to_bytes(2, "big")
    else:
        size = bytes([127]) + n.to_bytes(8, "big")
    head = bytes([(0x80 if fin else 0) | opcode])
    if not masked:
        return head + size + payload
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + bytes([size[0] | 0x80]) + size[1:] + mask + body


class StreamReset(AssertionError):
    """The server reset the stream."""


class H2Client:
    """One HTTP/2 connection with any number of WebSocket and plain streams."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None, timeout: float = 10.0):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.scheme = "https" if tls else "http"
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.flush()
        self.data: dict[int, bytearray] = {}
        self.responses: dict[int, tuple[int, dict[str, str]]] = {}
        self.ended: set[int] = set()
        self.reset: dict[int, int] = {}
        self.credit: dict[int, bool] = {}
        self.settings_seen = False
        while not self.settings_seen:
            self._pump()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    @property
    def connect_protocol(self) -> bool:
        """Whether the server advertised SETTINGS_ENABLE_CONNECT_PROTOCOL."""
        return bool(self.conn.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL))

    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def _pump(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                self.settings_seen = True
            elif isinstance(ev, h2.events.ResponseReceived):
                headers = dict(ev.headers)
                self.responses[ev.stream_id] = (int(headers.pop(":status")), headers)
            elif isinstance(ev, h2.events.DataReceived):
                self.data.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                if self.credit.get(ev.stream_id, True):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                else:  # keep the stream's window shut, but not the connection's
                    self.conn.increment_flow_control_window(ev.flow_controlled_length)
            elif isinstance(ev, h2.events.StreamEnded):
                self.ended.add(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self.reset[ev.stream_id] = ev.error_code
        self.flush()

    def open_ws(
        self, path: str, extra: list[tuple[str, str]] | None = None, read: bool = True
    ) -> tuple[int, int, dict[str, str]]:
        """Open a WebSocket stream: (stream id, status, response headers)."""
        sid = self.conn.get_next_available_stream_id()
        self.credit[sid] = read
        headers = [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", self.scheme),
            (":path", path),
            (":authority", "localhost"),
            ("sec-websocket-version", "13"),
            *(extra or []),
        ]
        self.conn.send_headers(sid, headers)
        self.flush()
        status, resp = self.wait_response(sid)
        return sid, status, resp

    def get(self, path: str) -> tuple[int, bytes]:
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "GET"),
            (":scheme", self.scheme),
            (":path", path),
            (":authority", "localhost"),
        ]
        self.conn.send_headers(sid, headers, end_stream=True)
        self.flush()
        status, _ = self.wait_response(sid)
        while sid not in self.ended:
            self._pump()
        return status, bytes(self.data.pop(sid, b""))

    def wait_response(self, sid: int) -> tuple[int, dict[str, str]]:
        while sid not in self.responses:
            if sid in self.reset:
                raise StreamReset(f"stream {sid} reset with {self.reset[sid]:#x}")
            self._pump()
        return self.responses[sid]

    def send(self, sid: int, opcode: int, payload: bytes) -> None:
        self.conn.send_data(sid, ws_frame(opcode, payload))
        self.flush()

    def send_raw(self, sid: int, data: bytes) -> None:
        """Send ``data`` on the stream in DATA frames the peer's limits allow."""
        step = self.conn.max_outbound_frame_size
        for at in range(0, len(data), step):
            while self.conn.local_flow_control_window(sid) < min(step, len(data) - at):
                self._pump()
            self.conn.send_data(sid, data[at : at + step])
            self.flush()

    def send_text(self, sid: int, text: str) -> None:
        self.send(sid, TEXT, text.encode())

    def recv(self, sid: int) -> tuple[int, bytes]:
        """The next WebSocket frame the server sent on ``sid``: (opcode, payload)."""
        while True:
            buf = self.data.setdefault(sid, bytearray())
            frame = _parse(buf)
            if frame is not None:
                return frame
            if sid in self.ended or sid in self.reset:
                raise ConnectionError(f"stream {sid} ended; left {bytes(buf)!r}")
            self._pump()

    def wait_ended(self, sid: int) -> None:
        while sid not in self.ended and sid not in self.reset:
            self._pump()

    def close_stream(self, sid: int) -> None:
        self.conn.end_stream(sid)
        self.flush()


def _parse(buf: bytearray) -> tuple[int, bytes] | None:
    """Take one unmasked server frame off the front of ``buf``, if it is all there."""
    if len(buf) < 2:
        return None
    n, at = buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, at = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, at = int.from_bytes(buf[2:10], "big"), 10
    if len(buf) < at + n:
        return None
    frame = (buf[0] & 0x0F, bytes(buf[at : at + n]))
    del buf[: at + n]
    return frame


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()
