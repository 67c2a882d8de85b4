"""``--worker-timeout``: a worker that stops turning is killed, its stacks dumped, and
replaced, in every execution mode; one that is merely slow is left alone.

Each worker proves every tenth of the timeout that its I/O runtime turns, that the GIL
can be taken and (ASGI) that its event loop runs callbacks (``src/heartbeat.rs``); the
supervisor aborts a ready worker without a heartbeat for the timeout (SIGABRT, on which
faulthandler dumps every thread's stack), then starts a new one
(``python/gristmill/watchdog.py``). The hung apps are in ``tests/apps/hang_app.py``: a
regular expression that backtracks for hours in C with the GIL held (``/gil``), and a
pure-Python ``while True`` (``/spin``). Each server runs two workers, so the test can
see the other one untouched.
"""

from __future__ import annotations

import re
import signal
import threading
import time

import httpx
import pytest

from _support import Server, _stat, every_mode, wait_until
from gristmill.errors import ConfigError
from gristmill.settings import Settings, from_sources, validate
from gristmill.watchdog import Pulse, describe

MODES = every_mode("hang_app:application", "hang_app:app")
TIMEOUT = 1.0
#: From the hang to the kill: the timeout plus two heartbeat periods, with room for a
#: loaded machine.
DETECT = TIMEOUT + 6.0

KILLED_RE = (
    r"Worker (?P<pid>\d+) sent no heartbeat for [\d.]+ seconds \(worker-timeout 1 s\); "
    r"stopped turning: (?P<what>.*)\. Killing it with SIGABRT \(its Python stacks follow\); "
    r"(?P<lost>\d+) in-flight requests? lost"
)


def _start(mode: str, *args: str, timeout: float = TIMEOUT, env=None) -> Server:
    app, mode_env = MODES[mode]
    srv = Server(
        [*app, "--workers", "2", "--worker-timeout", str(timeout), "--log-level", "debug", *args],
        env={**mode_env, **(env or {})},
    )
    srv.wait_ready()
    return srv


def _gone(pid: int) -> bool:
    st = _stat(pid)
    return st is None or st[0] == "Z"


def _request_in_background(url: str) -> dict[str, object]:
    """GET ``url`` on a thread; the result (a response or the error) lands in the dict."""
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["response"] = httpx.get(url, timeout=30)
        except httpx.HTTPError as e:
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    out["thread"] = t
    return out


def _hang_and_replace(srv: Server, path: str) -> tuple[re.Match[str], int]:
    """Hang one worker with ``path``; check the kill, the dump and the replacement.
    Return the kill line's match and the replacement's pid."""
    before = srv.worker_pids()
    assert len(before) == 2
    mark = srv.mark()
    hung = _request_in_background(srv.url + path)
    srv.wait_for_line(f"start {path}", timeout=10, start=mark)
    killed = srv.wait_for_line(KILLED_RE, timeout=DETECT, start=mark)
    pid = int(killed["pid"])
    assert pid in before
    (other,) = before - {pid}
    # The request that hung the worker was in flight, and is lost.
    assert killed["lost"] == "1", killed.string
    # faulthandler's dump: every thread, the hung one in the application's handler.
    func = "hog_the_gil" if path == "/gil" else "spin_forever"
    srv.wait_for_output(r"Fatal Python error: Aborted", timeout=10, start=mark)
    srv.wait_for_output(rf'File ".*hang_app\.py", line \d+ in {func}', timeout=10, start=mark)
    ended = srv.wait_for_line(
        rf"Worker {pid}, hung, ended \(killed by SIG(ABRT|KILL)\); starting a new one",
        timeout=10,
        start=mark,
    )
    assert ended
    # The only worker started since the mark: the replacement.
    new = int(srv.wait_for_line(r"Started worker (\d+)", timeout=10, start=mark)[1])
    srv.wait_for_line(rf"Worker {new} ready", timeout=30, start=mark)
    hung["thread"].join(10)  # type: ignore[attr-defined]
    assert "error" in hung, f"the hung request was answered: {hung}"
    # The other worker was never touched, and both serve.
    assert srv.worker_pids() == {other, new}
    answered = {int(srv.get("/").text) for _ in range(20)}
    assert answered <= {other, new} and answered
    assert wait_until(lambda: _gone(pid), 5, message=f"worker {pid} to be gone")
    return killed, new


#: (mode, path, what the kill line says stopped turning).
HANGS = [
    ("wsgi-inline", "/gil", ["the I/O runtime", "the GIL"]),
    ("wsgi-inline", "/spin", ["the I/O runtime"]),
    ("wsgi-pool", "/gil", ["the GIL"]),
    ("asgi-one-thread", "/gil", ["the I/O runtime", "the GIL", "the event loop"]),
    ("asgi-one-thread", "/spin", ["the I/O runtime", "the event loop"]),
    ("asgi-loop-thread", "/gil", ["the GIL", "the event loop"]),
    ("asgi-loop-thread", "/spin", ["the event loop"]),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("mode", "path", "stopped"), HANGS, ids=[f"{m}{p}" for m, p, _ in HANGS])
def test_a_hung_worker_is_killed_with_its_stacks_and_replaced(mode, path, stopped):
    srv = _start(mode)
    try:
        killed, _ = _hang_and_replace(srv, path)
        what = killed["what"]
        for name in stopped:
            assert name in what, what
        # What still turned is not blamed (the GIL changes hands in a Python loop; the
        # pool's and the loop thread's runtime keep turning beside a stuck thread).
        for name in {"the I/O runtime", "the GIL", "the event loop"} - set(stopped):
            assert name not in what, what
    finally:
        srv.kill()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["wsgi-pool", "asgi-one-thread", "asgi-loop-thread"])
def test_a_slow_worker_that_yields_is_not_killed(mode):
    """Waiting three times the timeout in ``asyncio.sleep`` (ASGI) or ``time.sleep`` on a
    pool thread (WSGI) is slow, not hung: the worker keeps turning and serving."""
    srv = _start(mode)
    try:
        before = srv.worker_pids()
        mark = srv.mark()
        slow = _request_in_background(srv.url + "/sleep?s=3")
        srv.wait_for_line("start /sleep", timeout=10, start=mark)
        # Meanwhile every worker answers (the sleeping one included, up to its threads).
        for _ in range(10):
            assert srv.get("/").status_code == 200
        slow["thread"].join(15)  # type: ignore[attr-defined]
        r = slow.get("response")
        assert isinstance(r, httpx.Response) and r.status_code == 200, slow
        assert int(r.text) in before
        assert srv.worker_pids() == before
        assert "sent no heartbeat" not in srv.output()
    finally:
        srv.kill()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("mode", "path"), [("wsgi-inline", "/gil"), ("asgi-one-thread", "/spin")])
def test_worker_timeout_zero_turns_it_off(mode, path):
    srv = _start(mode, timeout=0)
    try:
        before = srv.worker_pids()
        mark = srv.mark()
        _request_in_background(srv.url + path)
        srv.wait_for_line(f"start {path}", timeout=10, start=mark)
        # Asserting an absence: give the watchdog three times what it would need.
        time.sleep(3 * (TIMEOUT + 0.5))
        assert srv.worker_pids() == before
        out = srv.output()
        assert "sent no heartbeat" not in out and "heartbeat every" not in out
    finally:
        srv.kill()


@pytest.mark.timeout(60)
def test_a_slow_import_is_not_timed():
    """The application's import comes before the heartbeat: a worker that takes three
    times the timeout to import is not killed."""
    srv = _start("wsgi-inline", env={"HANG_IMPORT_SECONDS": "3"})
    try:
        before = srv.worker_pids()
        assert srv.get("/").status_code == 200
        assert "sent no heartbeat" not in srv.output()
        assert srv.worker_pids() == before
    finally:
        srv.kill()


@pytest.mark.timeout(90)
def test_after_a_reload_the_new_workers_are_watched():
    """SIGHUP: the old workers drain unwatched, the new ones are watched from ready."""
    srv = _start("asgi-loop-thread")
    try:
        mark = srv.mark()
        srv.send_signal(signal.SIGHUP)
        srv.wait_for_line("Reload complete", timeout=30, start=mark)
        wait_until(lambda: len(srv.worker_pids()) == 2, 15, message="the old workers to exit")
        _hang_and_replace(srv, "/spin")
    finally:
        srv.kill()


@pytest.mark.timeout(60)
def test_with_preload_and_max_requests():
    """Preloaded workers dump their stacks too; a worker killed for its heartbeat is
    replaced the same way whether or not it was due for recycling."""
    srv = _start("wsgi-pool", "--preload", "--max-requests", "1000")
    try:
        _hang_and_replace(srv, "/gil")
    finally:
        srv.kill()


@pytest.mark.timeout(60)
def test_request_timeout_acts_first():
    """The request timeout is the gentler first line: a WSGI call that sleeps past it gets
    its 504 and the worker is left alone by the (longer) worker timeout."""
    srv = _start("wsgi-pool", "--request-timeout", "1", timeout=3)
    try:
        before = srv.worker_pids()
        r = srv.get("/sleep?s=5", timeout=15)
        assert r.status_code == 504
        assert "sent no heartbeat" not in srv.output()
        assert srv.worker_pids() == before
    finally:
        srv.kill()


@pytest.mark.timeout(60)
def test_a_worker_that_survives_sigabrt_gets_sigkill():
    """An application that ignores SIGABRT (so no dump either) is killed 5 s later."""
    srv = _start("wsgi-inline", env={"HANG_IGNORE_SIGABRT": "1"})
    try:
        mark = srv.mark()
        _request_in_background(srv.url + "/gil")
        killed = srv.wait_for_line(KILLED_RE, timeout=DETECT, start=mark)
        pid = int(killed["pid"])
        srv.wait_for_line(
            rf"Worker {pid} still runs 5 seconds after SIGABRT; killing it \(SIGKILL\)",
            timeout=10,
            start=mark,
        )
        srv.wait_for_line(
            rf"Worker {pid}, hung, ended \(killed by SIGKILL\)", timeout=10, start=mark
        )
        new = int(srv.wait_for_line(r"Started worker (\d+)", timeout=10, start=mark)[1])
        srv.wait_for_line(rf"Worker {new} ready", timeout=30, start=mark)
        assert srv.get("/").status_code == 200
    finally:
        srv.kill()


def test_pipe_messages_split_across_reads():
    """Heartbeat lines and one-byte messages share the pipe; a read may end mid-line."""
    p = Pulse()
    assert p.feed(b"1H0\nH1", now=1.0) == [ord("1")]
    assert (p.last, p.in_flight) == (1.0, 0)
    assert p.feed(b"2\nMS3 gil:1.5,loop:1.5\nT", now=2.0) == [ord("M"), ord("T")]
    assert (p.last, p.in_flight, p.stalled) == (2.0, 3, "gil:1.5,loop:1.5")
    assert describe(p.stalled) == (
        "the GIL (one thread holds it) for 1.5 s, the event loop for 1.5 s"
    )
    assert p.feed(b"H0\n", now=3.0) == [] and p.stalled == "" and p.last == 3.0


def test_the_setting():
    assert Settings().worker_timeout == 30.0
    assert from_sources({}, {"GRISTMILL_WORKER_TIMEOUT": "2.5"}).worker_timeout == 2.5
    assert from_sources({"worker_timeout": 4}, {}).worker_timeout == 4
    validate(Settings().replace(worker_timeout=0))
    with pytest.raises(ConfigError, match="worker_timeout"):
        validate(Settings().replace(worker_timeout=-1))
