"""Context variables set in ASGI lifespan startup are visible in requests."""

from __future__ import annotations

import pytest

# Every test here runs once per ASGI mode (one thread, loop thread).
pytestmark = pytest.mark.usefixtures("asgi_mode")


def test_lifespan_contextvars_reach_each_request_in_its_own_copy(server):
    srv = server("asgi_context_app:app")
    # Each request sees the lifespan value, and a request's own change does not leak
    # into the next one.
    assert [srv.get("/").text for _ in range(3)] == ["from-lifespan"] * 3


def test_no_lifespan_means_default_context(server):
    srv = server("asgi_context_app:app", "--lifespan", "off")
    assert srv.get("/").text == "unset"
