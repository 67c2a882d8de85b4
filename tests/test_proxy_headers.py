"""Proxy headers from trusted peers (``src/http/proxy.rs``), WSGI side and settings.

A real gristmill serves ``proxy_app:wsgi``, which reports what the server decided.
Clients on 127.0.0.1 are trusted by default; ``--forwarded-allow-ips`` that leaves it
out makes the same headers change nothing. The last tests put a real nginx (started
here, config in ``tmp_path``) in front of gristmill. The ASGI side is in
``test_asgi_proxy_headers.py``; the pure parsing has Rust unit tests.
"""

from __future__ import annotations

import ssl

import httpx
import pytest

import gristmill.settings as settings_mod
from _proxy import FULL, EdgeProxies, get
from _support import WSGI_MODES, free_port
from gristmill.errors import ConfigError

APP = "proxy_app:wsgi"
MODES = WSGI_MODES


@pytest.fixture(params=list(MODES))
def mode(request):
    return MODES[request.param]


def test_trusted_proxy_sets_client_scheme_host_and_prefix(server, mode):
    srv = server(APP, *mode)
    env = get(srv.url + "/store/cart", FULL)
    # The right-most untrusted hop: the client's own first entry could be a lie.
    assert env["REMOTE_ADDR"] == "198.51.100.7"
    assert env["REMOTE_PORT"] == "0"
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_HOST"] == "shop.example:8443"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("shop.example", "8443")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/store", "/cart")
    # The headers themselves still reach the application; HTTPS describes the connection.
    assert env["HTTP_X_FORWARDED_FOR"] == FULL["X-Forwarded-For"]
    assert env["HTTPS"] is None
    srv.wait_for_line(r'^198\.51\.100\.7 - "GET /store/cart HTTP/1\.1" 200')


def test_forwarded_header_wins_over_x_forwarded(server, mode):
    srv = server(APP, *mode)
    env = get(
        srv.url + "/",
        {
            "Forwarded": 'for="[2001:db8::7]:4711";proto=https;host=a.example',
            "X-Forwarded-For": "192.0.2.1",
            "X-Forwarded-Proto": "http",
            "X-Forwarded-Host": "b.example",
        },
    )
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8::7", "4711")
    assert env["wsgi.url_scheme"] == "https"
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == (
        "a.example",
        "a.example",
        "443",
    )


def test_untrusted_peer_changes_nothing(server, mode):
    srv = server(APP, *mode, "--forwarded-allow-ips", "10.0.0.0/8,192.0.2.1")
    env = get(srv.url + "/store/cart", {**FULL, "Forwarded": "for=192.0.2.60;proto=https"})
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] != "0"
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"] == f"127.0.0.1:{srv.port}"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(srv.port))
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/store/cart")
    assert env["HTTP_X_FORWARDED_FOR"] == FULL["X-Forwarded-For"]
    assert env["HTTP_FORWARDED"] == "for=192.0.2.60;proto=https"
    srv.wait_for_line(r'^127\.0\.0\.1 - "GET /store/cart HTTP/1\.1" 200')


def test_no_proxy_headers_ignores_them(server):
    srv = server(APP, "--no-proxy-headers")
    env = get(srv.url + "/", FULL)
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("127.0.0.1", "http")


def test_http2_authority_is_replaced_too(server, mode):
    srv = server(APP, *mode)
    env = get(
        srv.url + "/",
        {"X-Forwarded-Host": "h2.example", "X-Forwarded-Proto": "https"},
        http1=False,
        http2=True,
    )
    assert env["HTTP_HOST"] == "h2.example"
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["wsgi.url_scheme"]) == (
        "h2.example",
        "443",
        "https",
    )


def test_forwarded_allow_ips_environment_variable(server):
    srv = server(APP, env={"FORWARDED_ALLOW_IPS": "10.1.1.1"})
    assert get(srv.url + "/", FULL)["REMOTE_ADDR"] == "127.0.0.1"
    # The setting's own variable wins over it.
    srv = server(
        APP, env={"FORWARDED_ALLOW_IPS": "10.1.1.1", "GRISTMILL_FORWARDED_ALLOW_IPS": "127.0.0.0/8"}
    )
    assert get(srv.url + "/", FULL)["REMOTE_ADDR"] == "198.51.100.7"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "not-an-ip"},
        {"X-Forwarded-For": "1.2.3.4, , 5.6.7.8"},
        {"X-Forwarded-For": "999.1.1.1"},
        {"X-Forwarded-For": ", ".join(["192.0.2.1"] * 33)},
        {"X-Forwarded-Proto": "gopher"},
        {"X-Forwarded-Host": "bad host/../x"},
        {"X-Forwarded-Port": "99999"},
        {"X-Forwarded-Prefix": "no-slash"},
        {"Forwarded": 'for="unterminated'},
        {"Forwarded": "for=1.2.3.4;for=5.6.7.8"},
    ],
    ids=lambda h: next(iter(h.items()))[0] + ":" + next(iter(h.values()))[:20],
)
def test_malformed_values_are_ignored_with_a_debug_line(server, headers):
    srv = server(APP, "--log-level", "debug")
    env = get(srv.url + "/x", headers)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"] == f"127.0.0.1:{srv.port}"
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/x")
    srv.wait_for_line(r"proxy headers: .*; ignored")


def test_unix_socket_peers_are_always_trusted(server, tmp_path):
    path = str(tmp_path / "app.sock")
    srv = server("--uds", path, APP, "--forwarded-allow-ips", "", expect_ready=False)
    srv.wait_for_line(rf"Listening on unix:{path} \(1 worker\)")
    env = get(
        "http://localhost/",
        {"X-Forwarded-For": "203.0.113.5"},
        transport=httpx.HTTPTransport(uds=path),
    )
    assert env["REMOTE_ADDR"] == "203.0.113.5"


# --- settings -----------------------------------------------------------------------------
def from_sources(cli=None, environ=None):
    return settings_mod.from_sources(dict(cli or {}), dict(environ or {}))


def test_settings_defaults_and_sources():
    s = from_sources()
    assert (s.proxy_headers, s.forwarded_allow_ips) == (True, "127.0.0.1,::1")
    assert from_sources(environ={"FORWARDED_ALLOW_IPS": "*"}).forwarded_allow_ips == "*"
    both = {"FORWARDED_ALLOW_IPS": "*", "GRISTMILL_FORWARDED_ALLOW_IPS": "10.0.0.0/8"}
    assert from_sources(environ=both).forwarded_allow_ips == "10.0.0.0/8"
    cli = {"forwarded_allow_ips": "192.0.2.1"}
    assert from_sources(cli, {"FORWARDED_ALLOW_IPS": "*"}).forwarded_allow_ips == "192.0.2.1"
    ok = "10.0.0.0/8, 2001:db8::/32,192.0.2.1,*, ::ffff:10.0.0.1"
    assert from_sources({"forwarded_allow_ips": ok}).forwarded_allow_ips == ok


@pytest.mark.parametrize(
    "bad", ["localhost", "10.0.0.0/33", "10.0.0.0/255.0.0.0", "fe80::1%eth0", "1.2.3"]
)
def test_settings_refuse_a_bad_list(bad):
    with pytest.raises(ConfigError, match="forwarded_allow_ips"):
        from_sources({"forwarded_allow_ips": f"127.0.0.1,{bad}"})


def test_bad_list_on_the_command_line_exits_2(gristmill_exit):
    code, out = gristmill_exit(["--forwarded-allow-ips", "127.0.0.1,proxy.local", APP])
    assert code == 2 and "forwarded_allow_ips: 'proxy.local' is not an IP address" in out


# --- behind a real nginx ------------------------------------------------------------------
# The lines docs/server-behavior.md ("Behind a proxy") recommends.
PROXY_LINES = """
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header Forwarded "";
"""

NGINX_SITE = """
    server {{
        listen 127.0.0.1:{http_port};
        location / {{ {proxy} }}
    }}
    server {{
        listen 127.0.0.1:{https_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ {proxy} }}
    }}
"""


@pytest.fixture
def nginx(tmp_path, certs):
    """Start nginx in front of an upstream port: ``start(upstream) -> (http, https)``."""
    proxies = EdgeProxies(tmp_path)

    def start(upstream: int | str) -> tuple[int, int]:
        """``upstream``: gristmill's TCP port, or the path of its Unix socket."""
        http_port, https_port = free_port(), free_port()
        target = f"unix:{upstream}:" if isinstance(upstream, str) else f"127.0.0.1:{upstream}"
        site = NGINX_SITE.format(
            http_port=http_port,
            https_port=https_port,
            cert=certs.chain,
            key=certs.key_pkcs8,
            proxy=PROXY_LINES.format(upstream=target),
        )
        proxies.nginx(site, [http_port, https_port])
        return http_port, https_port

    yield start
    proxies.close()


# The client connects to nginx from 127.0.0.2 (loopback, not trusted), so the address
# the application sees is told apart from nginx's own 127.0.0.1 (trusted).
CLIENT_ADDR = "127.0.0.2"


def test_behind_nginx_the_app_sees_the_client(server, nginx, mode):
    srv = server(APP, *mode)
    http_port, _ = nginx(srv.port)
    env = get(
        f"http://127.0.0.1:{http_port}/page",
        # A client trying to pass itself off as someone else.
        {"X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6;proto=https"},
        transport=httpx.HTTPTransport(local_address=CLIENT_ADDR),
    )
    assert env["REMOTE_ADDR"] == CLIENT_ADDR
    assert env["HTTP_X_FORWARDED_FOR"] == f"6.6.6.6, {CLIENT_ADDR}"
    assert env["HTTP_FORWARDED"] is None  # nginx dropped the client's own
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"] == f"127.0.0.1:{http_port}"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(http_port))
    srv.wait_for_line(r'^127\.0\.0\.2 - "GET /page HTTP/1\.1" 200')


def test_behind_nginx_tls_the_app_sees_https(server, nginx, certs):
    srv = server(APP)
    _, https_port = nginx(srv.port)
    ctx = ssl.create_default_context()
    certs.ca.configure_trust(ctx)
    env = get(
        f"https://127.0.0.1:{https_port}/secure",
        None,
        transport=httpx.HTTPTransport(local_address=CLIENT_ADDR, verify=ctx),
    )
    assert env["REMOTE_ADDR"] == CLIENT_ADDR
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_HOST"] == f"127.0.0.1:{https_port}"
    assert env["SERVER_PORT"] == str(https_port)
    # The hop from nginx to gristmill is cleartext.
    assert env["HTTPS"] is None


def test_behind_nginx_over_a_unix_socket(server, nginx, tmp_path):
    path = str(tmp_path / "app.sock")
    srv = server("--uds", path, APP, expect_ready=False)
    srv.wait_for_line(rf"Listening on unix:{path} \(1 worker\)")
    http_port, _ = nginx(path)
    env = get(
        f"http://127.0.0.1:{http_port}/",
        {"X-Forwarded-For": "6.6.6.6"},
        transport=httpx.HTTPTransport(local_address=CLIENT_ADDR),
    )
    # A Unix-socket peer is trusted; nginx's appended hop is the client.
    assert env["REMOTE_ADDR"] == CLIENT_ADDR
    assert env["HTTP_HOST"] == f"127.0.0.1:{http_port}"
