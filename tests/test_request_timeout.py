"""``--request-timeout``: a bound on one application call, in every execution mode.

At the deadline a request whose response has not started gets ``504 Gateway Timeout``;
one whose response has started is aborted (HTTP/1.1: the connection closes before the
body's end; HTTP/2: the stream is reset). Either way an access line and an error line
are logged. ASGI tasks are cancelled; a WSGI thread cannot be, so its stack is logged,
its result discarded, and a worker whose threads are all stuck is replaced (a new worker
first, then the old one drains). Requests that finish in time are untouched.

The apps are in ``tests/apps/timeout_app.py``; they sleep far longer (30 s) than the
timeout (1 s), so a 504 that comes "well before the app would finish" is unmistakable.
"""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest

from _support import Server, _stat, every_mode, wait_until
from _ws_h2 import TEXT, H2Client
from gristmill.settings import ExecutionMode, Settings

MODES = every_mode("timeout_app:application", "timeout_app:app")
TIMEOUT = 1.0
#: How long the sleeping apps would take: far beyond the timeout.
SLEEP = 30
#: A 504 must come at the deadline, not when the app finishes: this much slack.
LATE = 4.0

ACCESS = "--access-log-format=access %(m)s %(U)s %(s)s %(b)s"


def _start(mode: str, *args: str, timeout: float = TIMEOUT) -> Server:
    app, env = MODES[mode]
    srv = Server([*app, ACCESS, "--request-timeout", str(timeout), *args], env=env)
    srv.wait_ready()
    return srv


def _gone(pid: int) -> bool:
    st = _stat(pid)
    return st is None or st[0] == "Z"


def _timed_get(client: httpx.Client, url: str) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    r = client.get(url)
    return r, time.monotonic() - start


# --- the execution mode -----------------------------------------------------------------


def test_wsgi_with_a_request_timeout_never_runs_inline():
    """Inline, the application blocks the I/O thread and nothing could send the 504:
    with a request timeout one Python thread becomes a pool of one."""
    one = Settings().replace(interface="wsgi", threads=1, runtime_threads=1)
    assert one.execution_mode is ExecutionMode.WSGI_INLINE
    assert one.replace(request_timeout=5).execution_mode is ExecutionMode.WSGI_POOL
    assert (
        one.replace(interface="asgi", request_timeout=5).execution_mode is ExecutionMode.ASGI_DRIVEN
    )


def test_request_timeout_is_validated():
    from gristmill.errors import ConfigError
    from gristmill.settings import from_sources, validate

    with pytest.raises(ConfigError, match="request_timeout"):
        validate(Settings().replace(request_timeout=-1))
    validate(Settings().replace(request_timeout=0))
    # One declaration: the flag, the environment and the config file.
    assert from_sources({}, {"GRISTMILL_REQUEST_TIMEOUT": "3"}).request_timeout == 3.0
    assert from_sources({"request_timeout": 2.5}, {}).request_timeout == 2.5


# --- 504 before the response started ----------------------------------------------------


@pytest.mark.timeout(45)
@pytest.mark.parametrize("mode", list(MODES))
def test_504_at_the_deadline(mode):
    srv = _start(mode)
    try:
        with httpx.Client(timeout=20) as c:
            pid = int(c.get(srv.url + "/").text)
            # Within the timeout: untouched.
            fast = c.get(srv.url + "/fast")
            assert fast.status_code == 200, fast.text
            srv.wait_for_line(r"access GET /fast 200 ")
            mark = srv.mark()
            assert "request timeout" not in srv.output()
            r, took = _timed_get(c, srv.url + f"/sleep?s={SLEEP}")
        assert r.status_code == 504, r.text
        assert TIMEOUT <= took < TIMEOUT + LATE, took
        srv.wait_for_line(r"access GET /sleep 504 ", start=mark)
        srv.wait_for_line(
            r"request timeout: .*GET /sleep.* 1(\.0)? s \(request_timeout\)", start=mark
        )
        if mode.startswith("wsgi"):
            # The stuck thread's stack names the function it sleeps in.
            srv.wait_for_output(r"still running.*\n(.*\n)*.*in sleeping_in_the_app", start=mark)
        else:
            srv.wait_for_line(r"^cancelled /sleep", start=mark)
        if mode == "wsgi-inline":
            # A pool of one: its one thread is stuck, so the worker is replaced; the new
            # one serves.
            srv.wait_for_line(rf"Worker {pid} has every thread stuck", start=mark)
            wait_until(lambda: srv.worker_pids() - {pid}, 20, message="a replacement")
            with httpx.Client(timeout=20) as c:
                assert int(c.get(srv.url + "/").text) != pid
        else:
            # The same worker serves the next request, on a new connection (the 504
            # closed the last one).
            with httpx.Client(timeout=20) as c:
                assert int(c.get(srv.url + "/").text) == pid
        assert "Exception in ASGI application" not in srv.output()
    finally:
        srv.kill()


@pytest.mark.timeout(30)
def test_wsgi_result_discarded_and_closed_when_the_call_returns():
    """A call that returns after its deadline: its result goes nowhere (the client had
    its 504), its iterable is closed all the same, and a line says so."""
    srv = _start("wsgi-pool")
    try:
        mark = srv.mark()
        r = srv.get("/sleep?s=2", timeout=20)
        assert r.status_code == 504
        srv.wait_for_line(r"GET /sleep returned after 2\.\d s, past request_timeout", start=mark)
        srv.wait_for_line(r"^closed /sleep", start=mark)
        # One access line only: the 504 (the discard line comes after it).
        access = [line for line in srv.lines(mark) if line.startswith("access GET /sleep")]
        assert access == [access[0]] and " 504 " in access[0], access
        assert srv.get("/").status_code == 200
    finally:
        srv.kill()


# --- a response that started ------------------------------------------------------------


@pytest.mark.timeout(45)
@pytest.mark.parametrize("mode", list(MODES))
def test_started_response_is_aborted(mode):
    srv = _start(mode)
    try:
        mark = srv.mark()
        with srv.raw(timeout=20) as conn:
            start = time.monotonic()
            conn.send(f"GET /stream?s={SLEEP} HTTP/1.1\r\nHost: x\r\n\r\n")
            head = conn.read_head()
            assert head.status == 200
            assert "chunked" in (head.header("transfer-encoding") or "")
            rest = conn.read_to_eof(timeout=TIMEOUT + LATE)
            took = time.monotonic() - start
        # The first chunk came, and then the connection closed without the last chunk.
        assert b"first\n" in rest, rest
        assert not rest.endswith(b"0\r\n\r\n"), rest
        assert b"rest" not in rest
        assert TIMEOUT <= took < TIMEOUT + LATE, took
        srv.wait_for_line(r"request timeout: .*GET /stream.*abort", start=mark)
        srv.wait_for_line(r"access GET /stream 200 ", start=mark)
        if mode.startswith("wsgi"):
            srv.wait_for_output(r"still running.*\n(.*\n)*.*in sleeping_in_the_app", start=mark)
        else:
            srv.wait_for_line(r"^cancelled /stream", start=mark)
    finally:
        srv.kill()


# --- HTTP/2 -----------------------------------------------------------------------------


def _h2() -> httpx.Client:
    return httpx.Client(http1=False, http2=True, timeout=20)


@pytest.mark.timeout(45)
@pytest.mark.parametrize("mode", ["wsgi-pool", "asgi-one-thread", "asgi-loop-thread"])
def test_http2(mode):
    srv = _start(mode)
    try:
        with _h2() as c:
            pid = int(c.get(srv.url + "/").text)
            mark = srv.mark()
            r, took = _timed_get(c, srv.url + f"/sleep?s={SLEEP}")
            assert r.http_version == "HTTP/2"
            assert r.status_code == 504, r.text
            assert TIMEOUT <= took < TIMEOUT + LATE, took
            # The connection goes on: the next request on it is served by the same worker.
            assert int(c.get(srv.url + "/").text) == pid
            # A started response: its stream is reset, the connection lives on.
            start = time.monotonic()
            with pytest.raises(httpx.RemoteProtocolError):
                with c.stream("GET", srv.url + f"/stream?s={SLEEP}") as resp:
                    assert resp.status_code == 200
                    for _ in resp.iter_bytes():
                        pass
            assert TIMEOUT <= time.monotonic() - start < TIMEOUT + LATE
            assert int(c.get(srv.url + "/").text) == pid
        srv.wait_for_line(r"access GET /sleep 504 ", start=mark)
        srv.wait_for_line(r"access GET /stream 200 ", start=mark)
    finally:
        srv.kill()


# --- WebSocket: the handshake only ------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["asgi-one-thread", "asgi-loop-thread"])
def test_websocket_handshake_bounded_accepted_socket_not(mode):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    srv = _start(mode)
    ws_url = srv.url.replace("http://", "ws://")
    try:
        # Not accepted within the timeout: the handshake gets 504.
        start = time.monotonic()
        with pytest.raises(InvalidStatus) as exc:
            connect(ws_url + f"/ws?s={SLEEP}", open_timeout=20)
        assert exc.value.response.status_code == 504
        assert TIMEOUT <= time.monotonic() - start < TIMEOUT + LATE
        srv.wait_for_line(r"request timeout: .*WebSocket /ws.*504")
        # Accepted at once, then busier than the timeout: the socket is not touched.
        with connect(ws_url + "/ws?hold=1.5", open_timeout=20) as ws:
            ws.send("hello")
            assert ws.recv(timeout=20) == "hello"
        # The same over HTTP/2 (RFC 8441): the stream gets the 504, the connection
        # goes on, and an accepted socket is left alone.
        with H2Client(srv.port, timeout=20) as c:
            start = time.monotonic()
            _, status, _ = c.open_ws(f"/ws?s={SLEEP}")
            assert status == 504
            assert TIMEOUT <= time.monotonic() - start < TIMEOUT + LATE
            sid, status, _ = c.open_ws("/ws?hold=1.5")
            assert status == 200
            c.send_text(sid, "over h2")
            assert c.recv(sid) == (TEXT, b"over h2")
    finally:
        srv.kill()


# --- WSGI: every thread stuck -----------------------------------------------------------


@pytest.mark.timeout(60)
def test_wsgi_worker_with_every_thread_stuck_is_replaced():
    """Two threads, both stuck: the worker stops accepting, a replacement starts and
    serves, the old worker exits. Clients arriving meanwhile wait for the replacement
    instead of failing."""
    srv = _start(
        "wsgi-pool",
        "--threads",
        "2",
        "--workers",
        "1",
        "--graceful-timeout",
        "1",
        "--log-level",
        "debug",
    )
    try:
        old = int(srv.get("/").text)
        mark = srv.mark()
        stuck: list[httpx.Response] = []
        hangers = [
            threading.Thread(target=lambda: stuck.append(srv.get(f"/sleep?s={SLEEP}", timeout=20)))
            for _ in range(2)
        ]
        for t in hangers:
            t.start()
        srv.wait_for_line(r"all 2 Python threads of this worker are stuck", start=mark, timeout=10)
        # Clients that arrive now (fresh connections) wait for the replacement.
        answers: list[int] = []
        failures: list[str] = []

        def client() -> None:
            try:
                r = srv.get("/", timeout=20)
                r.raise_for_status()
                answers.append(int(r.text))
            except (httpx.HTTPError, ValueError) as e:
                failures.append(repr(e))

        clients = [threading.Thread(target=client) for _ in range(4)]
        for t in clients:
            t.start()
        for t in hangers + clients:
            t.join(30)
        assert [r.status_code for r in stuck] == [504, 504]
        assert not failures, (failures, srv.output())
        assert answers and all(pid != old for pid in answers), (answers, old)
        srv.wait_for_line(rf"Worker {old} has every thread stuck past request-timeout", start=mark)
        wait_until(lambda: _gone(old), 20, message=f"worker {old} to exit")
        new = srv.worker_pids()
        assert new and old not in new
        assert int(srv.get("/").text) in new
    finally:
        srv.kill()


@pytest.mark.timeout(30)
def test_queued_request_gets_its_504_and_never_runs():
    """With the only thread stuck, a request waiting for it is answered at its own
    deadline and never reaches the application."""
    srv = _start("wsgi-pool", "--threads", "1", "--workers", "1")
    try:
        mark = srv.mark()
        results: dict[str, tuple[int, float]] = {}

        def go(path: str) -> None:
            start = time.monotonic()
            r = srv.get(path, timeout=20)
            results[path] = (r.status_code, time.monotonic() - start)

        first = threading.Thread(target=go, args=(f"/sleep?s={SLEEP}",))
        first.start()
        srv.wait_for_line(r"^start /sleep", start=mark)
        # Sent while the first one runs; queued behind it.
        second = threading.Thread(target=go, args=("/sleep?s=0",))
        second.start()
        first.join(20)
        second.join(20)
        assert results[f"/sleep?s={SLEEP}"][0] == 504
        assert results["/sleep?s=0"][0] == 504
        srv.wait_for_line(
            r"request timeout: GET /sleep waited 1(\.0)? s .* for a free Python thread", start=mark
        )
        # The queued one never started.
        assert len(re.findall(r"^start /sleep", "\n".join(srv.lines(mark)), re.M)) == 1
    finally:
        srv.kill()
