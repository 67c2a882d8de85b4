"""A replaced worker passes its idle keep-alive connections on (``src/handoff.rs``), in
every execution mode.

When a worker is replaced while clients are connected (recycling, a SIGHUP rolling
restart), its cleartext HTTP/1.1 connections move to the workers that stay, between two
requests, with whatever the client already sent of the next one: the clients keep their
connections and never see ``Connection: close``. A worker stopping with the whole
server closes its connections as before, and TLS connections are not passed on.
"""

from __future__ import annotations

import re
import signal
import socket
import ssl

import h2.config
import h2.connection
import h2.events
import pytest

from _support import ConnectionClosed, RawConn, Server, every_mode, wait_until

MODES = every_mode("recycle_app:application", "recycle_app:app")
PASSED_RE = re.compile(r"Passed (\d+) idle connections? on to the workers that stay")
REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


def _start(mode: str, *args: str, env: dict[str, str] | None = None) -> Server:
    app, mode_env = MODES[mode]
    srv = Server([*app, "--no-access-log", *args], env={**mode_env, **(env or {})})
    srv.wait_ready()
    return srv


def _passed(srv: Server) -> int:
    return sum(int(m.group(1)) for m in map(PASSED_RE.search, srv.lines()) if m)


def _pid_of(conn: RawConn) -> int:
    """One request on ``conn``: the pid of the worker that answered; the connection must
    stay open (no ``Connection: close``)."""
    conn.send(REQUEST)
    resp = conn.response()
    assert resp.status == 200, resp.status_line
    assert (resp.header("connection") or "").lower() != "close", resp.status_line
    return int(resp.body)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", list(MODES))
def test_recycling_keeps_the_clients_connections(mode):
    """Four clients on keep-alive connections, a worker replaced every 40 requests: every
    request on every connection is answered, by at least three workers in turn, and not
    one connection is closed or told to close."""
    srv = _start(mode, "--workers", "1", "--max-requests", "40")
    try:
        conns = [RawConn(srv.port) for _ in range(4)]
        pids: set[int] = set()
        try:
            for _ in range(60):  # 240 requests: five replacements
                for conn in conns:
                    pids.add(_pid_of(conn))
        except ConnectionClosed as e:
            raise AssertionError(f"{e}\n{srv.output()}") from None
        finally:
            for conn in conns:
                conn.close()
        assert len(pids) >= 3, (pids, srv.output())
        assert _passed(srv) >= 4, srv.output()
        assert "could not be passed on" not in srv.output()
    finally:
        srv.kill()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("mode", list(MODES))
def test_a_half_sent_request_moves_with_its_connection(mode):
    """The first half of a request head reached the old worker before it was replaced:
    the new worker gets those bytes with the connection and answers the request once the
    rest arrives."""
    srv = _start(mode, "--workers", "1", "--log-level", "debug")
    try:
        with RawConn(srv.port) as conn:
            old = _pid_of(conn)
            conn.send(REQUEST[:9])  # "GET / HTT"
            srv.send_signal(signal.SIGHUP)
            wait_until(lambda: _passed(srv) == 1, 20, message="the connection passed on")
            conn.send(REQUEST[9:])
            resp = conn.response()
            assert resp.status == 200, resp.status_line
            new = int(resp.body)
            assert new != old and new in srv.worker_pids(), (old, new, srv.output())
            assert _pid_of(conn) == new
    finally:
        srv.kill()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("mode", list(MODES))
def test_a_connection_busy_at_the_replacement_moves_after_its_response(mode):
    """A request in flight when the worker is told to go: its response comes from the old
    worker without ``Connection: close``, then the connection moves."""
    srv = _start(mode, "--workers", "1", env={"RECYCLE_APP_SECONDS": "1.5"})
    try:
        with RawConn(srv.port) as conn:
            conn.send(REQUEST)
            srv.send_signal(signal.SIGHUP)  # the new worker is ready well within 1.5 s
            wait_until(lambda: "Reload complete" in srv.output(), 20, message="the reload")
            resp = conn.response()
            assert (resp.header("connection") or "").lower() != "close", resp.status_line
            old = int(resp.body)
            wait_until(lambda: _passed(srv) == 1, 20, message="the connection passed on")
            assert _pid_of(conn) != old
    finally:
        srv.kill()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("mode", list(MODES))
def test_a_full_stop_during_a_replacement_ends_the_handing_over(mode):
    """The server is stopped while a replaced worker still finishes a request: the
    workers that would take the connection stop too, so the old worker finishes it as
    any draining worker does (``Connection: close`` on this response, or on the next if
    the client sends one at once) instead of passing it to nobody."""
    # The request outlasts the reload (the new worker ready) and the stop after it.
    srv = _start(mode, "--workers", "1", env={"RECYCLE_APP_SECONDS": "4"})
    try:
        with RawConn(srv.port) as conn:
            conn.send(REQUEST)
            srv.send_signal(signal.SIGHUP)
            wait_until(lambda: "Reload complete" in srv.output(), 20, message="the reload")
            srv.send_signal(signal.SIGTERM)
            resp = conn.response()
            assert resp.status == 200, resp.status_line
            if (resp.header("connection") or "").lower() != "close":
                # The inline WSGI mode reads the stop only once the call returned: the
                # response was on its way already, so the drain waits for the next.
                assert mode == "wsgi-inline", srv.output()
                conn.send(REQUEST)
                resp = conn.response()
                assert resp.status == 200, resp.status_line
                assert (resp.header("connection") or "").lower() == "close", srv.output()
            assert conn.read_to_eof() == b""
        assert srv.proc.wait(20) == 0, srv.output()
        srv.join_output(5.0)
        assert _passed(srv) == 0, srv.output()
    finally:
        srv.kill()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("mode", list(MODES))
def test_a_connection_moves_again_before_its_next_request(mode):
    """Two replacements in a row, the client silent in between: the worker that took
    the connection passes it on in turn, though it never served a request on it."""
    srv = _start(mode, "--workers", "1")
    try:
        with RawConn(srv.port) as conn:
            first = _pid_of(conn)
            for passed in (1, 2):
                srv.send_signal(signal.SIGHUP)
                wait_until(lambda: _passed(srv) == passed, 20, message=f"pass {passed}")  # noqa: B023
            wait_until(lambda: len(srv.worker_pids()) == 1, 20, message="one worker left")
            (last,) = srv.worker_pids()
            assert _pid_of(conn) == last != first
    finally:
        srv.kill()


@pytest.mark.timeout(40)
def test_pipelined_requests_move_with_their_connection():
    """Two requests sent in one piece while the worker is being replaced: both are
    answered, in order, whichever worker reads them."""
    srv = _start("wsgi-inline", "--workers", "1")
    try:
        with RawConn(srv.port) as conn:
            old = _pid_of(conn)
            srv.send_signal(signal.SIGHUP)
            wait_until(lambda: _passed(srv) == 1, 20, message="the connection passed on")
            conn.send(REQUEST * 2)
            pids = [int(conn.response().body) for _ in range(2)]
            assert pids[0] == pids[1] != old, pids
    finally:
        srv.kill()


@pytest.mark.timeout(40)
def test_unix_socket_connections_move_too(tmp_path):
    path = str(tmp_path / "gm.sock")
    app, env = MODES["wsgi-inline"]
    srv = Server([*app, "--no-access-log", "--uds", path, "--workers", "1"], env=env)
    try:
        srv.wait_for_line("Listening on unix:", 30)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(path)
            reader = sock.makefile("rb")

            def pid() -> int:
                sock.sendall(REQUEST)
                head = []
                while (line := reader.readline()) not in (b"\r\n", b""):
                    head.append(line.decode("latin-1").strip().lower())
                assert head and head[0].startswith("http/1.1 200"), head
                assert "connection: close" not in head, head
                length = next(int(h.split(":")[1]) for h in head if h.startswith("content-length"))
                return int(reader.read(length))

            old = pid()
            srv.send_signal(signal.SIGHUP)
            wait_until(lambda: _passed(srv) == 1, 20, message="the connection passed on")
            assert pid() != old
    finally:
        srv.kill()


@pytest.mark.timeout(40)
def test_a_worker_retired_by_sigttou_passes_its_connections_to_the_others():
    srv = _start("wsgi-inline", "--workers", "2", "--log-level", "debug")
    conns: list[RawConn] = []
    try:
        newest = max(srv.worker_pids())  # SIGTTOU retires the newest worker
        for _ in range(40):  # until one connection is the newest worker's
            conns.append(RawConn(srv.port))
            if _pid_of(conns[-1]) == newest:
                break
        else:
            pytest.fail(f"no connection reached worker {newest}")
        srv.send_signal(signal.SIGTTOU)
        wait_until(lambda: _passed(srv) >= 1, 20, message="the connections passed on")
        wait_until(lambda: newest not in srv.worker_pids(), 20, message="the worker gone")
        assert {_pid_of(c) for c in conns} == srv.worker_pids()
    finally:
        for conn in conns:
            conn.close()
        srv.kill()


@pytest.mark.timeout(40)
def test_stopping_the_server_closes_connections_instead():
    """SIGTERM stops every worker: there is nobody to pass a connection to, so an idle
    one is closed."""
    srv = _start("wsgi-inline", "--workers", "2")
    try:
        with RawConn(srv.port) as conn:
            _pid_of(conn)
            srv.stop()
            assert conn.read_to_eof() == b""
        assert _passed(srv) == 0, srv.output()
    finally:
        srv.kill()


@pytest.mark.timeout(40)
def test_tls_connections_are_not_passed_on(certs):
    """A TLS session cannot move to another process: a replaced worker finishes its TLS
    connections as before (closing them)."""
    app, env = MODES["wsgi-inline"]
    srv = Server([*app, "--no-access-log", "--workers", "1", *certs.server_args()], env=env)
    srv.wait_ready()
    try:
        ctx = ssl.create_default_context()
        certs.ca.configure_trust(ctx)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(REQUEST)
                assert tls.recv(65536).startswith(b"HTTP/1.1 200")
                old = srv.worker_pids()
                srv.send_signal(signal.SIGHUP)
                wait_until(lambda: not (srv.worker_pids() & old), 20, message="the old worker gone")
                # The old worker closed it (it had nobody to give it to).
                tls.settimeout(5)
                try:
                    assert tls.recv(65536) == b""
                except (ssl.SSLError, ConnectionError):
                    pass
        assert _passed(srv) == 0, srv.output()
    finally:
        srv.kill()


@pytest.mark.timeout(40)
def test_http2_connections_are_not_passed_on():
    """An HTTP/2 connection (h2c) cannot be handed over between two requests as a whole:
    the replaced worker ends it with ``GOAWAY`` and closes it."""
    srv = _start("wsgi-inline", "--workers", "1")
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            conn.send_headers(
                1,
                [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "t")],
                end_stream=True,
            )
            sock.sendall(conn.data_to_send())
            events: list[object] = []
            while not any(isinstance(e, h2.events.StreamEnded) for e in events):
                data = sock.recv(65536)
                assert data, events
                events.extend(conn.receive_data(data))
            srv.send_signal(signal.SIGHUP)
            # From here frame by frame (the h2 package refuses the PING that follows a
            # first GOAWAY in a graceful shutdown): acknowledge PINGs, note GOAWAYs.
            frames = _h2_frames(sock)
            goaways = 0
            for kind, flags, payload in frames:
                if kind == 0x6 and not flags & 0x1:
                    sock.sendall(b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + payload)
                goaways += kind == 0x7
            assert goaways, "no GOAWAY before the old worker closed the connection"
        wait_until(lambda: len(srv.worker_pids()) == 1, 20, message="the old worker gone")
        assert _passed(srv) == 0, srv.output()
        assert "panicked" not in srv.output(), srv.output()
    finally:
        srv.kill()


def _h2_frames(sock: socket.socket):
    """The HTTP/2 frames read from ``sock`` until it closes: (type, flags, payload)."""
    buf = b""
    while data := sock.recv(65536):
        buf += data
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            length = int.from_bytes(buf[:3], "big")
            yield buf[3], buf[4], buf[9 : 9 + length]
            buf = buf[9 + length :]
