"""Worker recycling (``--max-requests``, ``--worker-lifetime``, ``--worker-max-rss``)
under a steady keep-alive load, in every execution mode.

Each recycle goes the way of a SIGHUP rolling restart, one worker at a time: the
replacement starts, and the old worker gets SIGUSR2 and drains (passing its idle
keep-alive connections on, ``test_handoff.py``) only once the replacement is ready. So
under load no request fails, even with a single worker, and every replaced worker
exits.
"""

from __future__ import annotations

import os
import re
import signal

import httpx
import pytest

from _support import PidLoad, Server, _stat, every_mode, wait_until
from gristmill.supervisor import _with_jitter

#: Every execution mode: WSGI inline and pool, ASGI one-thread and loop-thread.
MODES = every_mode("recycle_app:application", "recycle_app:app")
CLIENTS = 4

REPLACING_RE = re.compile(r"Worker (\d+) (.*); replacing it")
REPLACES_RE = re.compile(r"Worker (\d+) replaces worker (\d+), which now drains")
# Debug lines (the servers run with --log-level debug).
STARTED_RE = re.compile(r"Started worker (\d+) to replace worker (\d+)")
STOPPED_RE = re.compile(r"Worker (\d+) stopped \(")


def _gone(pid: int) -> bool:
    st = _stat(pid)
    return st is None or st[0] == "Z"


def _start(mode: str, *args: str) -> Server:
    app, env = MODES[mode]
    srv = Server([*app, "--no-access-log", "--log-level", "debug", *args], env=env)
    srv.wait_ready()
    return srv


def _replaced(srv: Server) -> dict[int, str]:
    """The workers the supervisor decided to replace, with the reason it logged."""
    return {int(m.group(1)): m.group(2) for m in map(REPLACING_RE.search, srv.lines()) if m}


def _check_recycled(srv: Server, load: PidLoad, old: set[int]) -> None:
    """Every original worker was replaced (then exited), one at a time, and new
    workers took over; not one request failed."""
    wait_until(lambda: old <= set(_replaced(srv)), 20, message=f"replacing {old}")
    for pid in old:
        wait_until(lambda pid=pid: _gone(pid), 20, message=f"worker {pid} to exit")
    new = srv.worker_pids() - old
    assert new, srv.output()
    wait_until(lambda: any(load.served.get(p) for p in new), 10, message="new workers serving")
    swaps = [(int(m.group(1)), int(m.group(2))) for m in map(REPLACES_RE.search, srv.lines()) if m]
    assert {o for _, o in swaps} >= old, srv.output()
    # One at a time: the next replacement starts only once the previous old worker
    # has exited.
    recycling = None
    for line in srv.lines():
        if m := STARTED_RE.search(line):
            assert recycling is None, f"{line!r} while {recycling} recycles:\n{srv.output()}"
            recycling = int(m.group(2))
        elif (m := STOPPED_RE.search(line)) and int(m.group(1)) == recycling:
            recycling = None
    assert not load.failures, (load.failures[:5], srv.output())


@pytest.mark.timeout(40)
@pytest.mark.parametrize("mode", list(MODES))
def test_max_requests(mode):
    srv = _start(mode, "--workers", "2", "--max-requests", "60", "--max-requests-jitter", "20")
    try:
        old = srv.worker_pids()
        with PidLoad(srv.url + "/", CLIENTS, timeout=10) as load:
            _check_recycled(srv, load, old)
        for pid, why in _replaced(srv).items():
            m = re.fullmatch(r"served (\d+) requests \(max-requests 60(?: \+ (\d+) jitter)?\)", why)
            assert m, why
            limit = int(m.group(1))
            assert 60 <= limit <= 80 and limit == 60 + int(m.group(2) or 0)
            # Counted per worker whatever --threads is: it answered at least that many
            # (more while its replacement started).
            assert load.served.get(pid, 0) >= limit, (pid, limit, load.served)
    finally:
        srv.kill()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("mode", list(MODES))
def test_worker_lifetime(mode):
    srv = _start(
        mode, "--workers", "2", "--worker-lifetime", "1.5", "--worker-lifetime-jitter", "0.5"
    )
    try:
        old = srv.worker_pids()
        with PidLoad(srv.url + "/", CLIENTS, timeout=10) as load:
            _check_recycled(srv, load, old)
        for pid in old:
            why = _replaced(srv)[pid]
            m = re.fullmatch(
                r"is ([\d.]+) seconds old \(worker-lifetime 1.5( \+ [\d.]+ jitter)?\)", why
            )
            assert m and float(m.group(1)) >= 1.5, why
    finally:
        srv.kill()


@pytest.mark.parametrize(
    ("setting", "actual", "shown"),
    [
        (60, 60, "60"),
        (60, 83, "60 + 23 jitter"),
        (1.5, 1.5, "1.5"),
        (1.5, 1.8, "1.5 + 0.3 jitter"),
        (3600.0, 3612.3456, "3600 + 12.346 jitter"),
        (1e6, 1e6 + 0.25, "1000000 + 0.25 jitter"),
        # A jitter drawn under 0.1 ms once read "1.5 + 1.67e-05 jitter", which the
        # lifetime test above (and any log parser) could not read: a rare flake.
        (1.5, 1.5 + 1.67e-5, "1.5 + 0 jitter"),
    ],
)
def test_recycle_reasons_show_plain_numbers(setting, actual, shown):
    assert _with_jitter(setting, actual) == shown


@pytest.mark.timeout(40)
@pytest.mark.parametrize("mode", list(MODES))
def test_worker_max_rss(mode):
    # One worker: capacity must not drop to zero while it is replaced.
    srv = _start(mode, "--workers", "1", "--worker-max-rss", "120")
    try:
        (old,) = srv.worker_pids()
        with PidLoad(srv.url + "/", CLIENTS, timeout=10) as load:
            wait_until(lambda: load.total() > 20, 10, message="load")
            assert httpx.get(srv.url + "/hold?mib=150", timeout=10).text == str(old)
            _check_recycled(srv, load, {old})
        why = _replaced(srv)[old]
        m = re.fullmatch(
            r"uses ([\d.]+), ([\d.]+), ([\d.]+) MiB of resident memory \(VmRSS, 3 samples "
            r"1 second apart; worker-max-rss 120 MiB\)",
            why,
        )
        assert m and all(float(v) > 120 for v in m.groups()), why
        # The replacement is small again: it is not replaced in turn.
        assert list(_replaced(srv)) == [old], srv.output()
    finally:
        srv.kill()


@pytest.mark.timeout(30)
def test_failed_replacement_keeps_the_old_worker(tmp_path):
    # The application breaks on disk after start: the replacement cannot load it. The
    # old worker is healthy, so it keeps serving (no stop, no failed request) and the
    # replacement is tried again later.
    broken = tmp_path / "broken"
    app, env = MODES["wsgi-inline"]
    srv = Server(
        [*app, "--no-access-log", "--workers", "1", "--max-requests", "50"],
        env={**env, "RECYCLE_APP_FAIL_IF": str(broken)},
    )
    try:
        srv.wait_ready()
        (old,) = srv.worker_pids()
        broken.write_text("")
        with PidLoad(srv.url + "/", CLIENTS, timeout=10) as load:
            srv.wait_for_line(
                rf"Could not replace worker {old}: new worker \d+ exited during start-up "
                rf"\(exit code 3\); worker {old} keeps serving, next attempt in 10 seconds",
                timeout=20,
            )
            served = load.total()
            wait_until(lambda: load.total() > served + 20, 10, message="the old worker serving")
        assert srv.proc.poll() is None
        assert srv.worker_pids() == {old}
        assert not load.failures, load.failures[:5]
    finally:
        srv.kill()


@pytest.mark.timeout(30)
def test_hung_old_worker_is_killed():
    # A stopped (SIGSTOP) old worker cannot drain: it is killed --graceful-timeout + 5 s
    # after it was told to, so the replacements queued behind it are not held up.
    app, env = MODES["wsgi-inline"]
    srv = Server(
        [
            *app,
            "--no-access-log",
            "--workers",
            "1",
            "--max-requests",
            "10",
            "--graceful-timeout",
            "1",
        ],
        env=env,
    )
    try:
        srv.wait_ready()
        (old,) = srv.worker_pids()
        with httpx.Client(timeout=10) as client:
            for _ in range(10):
                client.get(srv.url + "/")
        os.kill(old, signal.SIGSTOP)
        srv.wait_for_line(
            rf"Killing worker {old}, still running 6 seconds after it was replaced", timeout=15
        )
        wait_until(lambda: _gone(old), 5, message=f"worker {old} to exit")
        (new,) = srv.worker_pids()
        assert httpx.get(srv.url + "/", timeout=10).text == str(new)
    finally:
        srv.kill()


@pytest.mark.timeout(30)
def test_reload_during_recycling():
    # Workers replaced every second or so, and a SIGHUP in the middle: the reload takes
    # over from the queue, recycling goes on after it, and no request fails.
    srv = _start("asgi-one-thread", "--workers", "2", "--worker-lifetime", "1")
    try:
        with PidLoad(srv.url + "/", CLIENTS, timeout=10) as load:
            srv.wait_for_line(REPLACES_RE, timeout=15)
            before = srv.worker_pids()
            srv.send_signal(signal.SIGHUP)
            srv.wait_for_line("Reload complete", timeout=15)
            for pid in before:
                wait_until(lambda pid=pid: _gone(pid), 20, message=f"worker {pid} to exit")
            mark = srv.mark()
            srv.wait_for_line(REPLACES_RE, timeout=15, start=mark)
            served = load.total()
            wait_until(lambda: load.total() > served + 20, 10, message="serving on")
        assert not load.failures, (load.failures[:5], srv.output())
        assert len(srv.worker_pids()) >= 2
    finally:
        srv.kill()
