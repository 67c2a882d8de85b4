"""gristmill behind a real HAProxy, started here with the configurations
docs/deployment.md shows ("Behind HAProxy", "PROXY protocol"), over TCP and a Unix
socket, in every execution mode: ``send-proxy`` and ``send-proxy-v2`` give the
application the client's address, TLS passes through after the PROXY header, a peer
that is not trusted or a proxy that sends no header is refused, and in HTTP mode
``option forwardfor`` sets the client address.

Clients connect to HAProxy from 127.0.0.2, so the address the application sees is told
apart from HAProxy's own 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import ssl

import httpx
import pytest

from _proxy import EdgeProxies, client_of, docs_config, get
from _support import Server, every_mode, free_port

MODES = every_mode("proxy_app:wsgi", "proxy_app:asgi")
CLIENT_ADDR = "127.0.0.2"
DOC_BIND = "bind :443"
DOC_UPSTREAM = "unix@/run/gristmill/app.sock"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def edge(tmp_path):
    proxies = EdgeProxies(tmp_path)
    yield proxies
    proxies.close()


def _start(server, tmp_path, mode: str, *args: str) -> tuple[Server, str]:
    """gristmill on a TCP port and a Unix socket: (server, socket path)."""
    app, env = MODES[mode]
    path = str(tmp_path / "app.sock")
    srv = server(*app, "--bind", "127.0.0.1:0", "--bind", f"unix:{path}", *args, env=env)
    return srv, path


def _upstreams(srv: Server, path: str) -> dict[str, str]:
    return {"tcp": f"127.0.0.1:{srv.port}", "unix": f"unix@{path}"}


def tcp_haproxy(edge: EdgeProxies, upstream: str, send: str = "send-proxy-v2") -> int:
    """HAProxy in TCP mode (the docs' PROXY protocol configuration) in front of
    ``upstream``, sending ``send`` (``send-proxy``, ``send-proxy-v2`` or nothing);
    returns its port."""
    port = free_port()
    config = docs_config(
        "haproxy-tcp",
        {DOC_BIND: f"bind 127.0.0.1:{port}", f"{DOC_UPSTREAM} send-proxy-v2": f"{upstream} {send}"},
    )
    edge.haproxy(config, [port])
    return port


def http_haproxy(edge: EdgeProxies, upstream: str) -> int:
    """HAProxy in HTTP mode (the docs' configuration) in front of ``upstream``."""
    port = free_port()
    config = docs_config(
        "haproxy-http", {"bind :80": f"bind 127.0.0.1:{port}", DOC_UPSTREAM: upstream}
    )
    edge.haproxy(config, [port])
    return port


def ask_from(port: int, headers: str = "") -> tuple[dict, int]:
    """GET / through ``port`` from CLIENT_ADDR on a fresh connection: (the app's report,
    the client's own port)."""
    with socket.socket() as s:
        s.settimeout(10)
        s.bind((CLIENT_ADDR, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), data
        return json.loads(body), s.getsockname()[1]


def closed_without_answer(port: int) -> None:
    """A request through ``port`` gets no answer: the connection just closes."""
    with socket.socket() as s:
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            assert s.recv(65536) == b""
        except ConnectionResetError:
            pass


@pytest.mark.parametrize("mode", list(MODES))
def test_send_proxy_gives_the_app_the_client_address(server, edge, tmp_path, mode):
    srv, path = _start(server, tmp_path, mode, "--proxy-protocol")
    for kind, upstream in _upstreams(srv, path).items():
        for send in ("send-proxy", "send-proxy-v2"):
            port = tcp_haproxy(edge, upstream, send)
            report, client_port = ask_from(port)
            assert client_of(report) == (CLIENT_ADDR, client_port), (kind, send, report)
            if "server" in report:  # ASGI: a Unix socket's server is [path, None]
                assert report["server"] == (
                    [path, None] if kind == "unix" else ["127.0.0.1", srv.port]
                )
    srv.wait_for_line(r'^127\.0\.0\.2 - "GET / HTTP/1\.1" 200')


@pytest.mark.parametrize("mode", list(MODES))
def test_tls_passes_through_after_the_header(server, edge, tmp_path, certs, mode):
    srv, path = _start(server, tmp_path, mode, "--proxy-protocol", *certs.server_args())
    ctx = ssl.create_default_context()
    certs.ca.configure_trust(ctx)
    for upstream in _upstreams(srv, path).values():
        port = tcp_haproxy(edge, upstream)
        transport = httpx.HTTPTransport(local_address=CLIENT_ADDR, verify=ctx, http2=True)
        with httpx.Client(transport=transport, timeout=10) as client:
            resp = client.get(f"https://127.0.0.1:{port}/")
        assert (resp.status_code, resp.http_version) == (200, "HTTP/2"), resp.text
        report = resp.json()
        assert client_of(report)[0] == CLIENT_ADDR
        assert report.get("wsgi.url_scheme", report.get("scheme")) == "https"


def test_untrusted_proxy_is_refused(server, edge, tmp_path):
    # HAProxy connects from 127.0.0.1, which this list leaves out; over the Unix socket
    # it is trusted all the same.
    srv, path = _start(
        server, tmp_path, "wsgi-inline", "--proxy-protocol", "--forwarded-allow-ips", "192.0.2.1"
    )
    ups = _upstreams(srv, path)
    closed_without_answer(tcp_haproxy(edge, ups["tcp"]))
    srv.wait_for_line(
        r"PROXY protocol: connection from 127\.0\.0\.1:\d+ closed: the peer is not trusted"
    )
    report, client_port = ask_from(tcp_haproxy(edge, ups["unix"]))
    assert client_of(report) == (CLIENT_ADDR, client_port)


def test_a_proxy_that_sends_no_header_is_refused(server, edge, tmp_path):
    srv, path = _start(server, tmp_path, "wsgi-inline", "--proxy-protocol")
    for upstream in _upstreams(srv, path).values():
        closed_without_answer(tcp_haproxy(edge, upstream, send=""))
    srv.wait_for_line(r"closed: no PROXY protocol header \(the connection starts with \"GET / ")


@pytest.mark.parametrize("mode", list(MODES))
def test_http_mode_forwardfor(server, edge, tmp_path, mode):
    srv, path = _start(server, tmp_path, mode)
    for upstream in _upstreams(srv, path).values():
        port = http_haproxy(edge, upstream)
        # A client trying to pass itself off as someone else.
        spoof = "X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6;proto=https\r\n"
        report, _ = ask_from(port, spoof)
        assert client_of(report)[0] == CLIENT_ADDR, report
        assert report.get("wsgi.url_scheme", report.get("scheme")) == "http"
    # And with httpx, as any client would.
    report = get(
        f"http://127.0.0.1:{port}/", transport=httpx.HTTPTransport(local_address=CLIENT_ADDR)
    )
    assert client_of(report)[0] == CLIENT_ADDR


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_haproxy_health_checks_send_the_header_too(server, edge, tmp_path, send):
    # HTTP checks over the PROXY protocol (version 2: the LOCAL command, which keeps
    # the real peer) are served like any request, without a refusal.
    srv, path = _start(server, tmp_path, "wsgi-inline", "--proxy-protocol")
    port = free_port()
    config = docs_config(
        "haproxy-tcp",
        {
            DOC_BIND: f"bind 127.0.0.1:{port}",
            "backend gristmill\n": "backend gristmill\n    option httpchk GET /health\n",
            f"{DOC_UPSTREAM} send-proxy-v2": f"unix@{path} {send} check inter 100ms",
        },
    )
    edge.haproxy(config, [port])
    srv.wait_for_line(r' - "GET /health HTTP/1\.[01]" 200')
    assert not [line for line in srv.lines() if "PROXY protocol" in line], srv.output()


@pytest.mark.parametrize("mode", list(MODES))
def test_http_mode_with_send_proxy_v2_over_tls(server, edge, tmp_path, certs, mode):
    # HAProxy in HTTP mode opens TLS to gristmill (`ssl verify none`) after the PROXY
    # header. The PROXY address (127.0.0.2) is the peer for the proxy headers and is
    # not trusted (the default list is 127.0.0.1 and ::1): HAProxy's X-Forwarded-Proto
    # is ignored and the scheme is the TLS connection's own.
    srv, path = _start(server, tmp_path, mode, "--proxy-protocol", *certs.server_args())
    for upstream in _upstreams(srv, path).values():
        port = http_haproxy(edge, f"{upstream} send-proxy-v2 ssl verify none")
        report, client_port = ask_from(port)
        assert client_of(report) == (CLIENT_ADDR, client_port)
        assert report.get("wsgi.url_scheme", report.get("scheme")) == "https"
