"""The PROXY protocol (``--proxy-protocol``, ``src/http/proxy_protocol.rs``) on raw
sockets: headers written by hand, in every execution mode; refusals (untrusted peer,
missing or malformed header, silence); TLS after the header; the proxy headers on top;
the settings. HAProxy itself sends the headers in ``test_edge_haproxy.py``; the parsing
has Rust unit tests.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import time

import pytest

import gristmill.settings as settings_mod
from _proxy import client_of, get, proxy_v1, proxy_v2
from _support import RawConn, Server, every_mode, http_request, wait_until

MODES = every_mode("proxy_app:wsgi", "proxy_app:asgi")
APP = "proxy_app:wsgi"
REFUSED = r"PROXY protocol: connection from {peer} closed: {why}"


def _start(server, mode: str, *args: str) -> Server:
    app, env = MODES[mode]
    return server(*app, "--proxy-protocol", *args, env=env)


def ask(conn: RawConn, header: bytes, extra_headers: dict[str, str] | None = None) -> dict:
    """Send ``header`` and a GET on ``conn``; the app's JSON report."""
    conn.send(header + http_request("GET", "/who", headers=extra_headers))
    resp = conn.final_response()
    assert resp.status == 200, resp.head + resp.body
    return json.loads(resp.body)


def refused(conn: RawConn, data: bytes) -> None:
    """Send ``data``; the server must close the connection without a byte of answer."""
    try:
        conn.send(data)
    except (BrokenPipeError, ConnectionResetError):
        return
    assert conn.read_to_eof(10) == b""


@pytest.mark.parametrize("mode", list(MODES))
def test_the_header_gives_the_client_address(server, mode):
    srv = _start(server, mode)
    with srv.raw() as conn:
        assert client_of(ask(conn, proxy_v1(("192.0.2.7", 56324)))) == ("192.0.2.7", 56324)
        # The header is once per connection: the next request on it is the same client.
        assert client_of(ask(conn, b"")) == ("192.0.2.7", 56324)
    with srv.raw() as conn:
        header = proxy_v2(("198.51.100.9", 4711), tlvs=b"\x04\x00\x03abc")  # NOOP TLV
        assert client_of(ask(conn, header)) == ("198.51.100.9", 4711)
    with srv.raw() as conn:
        header = proxy_v2(("2001:db8::7", 443))
        assert client_of(ask(conn, header)) == ("2001:db8::7", 443)
    with srv.raw() as conn:
        header = proxy_v1(("2001:db8::8", 8080), ("2001:db8::1", 80))
        assert client_of(ask(conn, header)) == ("2001:db8::8", 8080)
    srv.wait_for_line(r'^192\.0\.2\.7 - "GET /who HTTP/1\.1" 200')
    srv.wait_for_line(r'^2001:db8::7 - "GET /who HTTP/1\.1" 200')


def test_local_and_unknown_keep_the_real_peer(server):
    srv = server(APP, "--proxy-protocol")
    for header in (
        proxy_v2(("192.0.2.7", 1), local=True),
        proxy_v2(None),
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN 192.0.2.7 10.0.0.1 1 2\r\n",
    ):
        with srv.raw() as conn:
            client = client_of(ask(conn, header))
            assert client == ("127.0.0.1", conn.local_port), header


def test_untrusted_peer_is_refused(server, tmp_path):
    path = str(tmp_path / "app.sock")
    srv = server(
        APP,
        "--proxy-protocol",
        "--forwarded-allow-ips",
        "10.0.0.0/8",
        "--bind",
        "127.0.0.1:0",
        "--bind",
        f"unix:{path}",
    )
    with srv.raw() as conn:
        refused(conn, proxy_v1(("192.0.2.7", 1)) + http_request("GET", "/"))
        port = conn.local_port
    srv.wait_for_line(REFUSED.format(peer=rf"127\.0\.0\.1:{port}", why=r"the peer is not trusted"))
    # The worker goes on; a Unix-socket peer is trusted whatever the list says.
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(proxy_v1(("192.0.2.7", 5)) + http_request("GET", "/", host="x"))
        data = b""
        while b"}" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    report = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert client_of(report) == ("192.0.2.7", 5)


@pytest.mark.parametrize(
    "data",
    [
        http_request("GET", "/"),  # no header at all
        b"PROXY TCP4 192.0.2.7 10.0.0.1 99999 80\r\n" + http_request("GET", "/"),
        b"PROXY TCP4 not.an.ip 10.0.0.1 1 80\r\n" + http_request("GET", "/"),
        b"PROXY TCP4 " + b"1" * 120 + b"\r\n",
        proxy_v2(("192.0.2.7", 1)).replace(b"QUIT\n\x21", b"QUIT\n\x31"),  # version 3
    ],
    ids=["none", "bad-port", "bad-ip", "too-long", "v2-version"],
)
def test_missing_or_malformed_header_closes_the_connection(server, data):
    srv = server(APP, "--proxy-protocol")
    with srv.raw() as conn:
        refused(conn, data)
    srv.wait_for_line(REFUSED.format(peer=r"127\.0\.0\.1:\d+", why=""))
    # The worker goes on serving.
    with srv.raw() as conn:
        assert client_of(ask(conn, proxy_v1(("192.0.2.7", 1)))) == ("192.0.2.7", 1)


def test_a_header_cut_short_closes_quietly(server):
    # The client gave up (or a port check): a debug line, not a warning.
    srv = server(APP, "--proxy-protocol", "--log-level", "debug")
    with srv.raw() as conn:
        conn.send(proxy_v2(("192.0.2.7", 1))[:20])
        conn.sock.shutdown(socket.SHUT_WR)
        assert conn.read_to_eof(10) == b""
    srv.wait_for_line(r"PROXY protocol: 127\.0\.0\.1:\d+ closed before sending its header")
    assert not [line for line in srv.lines() if "PROXY protocol: connection from" in line]


def test_refusals_are_logged_at_most_once_a_second(server):
    srv = server(APP, "--proxy-protocol")
    for _ in range(20):
        with srv.raw() as conn:
            refused(conn, b"GET / HTTP/1.1\r\n\r\n")

    def counted() -> bool:
        with srv.raw() as conn:
            refused(conn, b"GET / HTTP/1.1\r\n\r\n")
        time.sleep(0.1)  # pace the probes: each is one more refusal to count
        return any("more refused since the last such line" in line for line in srv.lines())

    wait_until(counted, 10, interval=0.2, message="a line counting the refusals")
    lines = [line for line in srv.lines() if "PROXY protocol: connection from" in line]
    assert 2 <= len(lines) <= 4, lines


def test_a_silent_client_is_closed_after_the_header_read_timeout(server):
    srv = server(APP, "--proxy-protocol", "--header-read-timeout", "0.5", "--log-level", "debug")
    with srv.raw() as conn:
        conn.send(b"PROXY TCP4 192.0.2.7")  # and nothing more
        assert conn.closed_within(5) < 4
    srv.wait_for_line(r"PROXY protocol: no header from 127\.0\.0\.1:\d+ in time")


def test_tls_follows_the_header(server, certs):
    srv = server(APP, "--proxy-protocol", *certs.server_args())
    ctx = ssl.create_default_context()
    certs.ca.configure_trust(ctx)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
        raw.sendall(proxy_v2(("203.0.113.50", 6000)))
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(http_request("GET", "/", headers={"Connection": "close"}))
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    report = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert client_of(report) == ("203.0.113.50", 6000)
    assert report["wsgi.url_scheme"] == "https"
    # Without the header the handshake never starts: the connection is closed.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, OSError)):
            ctx.wrap_socket(raw, server_hostname="localhost")


def test_proxy_headers_are_trusted_by_the_address_in_the_header(server):
    # 127.0.0.0/8 is trusted: the proxy (127.0.0.1) may send the header, and a client
    # it names there from 127.0.0.5 is a trusted proxy itself, whose X-Forwarded-For
    # counts. A client named 192.0.2.7 is not: its own X-Forwarded-For is ignored.
    srv = server(APP, "--proxy-protocol", "--forwarded-allow-ips", "127.0.0.0/8")
    xff = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    with srv.raw() as conn:
        report = ask(conn, proxy_v1(("192.0.2.7", 1)), xff)
        assert (client_of(report), report["wsgi.url_scheme"]) == (("192.0.2.7", 1), "http")
    with srv.raw() as conn:
        report = ask(conn, proxy_v1(("127.0.0.5", 1)), xff)
        assert (client_of(report), report["wsgi.url_scheme"]) == (("203.0.113.9", 0), "https")


def test_http2_after_the_header(server):
    import h2.config
    import h2.connection
    import h2.events

    srv = server(APP, "--proxy-protocol")
    with srv.raw() as conn:
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        h2c.initiate_connection()
        h2c.send_headers(
            1,
            [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")],
            end_stream=True,
        )
        conn.send(proxy_v2(("192.0.2.70", 7)) + h2c.data_to_send())
        body = b""
        ended = False
        while not ended:
            data = conn.recv_some()
            assert data, "closed before the response ended"
            for event in h2c.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            conn.send(h2c.data_to_send())
    assert client_of(json.loads(body)) == ("192.0.2.70", 7)


# --- settings --------------------------------------------------------------------------
def test_setting_sources():
    assert settings_mod.from_sources({}, {}).proxy_protocol is False
    env = {"GRISTMILL_PROXY_PROTOCOL": "true"}
    assert settings_mod.from_sources({}, env).proxy_protocol is True
    assert settings_mod.from_sources({"proxy_protocol": False}, env).proxy_protocol is False


# --- serve() reads FORWARDED_ALLOW_IPS as the command line does ----------------------------
SERVE = (
    "import logging, sys, gristmill\n"
    "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
    "sys.exit(gristmill.serve('proxy_app:wsgi', port=0))\n"
)


@pytest.mark.parametrize("allow, seen", [("10.1.1.1", "127.0.0.1"), ("127.0.0.1", "203.0.113.9")])
def test_serve_honours_forwarded_allow_ips_from_the_environment(server, allow, seen):
    srv = server(launcher=[sys.executable, "-c", SERVE], env={"FORWARDED_ALLOW_IPS": allow})
    report = get(srv.url + "/", {"X-Forwarded-For": "203.0.113.9"})
    assert report["REMOTE_ADDR"] == seen


def test_serve_keyword_wins_over_the_environment(server):
    code = SERVE.replace("port=0", "port=0, forwarded_allow_ips='127.0.0.1'")
    srv = server(launcher=[sys.executable, "-c", code], env={"FORWARDED_ALLOW_IPS": "10.1.1.1"})
    report = get(srv.url + "/", {"X-Forwarded-For": "203.0.113.9"})
    assert report["REMOTE_ADDR"] == "203.0.113.9"
