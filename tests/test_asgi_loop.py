"""The ASGI event loop keeps its own wake-ups in both modes.

In the one-thread mode the loop sleeps inside the Rust runtime (its selector turns the
runtime), so whatever wakes an asyncio loop — a timer, a result from another thread
through ``call_soon_threadsafe`` — must wake the runtime too, and an idle worker must
sleep rather than spin.
"""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from _support import cpu_seconds

APP = "asgi_http_app:app"

# Every test here runs once per ASGI mode (one thread, loop thread).
pytestmark = pytest.mark.usefixtures("asgi_mode")


def test_a_timer_fires_with_no_network_activity(server, tmp_path):
    srv = server(APP, env={"GM_TEST_DIR": str(tmp_path)})
    r = srv.get("/timer?delay=0.2")
    assert (r.status_code, r.text) == (200, "fired")


def test_an_executor_result_wakes_the_loop(server, tmp_path):
    """The result of run_in_executor arrives through the loop's self-pipe."""
    srv = server(APP, env={"GM_TEST_DIR": str(tmp_path)})
    r = srv.get("/thread?delay=0.2")
    assert (r.status_code, r.text) == (200, "from a worker")


def test_requests_waiting_on_timers_and_threads_overlap(server, tmp_path):
    """Eight requests each waiting 1 s (four on a timer, four on a thread) all finish
    within a few seconds: the loop serves them concurrently."""
    srv = server(APP, env={"GM_TEST_DIR": str(tmp_path)})
    paths = ["/timer?delay=1"] * 4 + ["/thread?delay=1"] * 4
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(paths)) as pool:
        answers = list(pool.map(lambda p: srv.get(p, timeout=10).status_code, paths))
    assert answers == [200] * len(paths)
    assert time.monotonic() - started < 5  # one after the other would take 8 s


@pytest.mark.parametrize("busy_poll", ["50", "0"])
def test_an_idle_worker_does_not_spin(server, tmp_path, busy_poll):
    """--busy-poll polls only right after activity: an idle worker sleeps."""
    srv = server(APP, "--busy-poll", busy_poll, env={"GM_TEST_DIR": str(tmp_path)})
    (worker,) = srv.worker_pids()
    for _ in range(20):
        assert srv.get("/single").status_code == 200
    before = cpu_seconds(worker)
    time.sleep(1.0)  # one idle second, measured
    assert cpu_seconds(worker) - before < 0.2


def test_objects_alive_at_startup_are_frozen(server, tmp_path):
    """Startup objects are exempt from the collections while serving (gc.freeze)."""
    srv = server(APP, env={"GM_TEST_DIR": str(tmp_path)})
    assert int(srv.get("/gc-frozen").text) > 1000
