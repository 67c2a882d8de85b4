"""Limits and timeouts: body size, header size and count, slowloris, keep-alive, connections."""

from __future__ import annotations

import select
import socket
import threading
import time

import httpx
import pytest

from _support import chunked, every_mode, http_request, unread_connections, wait_until

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


#: Every execution mode: WSGI inline and pool, ASGI one-thread and loop-thread.
GATE_MODES = every_mode("gate_app:application", "gate_app:app")


def _calls(tmp_path) -> list[str]:
    calls = tmp_path / "calls"
    return calls.read_text().splitlines() if calls.exists() else []


def _check_shed(r: httpx.Response) -> None:
    assert r.headers["retry-after"] == "1"
    assert r.text == "503 too many requests in flight\n"


@pytest.mark.parametrize("mode", list(GATE_MODES))
def test_limit_concurrency_sheds_load_with_503(server, tmp_path, mode):
    """With 2 requests in flight, one more is answered 503 with Retry-After at once,
    without the application; once they finish, requests are served again.

    In inline WSGI mode the application runs on the I/O thread, so while one request
    holds it nothing else is even read: the requests that came meanwhile are read
    together when it returns, and those beyond the limit are shed then."""
    args, env = GATE_MODES[mode]
    srv = server(*args, "--limit-concurrency", "2", env={**env, "GATE_DIR": str(tmp_path)})
    mark = srv.mark()
    results: dict[str, httpx.Response] = {}

    def get(name: str, path: str) -> threading.Thread:
        def run() -> None:
            results[name] = httpx.get(srv.url + path, timeout=30)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    threads = [get("hold-1", "/hold")]
    wait_until(lambda: _calls(tmp_path).count("/hold") == 1, 20, message="the first hold")
    if mode == "wsgi-inline":
        threads += [get("hold-2", "/hold")] + [get(f"ok-{i}", "/ok") for i in range(5)]
        # All of them reach the socket while the first hold has the thread.
        wait_until(lambda: unread_connections(srv.port) >= 6, 20, message="6 requests sent")
        (tmp_path / "open").touch()
    else:
        threads.append(get("hold-2", "/hold"))
        wait_until(lambda: _calls(tmp_path).count("/hold") == 2, 20, message="the second hold")
        with httpx.Client(timeout=10) as client:
            for _ in range(3):
                r = client.get(srv.url + "/ok")
                assert r.status_code == 503, r
                _check_shed(r)
        (tmp_path / "open").touch()
    for t in threads:
        t.join(30)
    shed = [r for r in results.values() if r.status_code == 503]
    served = [r for r in results.values() if r.status_code == 200]
    assert shed or mode != "wsgi-inline", "nothing was shed"
    assert len(shed) + len(served) == len(results), results
    for r in shed:
        _check_shed(r)
    # Only what was served reached the application.
    assert len(_calls(tmp_path)) == len(served)
    assert httpx.get(srv.url + "/ok", timeout=10).status_code == 200
    srv.wait_for_line(r"limit-concurrency 2 reached: answered \d+ requests? with 503", start=mark)
