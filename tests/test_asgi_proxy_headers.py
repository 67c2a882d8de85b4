"""Proxy headers from trusted peers, ASGI side: ``client``, ``scheme``, ``server``,
``root_path`` (and ``path``) and the ``host`` header of HTTP and WebSocket scopes.

Runs once per ASGI mode. Clients on 127.0.0.1 are trusted by default; with
``--forwarded-allow-ips`` leaving it out, the same headers change nothing.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from _proxy import FULL, get

pytestmark = pytest.mark.usefixtures("asgi_mode")

APP = "proxy_app:asgi"


def ws_report(srv, path: str, headers: dict[str, str]) -> dict:
    async def go():
        async with connect(f"ws://127.0.0.1:{srv.port}{path}", additional_headers=headers) as ws:
            return json.loads(await ws.recv())

    return asyncio.run(asyncio.wait_for(go(), 20))


def test_trusted_proxy_http_scope(server):
    srv = server(APP)
    scope = get(srv.url + "/cart", FULL)
    assert scope["client"] == ["198.51.100.7", 0]
    assert scope["scheme"] == "https"
    assert scope["server"] == ["shop.example", 8443]
    assert scope["headers"]["host"] == ["shop.example:8443"]
    # root_path from the prefix; path is the full path (the proxy stripped the prefix).
    assert (scope["root_path"], scope["path"]) == ("/store", "/store/cart")
    assert scope["headers"]["x-forwarded-for"] == [FULL["X-Forwarded-For"]]
    srv.wait_for_line(r'^198\.51\.100\.7 - "GET /cart HTTP/1\.1" 200')


def test_forwarded_header_http_scope(server):
    srv = server(APP)
    scope = get(
        srv.url + "/",
        {"Forwarded": "for=192.0.2.60;proto=https;host=a.example", "X-Forwarded-Proto": "http"},
    )
    assert scope["client"] == ["192.0.2.60", 0]
    assert scope["scheme"] == "https"
    assert scope["server"] == ["a.example", 443]
    assert scope["headers"]["host"] == ["a.example"]


def test_trusted_proxy_websocket_scope(server):
    srv = server(APP)
    scope = ws_report(srv, "/live", FULL)
    assert scope["type"] == "websocket"
    assert scope["client"] == ["198.51.100.7", 0]
    assert scope["scheme"] == "wss"
    assert scope["server"] == ["shop.example", 8443]
    assert scope["headers"]["host"] == ["shop.example:8443"]
    assert (scope["root_path"], scope["path"]) == ("/store", "/store/live")


def test_untrusted_peer_changes_nothing(server):
    srv = server(APP, "--forwarded-allow-ips", "10.0.0.0/8")
    scope = get(srv.url + "/cart", {**FULL, "Forwarded": "for=192.0.2.60;proto=https"})
    assert scope["client"][0] == "127.0.0.1" and scope["client"][1] != 0
    assert scope["scheme"] == "http"
    assert scope["server"] == ["127.0.0.1", srv.port]
    assert scope["headers"]["host"] == [f"127.0.0.1:{srv.port}"]
    assert (scope["root_path"], scope["path"]) == ("", "/cart")
    assert scope["headers"]["forwarded"] == ["for=192.0.2.60;proto=https"]
    ws = ws_report(srv, "/live", FULL)
    assert (ws["client"][0], ws["scheme"], ws["root_path"]) == ("127.0.0.1", "ws", "")
    assert ws["headers"]["host"] == [f"127.0.0.1:{srv.port}"]
    srv.wait_for_line(r'^127\.0\.0\.1 - "GET /cart HTTP/1\.1" 200')


def test_malformed_values_are_ignored(server):
    srv = server(APP, "--log-level", "debug")
    scope = get(
        srv.url + "/",
        {"X-Forwarded-For": "1.2.3.4, junk", "X-Forwarded-Proto": "ftp", "Forwarded": "for"},
    )
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"
    srv.wait_for_line(r"proxy headers: .*; ignored")
