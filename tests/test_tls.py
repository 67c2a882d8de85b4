"""TLS with rustls: HTTPS, ALPN both ways, TLS 1.2 and 1.3, key formats, certificate
chains, mutual TLS with the client certificate in the environ, start-up errors, and the
HTTP/2 protocol checks over TLS after ALPN chose h2.

Certificates are generated at test time (``_certs.py``).
"""

from __future__ import annotations

import json
import ssl
import subprocess

import httpx
import pytest
import trustme
from hyperframe.frame import GoAwayFrame, SettingsFrame

from _certs import KEY_PASSWORD, make_certs
from _h2 import PROTOCOL_ERROR, H2Raw, h2_tls_context

APP = "h2_app:application"


def client_ctx(certs, alpn=("http/1.1",), min_v=None, max_v=None, cert=None):
    ctx = h2_tls_context(certs.ca, list(alpn))
    if min_v:
        ctx.minimum_version = min_v
    if max_v:
        ctx.maximum_version = max_v
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


def tls_get(port, ctx, path="/env") -> tuple[str, str | None, bytes]:
    """One HTTP/1.1 request over TLS: (TLS version, ALPN protocol, body)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            version, alpn = s.version(), s.selected_alpn_protocol()
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return version, alpn, data


def body_json(data: bytes) -> dict:
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


@pytest.fixture(scope="module")
def tls_srv(certs):
    from _support import Server

    s = Server([APP, "--threads", "4", *certs.server_args()])
    s.wait_ready()
    yield s
    s.kill()


def test_https_readiness_and_environ(tls_srv, certs):
    assert tls_srv.url.startswith("https://127.0.0.1:")
    with httpx.Client(verify=client_ctx(certs, alpn=("http/1.1",)), timeout=10) as c:
        r = c.get(f"https://localhost:{tls_srv.port}/env")
    env = r.json()
    assert r.http_version == "HTTP/1.1"
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTPS"] == "on"
    assert env["SSL_PROTOCOL"] == "TLSv1.3"
    assert env["SSL_CIPHER"].startswith("TLS13_")
    assert env["SSL_CLIENT_VERIFY"] == "NONE"
    assert env["SSL_CLIENT_CERT"] is None


def test_environ_passes_the_wsgi_validator_over_tls(server, certs):
    srv = server("environ_app:application", *certs.server_args())
    with httpx.Client(verify=client_ctx(certs), timeout=10, http2=True) as c:
        r = c.get(f"https://localhost:{srv.port}/p")
    assert r.status_code == 200, r.text
    assert r.json()["wsgi.url_scheme"] == "https"


@pytest.mark.parametrize(
    "version,name", [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")]
)
def test_tls_12_and_13(tls_srv, certs, version, name):
    ctx = client_ctx(certs, alpn=("http/1.1",), min_v=version, max_v=version)
    got, alpn, data = tls_get(tls_srv.port, ctx)
    assert got == name and alpn == "http/1.1"
    assert body_json(data)["SSL_PROTOCOL"] == name


def test_min_version_13_refuses_tls12_quietly(server, certs):
    srv = server(APP, *certs.server_args("--ssl-min-version", "1.3"))
    ctx = client_ctx(certs, max_v=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        tls_get(srv.port, ctx)
    got, _, _ = tls_get(srv.port, client_ctx(certs))
    assert got == "TLSv1.3"
    # A failed handshake is a debug line, not an error.
    assert not [line for line in srv.lines() if "[ERROR]" in line or "[WARNING]" in line]


def test_plain_http_to_tls_port_is_not_an_error(tls_srv, certs):
    import socket

    mark = tls_srv.mark()
    with socket.create_connection(("127.0.0.1", tls_srv.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(1024)  # a TLS alert or a close
    got, _, _ = tls_get(tls_srv.port, client_ctx(certs))
    assert got == "TLSv1.3"
    assert not [line for line in tls_srv.lines(mark) if "[ERROR]" in line]


@pytest.mark.parametrize(
    "offer,expected",
    [(("h2", "http/1.1"), "h2"), (("http/1.1",), "http/1.1"), (("h2",), "h2"), ((), None)],
)
def test_alpn_negotiation(tls_srv, certs, offer, expected):
    import socket

    ctx = client_ctx(certs, alpn=offer)
    with socket.create_connection(("127.0.0.1", tls_srv.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == expected


def test_alpn_with_http1_only(server, certs):
    srv = server(APP, *certs.server_args("--http", "1"))
    _, alpn, data = tls_get(srv.port, client_ctx(certs))
    assert alpn == "http/1.1"
    assert body_json(data)["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_alpn_with_http2_only(server, certs):
    srv = server(APP, *certs.server_args("--http", "2"))
    with pytest.raises(ssl.SSLError):  # no common protocol: no_application_protocol alert
        tls_get(srv.port, client_ctx(certs, alpn=("http/1.1",)))
    with httpx.Client(verify=client_ctx(certs), http2=True, timeout=10) as c:
        r = c.get(f"https://localhost:{srv.port}/env")
    assert r.http_version == "HTTP/2"


def test_httpx_http2_over_tls(tls_srv, certs):
    with httpx.Client(verify=client_ctx(certs), http2=True, timeout=20) as c:
        r = c.get(f"https://localhost:{tls_srv.port}/env")
        assert r.http_version == "HTTP/2"
        env = r.json()
        assert env["SERVER_PROTOCOL"] == "HTTP/2"
        assert env["wsgi.url_scheme"] == "https"
        assert env["HTTP_HOST"] == f"localhost:{tls_srv.port}"
        payload = b"z" * (3 * 1024 * 1024 + 7)
        r = c.post(f"https://localhost:{tls_srv.port}/echo", content=payload)
        assert r.content == payload


def test_curl_http2_over_tls(tls_srv, certs, tmp_path):
    ca = tmp_path / "ca.pem"
    certs.ca.cert_pem.write_to_path(str(ca))
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--http2",
            "--cacert",
            str(ca),
            "-w",
            "\n%{http_version}",
            f"https://localhost:{tls_srv.port}/env",
        ],
        capture_output=True,
        timeout=20,
        check=True,
        text=True,
    ).stdout
    body, version = out.rsplit("\n", 1)
    assert version == "2"
    assert json.loads(body)["SERVER_PROTOCOL"] == "HTTP/2"


# --- HTTP/2 protocol checks over TLS ------------------------------------------------
def test_invalid_preface_after_alpn_h2_gets_goaway(tls_srv, certs):
    """After ALPN chose h2, a bad preface is an HTTP/2 error, not an HTTP/1.1 400."""
    ctx = client_ctx(certs, alpn=("h2",))
    with H2Raw(tls_srv.port, tls=ctx, handshake=False) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        frames = conn.frames_until(GoAwayFrame)
        assert isinstance(frames[0], SettingsFrame)
        assert frames[-1].error_code == PROTOCOL_ERROR


def test_h2_frames_over_tls(tls_srv, certs):
    with H2Raw(tls_srv.port, tls=client_ctx(certs, alpn=("h2",))) as conn:
        sids = [conn.request(f"/t{i}") for i in range(20)]
        for i, sid in enumerate(sids):
            assert conn.response(sid).body == f"HTTP/2 /t{i}".encode()
        conn.send(conn.headers_frame(2, conn.request_headers()))  # even stream id
        conn.expect_goaway(PROTOCOL_ERROR)


# --- key formats and chains ----------------------------------------------------------
@pytest.fixture(scope="module")
def rsa_certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs-rsa"), trustme.KeyType.RSA)


@pytest.mark.parametrize("kind", ["pkcs8", "traditional", "encrypted"])
@pytest.mark.parametrize("keys", ["ec", "rsa"])
def test_key_formats(server, certs, rsa_certs, kind, keys):
    """PKCS#8; PKCS#1 (RSA) / SEC1 (EC); encrypted PKCS#8 with the password from the
    environment. The client trusts only the root: the chain must be sent."""
    c = certs if keys == "ec" else rsa_certs
    key = {"pkcs8": c.key_pkcs8, "traditional": c.key_traditional, "encrypted": c.key_encrypted}
    first_line = key[kind].read_text().splitlines()[0]
    expected = {
        "pkcs8": "-----BEGIN PRIVATE KEY-----",
        "traditional": f"-----BEGIN {'EC' if keys == 'ec' else 'RSA'} PRIVATE KEY-----",
        "encrypted": "-----BEGIN ENCRYPTED PRIVATE KEY-----",
    }[kind]
    assert first_line == expected
    env = {"GRISTMILL_SSL_KEYFILE_PASSWORD": KEY_PASSWORD} if kind == "encrypted" else None
    srv = server(APP, "--ssl-certfile", str(c.chain), "--ssl-keyfile", str(key[kind]), env=env)
    got, _, data = tls_get(srv.port, client_ctx(c))
    assert got == "TLSv1.3"
    assert body_json(data)["wsgi.url_scheme"] == "https"


# --- start-up errors -----------------------------------------------------------------
def test_bad_tls_files_are_clear_startup_errors(gristmill_exit, certs, tmp_path):
    missing = tmp_path / "nope.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        (["--ssl-certfile", str(missing), "--ssl-keyfile", str(certs.key_pkcs8)], "cannot read"),
        (["--ssl-certfile", str(certs.chain), "--ssl-keyfile", str(missing)], "cannot read"),
        (["--ssl-certfile", str(garbage), "--ssl-keyfile", str(certs.key_pkcs8)], "CERTIFICATE"),
        (["--ssl-certfile", str(certs.chain), "--ssl-keyfile", str(garbage)], "private key"),
        (
            ["--ssl-certfile", str(certs.chain), "--ssl-keyfile", str(certs.other_key)],
            "does not match the certificate",
        ),
        (
            ["--ssl-certfile", str(certs.chain), "--ssl-keyfile", str(certs.key_encrypted)],
            "is encrypted",
        ),
        (
            [
                "--ssl-certfile",
                str(certs.chain),
                "--ssl-keyfile",
                str(certs.key_encrypted),
                "--ssl-keyfile-password",
                "wrong",
            ],
            "cannot decrypt",
        ),
        (["--ssl-certfile", str(certs.chain)], "must be given together"),
        (
            [*certs.server_args(), "--ssl-client-verify", "required"],
            "ssl_client_verify needs ssl_ca_certs",
        ),
    ]
    for args, message in cases:
        code, out = gristmill_exit([APP, "--port", "0", *args])
        assert code == 2, (args, out)
        assert message in out, (args, out)
        assert "Traceback" not in out
        assert "Listening" not in out


# --- mutual TLS ----------------------------------------------------------------------
def test_mtls_required(server, certs):
    srv = server(
        APP,
        *certs.server_args(
            "--ssl-ca-certs", str(certs.client_ca), "--ssl-client-verify", "required"
        ),
    )
    # Without a certificate: refused (TLS 1.3 reports it on the first read).
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        _, _, data = tls_get(srv.port, client_ctx(certs))
        if not data:
            raise ssl.SSLError("closed")
    # A certificate from a CA the server does not trust: refused too.
    stranger = trustme.CA().issue_cert("stranger.example")
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        _, _, data = tls_get(srv.port, client_ctx(certs, cert=stranger))
        if not data:
            raise ssl.SSLError("closed")
    _, _, data = tls_get(srv.port, client_ctx(certs, cert=certs.client))
    env = body_json(data)
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert env["SSL_CLIENT_CERT"] == certs.client.cert_chain_pems[0].bytes().decode()
    assert "CN=gm-test-client" in env["SSL_CLIENT_S_DN"]
    assert env["SSL_CLIENT_I_DN"]
    assert not [line for line in srv.lines() if "[ERROR]" in line]


def test_mtls_optional(server, certs):
    srv = server(
        APP,
        *certs.server_args(
            "--ssl-ca-certs", str(certs.client_ca), "--ssl-client-verify", "optional"
        ),
    )
    _, _, data = tls_get(srv.port, client_ctx(certs))
    env = body_json(data)
    assert env["SSL_CLIENT_VERIFY"] == "NONE" and env["SSL_CLIENT_CERT"] is None
    # A certificate that is sent must verify, even when optional.
    stranger = trustme.CA().issue_cert("stranger.example")
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        _, _, data = tls_get(srv.port, client_ctx(certs, cert=stranger))
        if not data:
            raise ssl.SSLError("closed")
    _, _, data = tls_get(srv.port, client_ctx(certs, cert=certs.client))
    env = body_json(data)
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert "CN=gm-test-client" in env["SSL_CLIENT_S_DN"]
    # Over HTTP/2 too.
    ctx = client_ctx(certs, cert=certs.client)
    with httpx.Client(verify=ctx, http2=True, timeout=10) as c:
        r = c.get(f"https://localhost:{srv.port}/env")
    assert r.http_version == "HTTP/2"
    assert r.json()["SSL_CLIENT_VERIFY"] == "SUCCESS"
