"""HTTP/3 over QUIC (``--http3``), driven by a real HTTP/3 client (aioquic, ``_h3.py``):
requests and bodies both ways in every execution mode, concurrency on one connection,
a client that goes away, the graceful stop, ``Alt-Svc`` over HTTP/1.1 and HTTP/2, and
several workers sharing the port over SO_REUSEPORT."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import time

import httpx
import pytest

from _h3 import H3_NO_ERROR, H3Closed, h3_connect, run, sha_line
from _support import every_mode, wait_until

pytestmark = pytest.mark.timeout(120)

WSGI = "h3_app:application"
ASGI = "h3_app:app"
MODES = every_mode(WSGI, ASGI)


def h3_server(server, certs, target_args, env=None, *extra):
    return server(*target_args, "--http3", *certs.server_args(*extra), env=env)


@pytest.fixture(params=list(MODES))
def mode(request):
    return request.param


def test_get_post_stream_in_every_mode(server, certs, mode):
    args, env = MODES[mode]
    srv = h3_server(server, certs, args, env)
    asgi = mode.startswith("asgi")

    async def main():
        async with h3_connect(srv.port, certs) as conn:
            r = await conn.get("/env?x=1")
            assert r.status == 200
            env = json.loads(r.body)
            if asgi:
                assert env["http_version"] == "3"
                assert env["scheme"] == "https"
                assert env["tls"] is True
                assert ["host", "localhost"] in env["headers"]
            else:
                assert env["SERVER_PROTOCOL"] == "HTTP/3"
                assert env["wsgi.url_scheme"] == "https"
                assert env["HTTP_HOST"] == "localhost"
                assert env["SSL_PROTOCOL"] == "TLSv1.3"
                assert env["QUERY_STRING"] == "x=1"
            assert r.header("date")
            assert r.header("alt-svc") is None  # HTTP/3 responses need no pointer
            # A body of several MiB, with and without a declared length.
            data = os.urandom(5 << 20)
            r = await conn.request(
                "POST", "/sha", headers=[("content-length", str(len(data)))], body=data
            )
            assert (r.status, r.text) == (200, sha_line(data))
            r = await conn.request("POST", "/sha", body=data[: 3 << 20])
            assert (r.status, r.text) == (200, sha_line(data[: 3 << 20]))
            # A streamed response, read as it comes.
            r = await conn.get("/stream?64")
            assert r.status == 200 and r.body == b"x" * (64 * 16384)
            # HEAD gets the head alone. (On a route without Content-Length: aioquic
            # checks a HEAD response's Content-Length against its empty body.)
            r = await conn.request("HEAD", "/stream?4")
            assert r.status == 200 and r.body == b""

    run(main())
    srv.wait_for_line(r'"GET /env\?x=1 HTTP/3" 200', timeout=10)
