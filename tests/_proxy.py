"""What the proxy-header tests (WSGI and ASGI) share: a full set of X-Forwarded-*
headers and a GET that returns the app's JSON report."""

from __future__ import annotations

import httpx

#: Every X-Forwarded-* header, as a proxy chain ending at 198.51.100.7 would send them.
FULL = {
    "X-Forwarded-For": "203.0.113.9, 198.51.100.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "shop.example",
    "X-Forwarded-Port": "8443",
    "X-Forwarded-Prefix": "/store",
}


def get(url: str, headers=None, **client_kw) -> dict:
    """GET ``url``; it must answer 200; return the JSON body."""
    with httpx.Client(timeout=10, **client_kw) as client:
        resp = client.get(url, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()
