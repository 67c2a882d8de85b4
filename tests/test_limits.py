"""Limits and timeouts: body size, header size and count, slowloris, keep-alive, connections."""

from __future__ import annotations

import select
import socket
import time

import pytest

from _support import chunked, http_request

APP = "http_app:application"


def test_declared_body_over_limit_is_413_before_the_app_runs(server):
    srv = server("--max-body-size", "1000", APP)
    with srv.raw() as conn:
        conn.send(http_request("POST", "/upload", body=b"x" * 2000))
        resp = conn.final_response()
    assert resp.status == 413
    assert srv.get("/calls").text == "0"
    # at the limit is fine, and the app runs
    r = srv.post("/upload", content=b"y" * 1000)
    assert r.status_code == 200 and r.text == "1000"
    assert srv.get("/calls").text == "1"


def test_chunked_body_over_limit_is_413(server):
    srv = server("--max-body-size", "1000", "input_app:application")
    mark = srv.mark()
    with srv.raw() as conn:
        conn.send(
            http_request("POST", "/propagate", headers={"Transfer-Encoding": "chunked"})
            + chunked(b"a" * 600, b"b" * 600, b"c" * 600)
        )
        resp = conn.final_response()
    assert resp.status == 413
    srv.wait_for_line(r"GM-PROPAGATE raised RequestBodyTooLarge oserror=True", start=mark)
    assert srv.post("/echo", content=b"ok").content == b"ok"


def test_chunked_body_at_limit_is_accepted(server):
    srv = server("--max-body-size", "1000", "input_app:application")
    with srv.raw() as conn:
        conn.send(
            http_request("POST", "/propagate", headers={"Transfer-Encoding": "chunked"})
            + chunked(b"a" * 500, b"b" * 500)
        )
        resp = conn.final_response()
    assert resp.status == 200 and resp.body == b"complete:1000"


@pytest.mark.parametrize("size", [10_000, 5_000])
def test_header_over_max_header_size(server, size):
    srv = server("--max-header-size", "4096", APP)
    with srv.raw() as conn:
        conn.send(http_request("GET", "/", headers={"X-Big": "v" * size}))
        resp = conn.final_response()
    assert resp.status in (431, 400)
    # the worker still serves the next connection
    assert srv.get("/path?next").text == "/path?next"


def test_header_under_max_header_size_is_served(server):
    srv = server("--max-header-size", "4096", APP)
    r = srv.get("/", headers={"X-Big": "v" * 3000})
    assert r.status_code == 200


def test_too_many_headers_is_431(server):
    srv = server("--max-headers", "10", APP)
    with srv.raw() as conn:
        conn.send(http_request("GET", "/", headers=[(f"X-H{i}", "v") for i in range(20)]))
        resp = conn.final_response()
    assert resp.status == 431
    with srv.raw() as conn:  # Host + 8 = 9 headers is fine
        conn.send(http_request("GET", "/", headers=[(f"X-H{i}", "v") for i in range(8)]))
        assert conn.final_response().status == 200


def test_slowloris_is_closed_by_header_read_timeout(server):
    srv = server("--header-read-timeout", "1", "--keepalive-timeout", "30", APP)
    start = time.monotonic()
    with srv.raw() as slow:
        slow.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        served_meanwhile = False
        i = 0
        closed_after = None
        while time.monotonic() - start < 6:
            readable, _, _ = select.select([slow.sock], [], [], 0.25)
            if readable:
                data = slow.recv_some()
                if not data or data.startswith(b"HTTP/1.1 408"):
                    closed_after = time.monotonic() - start
                    break
            if not served_meanwhile:
                # another client is served while the slow one holds its connection
                assert srv.get("/path?other", timeout=3).text == "/path?other"
                served_meanwhile = True
            try:
                slow.send(f"X-Slow-{i}: a\r\n")  # trickle: never finish the head
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - start
                break
            i += 1
    assert served_meanwhile
    assert closed_after is not None, "slowloris connection still open after 6 s"
    assert 0.5 < closed_after < 3.5, closed_after


def test_idle_new_connection_is_closed_by_header_read_timeout(server):
    srv = server("--header-read-timeout", "1", APP)
    with srv.raw() as conn:
        elapsed = conn.closed_within(5)
    assert 0.5 < elapsed < 3.5, elapsed


def test_keepalive_timeout_closes_idle_connection(server):
    srv = server("--keepalive-timeout", "1", "--header-read-timeout", "30", APP)
    with srv.raw() as conn:
        conn.send(http_request("GET", "/path?ka"))
        assert conn.final_response().body == b"/path?ka"
        elapsed = conn.closed_within(5)
    assert 0.5 < elapsed < 3.5, elapsed


def test_max_connections_sheds_idle_keepalive_connections(server):
    srv = server("--max-connections", "2", "--keepalive-timeout", "30", APP)
    idle = []
    try:
        for i in range(2):
            conn = srv.raw()
            idle.append(conn)
            conn.send(http_request("GET", f"/path?idle{i}"))
            assert conn.final_response().status == 200
        # a third client is still served: idle keep-alive connections make room
        r = srv.get("/path?third", timeout=5)
        assert r.text == "/path?third"
        closed = 0
        for conn in idle:
            readable, _, _ = select.select([conn.sock], [], [], 2)
            if readable and conn.recv_some() == b"":
                closed += 1
        assert closed >= 1, "no idle connection was shed"
        assert srv.get("/path?fourth", timeout=5).text == "/path?fourth"
    finally:
        for conn in idle:
            conn.close()


def test_connections_up_to_the_limit_are_served(server):
    """Two connections open at once with --max-connections 2: neither is shed."""
    srv = server("--max-connections", "2", "--keepalive-timeout", "30", APP)
    with srv.raw() as a, srv.raw() as b:
        for i, conn in enumerate((a, b, a, b)):
            conn.send(http_request("GET", f"/path?c{i}"))
            assert conn.final_response().body == f"/path?c{i}".encode()


def test_accept_loop_backs_off_on_emfile_and_recovers(server):
    """Out of file descriptors, the worker logs once, backs off instead of spinning, and
    serves again as soon as descriptors are free; it never dies."""
    srv = server("low_fd_app:application")
    pid = srv.get("/").text
    clients = []
    try:
        for _ in range(100):  # more than the worker's 64 descriptors
            clients.append(socket.create_connection(("127.0.0.1", srv.port), timeout=5))
        srv.wait_for_line(r"accept failed: .*Too many open files.*backing off", timeout=10)
    finally:
        for c in clients:
            c.close()
    assert srv.get("/").text == pid
