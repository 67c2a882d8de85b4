"""ASGI regressions found under load, each reproduced with real clients."""

from __future__ import annotations

import socket

from _support import wait_until


def test_responses_to_departed_clients_do_not_wedge_the_loop(server):
    """A response whose client already left used to deadlock the event loop thread:
    dropping the unwanted response re-locked the request state it was dropped under."""
    srv = server("asgi_abort_app:app")
    for n in range(5):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        # Leave only once the app has the request (else it may never reach the app).
        wait_until(lambda n=n: srv.output().count("slow-started") > n, timeout=10)
        s.close()
    wait_until(
        lambda: srv.output().count("slow-finished") == 5,
        timeout=10,
        message="all five responses to settle",
    )
    assert "slow-finished ClientDisconnected" in srv.output()
    assert srv.get("/").text == "ok"
