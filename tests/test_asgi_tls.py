"""ASGI over TLS: `https`/`wss` schemes and the ASGI `tls` extension (with mTLS)."""

from __future__ import annotations

import asyncio
import json

import httpx
from websockets.asyncio.client import connect

from test_tls import client_ctx

APP = "asgi_tls_app:app"


def test_https_scope_and_tls_extension_with_client_certificate(server, certs):
    srv = server(
        APP,
        *certs.server_args(
            "--ssl-ca-certs", str(certs.client_ca), "--ssl-client-verify", "optional"
        ),
    )
    ctx = client_ctx(certs, cert=certs.client)
    with httpx.Client(verify=ctx, timeout=10) as c:
        data = c.get(f"https://localhost:{srv.port}/").json()
    assert data["scheme"] == "https"
    tls = data["tls"]
    assert tls["tls_version"] in (0x0303, 0x0304)
    assert tls["cipher_suite"] > 0
    assert tls["client_cert_chain"] == [certs.client.cert_chain_pems[0].bytes().decode()]
    assert "CN=gm-test-client" in tls["client_cert_name"]
    assert tls["client_cert_error"] is None
    # Without a client certificate: the extension is there, the chain empty.
    with httpx.Client(verify=client_ctx(certs), timeout=10) as c:
        data = c.get(f"https://localhost:{srv.port}/").json()
    assert data["tls"]["client_cert_chain"] == [] and data["tls"]["client_cert_name"] is None


def test_http2_over_tls_scope(server, certs):
    srv = server(APP, *certs.server_args())
    with httpx.Client(verify=client_ctx(certs, alpn=("h2", "http/1.1")), http2=True) as c:
        data = c.get(f"https://localhost:{srv.port}/").json()
    assert data["http_version"] == "2" and data["scheme"] == "https"


def test_cleartext_scope_has_no_tls_extension(server):
    data = json.loads(server(APP).get("/").text)
    assert data["scheme"] == "http" and data["tls"] is None


def test_wss_scheme(server, certs):
    srv = server(APP, *certs.server_args())

    async def go():
        async with connect(f"wss://localhost:{srv.port}/ws", ssl=client_ctx(certs)) as ws:
            return await ws.recv()

    assert asyncio.run(asyncio.wait_for(go(), 10)) == "wss"
