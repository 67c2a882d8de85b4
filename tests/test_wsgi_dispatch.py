"""How WSGI requests reach Python: inline (one thread does I/O and calls the app, the
default with --threads 1 --runtime-threads 1) and the thread pool (--threads N > 1).

Both must behave the same to the application and the client: the GIL is free between
requests, a body can be read from another thread, a stalled upload ends in 408 after
--body-read-timeout (without calling the application when the body is small enough to
be read up front), and a stop is enforced even while the application is stuck.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from _support import WSGI_MODES, cpu_seconds, http_request, stalled_upload, wait_until

APP = "dispatch_app:application"


@pytest.fixture(params=list(WSGI_MODES))
def mode(request) -> tuple[str, ...]:
    return WSGI_MODES[request.param]


def test_mode_is_logged(server):
    inline = server(APP, "--log-level", "debug")
    inline.wait_for_line(r"WSGI requests run inline on the I/O thread")
    pool = server(APP, "--threads", "3", "--log-level", "debug")
    pool.wait_for_line(r"WSGI requests run on 3 Python threads")


def test_gil_is_free_between_requests(server, mode):
    srv = server(APP, *mode)
    first = int(srv.get("/ticks").text)
    # The application's own thread keeps running while the worker waits for requests.
    wait_until(lambda: int(srv.get("/ticks").text) > first + 5, 10, message="ticks advance")


def test_body_read_from_an_application_thread(server, mode):
    srv = server(APP, *mode)
    body = bytes(range(256)) * 1000
    r = srv.post("/thread-read", content=body)
    assert r.status_code == 200
    assert r.content == body


def test_stalled_small_body_gets_408_without_the_application(server, mode):
    # A small body is read before the application runs; stalled there, it never does.
    srv = server("input_app:application", *mode, "--body-read-timeout", "0.5")
    mark = srv.mark()
    status, waited = stalled_upload(srv, "/propagate", b"only part of it")
    assert status == 408
    assert 0.4 < waited < 5
    srv.wait_for_line(r"POST /propagate: no request body bytes arrived for 0.5 s", start=mark)
    srv.wait_for_line(r'"POST /propagate HTTP/1.1" 408', start=mark)
    assert not [line for line in srv.lines(mark) if "GM-PROPAGATE" in line]
    assert srv.post("/echo", content=b"next").content == b"next"


def test_stalled_streamed_upload_gets_408_and_worker_keeps_serving(server, mode):
    # Larger than what is read up front: the application's read raises, and it lets the
    # exception propagate.
    srv = server("input_app:application", *mode, "--body-read-timeout", "0.5")
    mark = srv.mark()
    status, waited = stalled_upload(srv, "/propagate", b"only part of it", declared=1 << 20)
    assert status == 408
    assert 0.4 < waited < 5
    srv.wait_for_line(r"GM-PROPAGATE raised RequestBodyTimeout oserror=True", start=mark)
    srv.wait_for_line(r"no request body bytes arrived for 0.5 s", start=mark)
    assert srv.post("/echo", content=b"next").content == b"next"


def test_slow_but_steady_upload_is_not_cut_off(server, mode):
    srv = server("input_app:application", *mode, "--body-read-timeout", "0.5")
    with srv.raw() as conn:
        conn.send(http_request("POST", "/strict", headers={"Content-Length": "8"}))
        for i in range(4):  # 1.2 s in all, never 0.5 s without a byte
            conn.send(b"ab")
            if i < 3:
                time.sleep(0.3)
        resp = conn.final_response()
    assert (resp.status, resp.body) == (200, b"complete:8")


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGTERM])
def test_stop_is_enforced_while_the_application_is_stuck(server, mode, sig):
    srv = server(APP, *mode, "--graceful-timeout", "1")
    mark = srv.mark()
    worker = next(iter(srv.worker_pids()))
    t = threading.Thread(target=_swallow, args=(f"{srv.url}/hang?s=30",), daemon=True)
    t.start()
    srv.wait_for_line(r"GM-HANG-START", start=mark)
    start = time.monotonic()
    os.kill(worker, sig)  # the worker itself: the supervisor would escalate on its own
    wait_until(lambda: worker not in srv.worker_pids(), 10, message="worker gone")
    # graceful-timeout 1 s (SIGTERM only), then at most ~1 s of backstop grace.
    assert time.monotonic() - start < 4


def test_inline_runs_the_application_on_the_main_thread(server):
    # Applications that install signal handlers or check for the main thread work.
    assert server(APP).get("/thread-name").text == "MainThread"


def _swallow(url: str) -> None:
    try:
        httpx.get(url, timeout=40)
    except httpx.HTTPError:
        pass


def test_client_that_stops_reading_is_dropped_after_send_timeout(server, mode, tmp_path):
    """A client that takes none of a streamed response frees the worker after
    --send-timeout: inline, it would otherwise hold the worker's only thread."""
    srv = server(
        "response_app:application",
        *mode,
        "--send-timeout",
        "1",
        "--log-level",
        "debug",
        env={"GM_TEST_DIR": str(tmp_path)},
    )
    mark = srv.mark()
    with srv.raw(rcvbuf=16 * 1024) as stalled:
        stalled.send(http_request("GET", "/big?mb=64"))
        assert stalled.read_head().status == 200
        start = time.monotonic()
        # Another client is served once the stalled one is dropped (inline) or at once.
        assert srv.get("/pid", timeout=15).status_code == 200
        srv.wait_for_line(r"took none of the response for 1 s \(send_timeout\)", start=mark)
        srv.wait_for_line(r"client went away during GET /big", start=mark)
        assert time.monotonic() - start < 10
        received = len(stalled.read_to_eof(timeout=10))
    assert received < 64 << 20


@pytest.mark.parametrize("busy_poll", ["50", "0"])
def test_idle_inline_worker_does_not_spin(server, busy_poll):
    """--busy-poll polls only right after a request: an idle worker sleeps."""
    srv = server(APP, "--busy-poll", busy_poll)
    (worker,) = srv.worker_pids()
    for _ in range(20):
        assert srv.get("/").status_code == 200
    before = cpu_seconds(worker)
    time.sleep(1.0)  # one idle second, measured (the app's ticker thread costs little)
    assert cpu_seconds(worker) - before < 0.2


def test_busy_poll_is_validated(gristmill_exit):
    code, output = gristmill_exit([APP, "--busy-poll", "-1"])
    assert code == 2
    assert "busy_poll must be between 0 and 1000000 microseconds" in output


def test_objects_alive_at_startup_are_frozen(server, mode):
    """Startup objects are exempt from the collections while serving (gc.freeze)."""
    srv = server(APP, *mode)
    assert int(srv.get("/gc-frozen").text) > 1000
