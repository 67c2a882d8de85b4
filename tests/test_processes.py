"""Processes and signals: readiness, respawn, graceful stop, rolling restart, scaling."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import threading
import time

import httpx
import pytest

from _support import free_port, group_members, http_request, proc_status, wait_until

APP = "process_app:application"


def pid_of(srv) -> int:
    r = srv.get("/")
    assert r.status_code == 200
    return int(r.text)


def test_readiness_only_after_every_worker_imported(server):
    srv = server("--workers", "2", "slow_import:application")
    lines = srv.lines()
    ready_at = lines.index(srv.ready_line)
    imported = [line for line in lines[:ready_at] if "GM-IMPORTED" in line]
    assert len(imported) == 2, lines
    assert srv.ready_line.endswith("(2 workers)")
    # imported once per worker, never per request
    for _ in range(5):
        assert srv.get("/").status_code == 200
    assert sum("GM-IMPORTED" in line for line in srv.lines()) == 2


def test_readiness_line_single_worker(server):
    srv = server(APP)
    assert re.search(r"Listening on http://127\.0\.0\.1:\d+ \(1 worker\)$", srv.ready_line)
    assert srv.workers == 1
    assert len(srv.worker_pids()) == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_killed_worker_is_respawned(server, workers):
    srv = server("--workers", str(workers), APP)
    wait_until(lambda: len(srv.worker_pids()) == workers, 10, message="workers")
    before = srv.worker_pids()
    victim = pid_of(srv)
    assert victim in before
    mark = srv.mark()
    os.kill(victim, signal.SIGKILL)
    srv.wait_for_line(
        rf"Worker {victim} exited unexpectedly \(.+\); starting a new one", start=mark
    )
    for _ in range(20):
        assert pid_of(srv) != victim  # every request succeeds, none on the dead worker
    new = wait_until(
        lambda: (p := srv.worker_pids()) and len(p) == workers and victim not in p and p,
        10,
        message="a replacement worker",
    )
    assert new - before, "no new worker pid"
    if workers == 1:
        assert pid_of(srv) in new - before


def _slow_request_started(srv) -> tuple[threading.Thread, dict[str, object]]:
    """GET /slow (1.5 s) on a thread; return once the application call has begun. The
    dict gets the response's status and body, or the client's error."""
    result: dict[str, object] = {}

    def slow_request():
        try:
            r = httpx.get(f"{srv.url}/slow?s=1.5", timeout=10)
            result["status"], result["body"] = r.status_code, r.content
        except Exception as e:  # noqa: BLE001 - reported by the callers' assertions
            result["error"] = repr(e)

    mark = srv.mark()
    t = threading.Thread(target=slow_request)
    t.start()
    srv.wait_for_line(r"GM-SLOW-START", start=mark)
    return t, result


def test_sigterm_answers_a_connection_still_in_the_listen_queue(server):
    """A client connects and sends its request while the worker's only thread is in a
    slow application call (inline WSGI: nothing accepts, the kernel queues the
    connection); then SIGTERM. The drain takes the queued connection and answers it with
    `Connection: close`, rather than leaving it to be reset when the listener closes."""
    srv = server("--graceful-timeout", "10", APP)
    t, slow = _slow_request_started(srv)
    with srv.raw() as conn:
        conn.send(http_request("GET", "/queued"))
        code = srv.stop(signal.SIGTERM, timeout=15)
        head = conn.read_head()
        rest = conn.read_to_eof(5.0)
    t.join(10)
    assert slow == {"status": 200, "body": b"slow done"}
    assert head.status == 200, head.head
    assert head.header("connection") == "close"
    assert rest.isdigit(), rest  # the worker's pid: the whole body, then the close
    assert code == 0, srv.output()


def test_sigterm_finishes_in_flight_request_and_exits_0(server):
    srv = server("--graceful-timeout", "10", APP)
    t, result = _slow_request_started(srv)
    code = srv.stop(signal.SIGTERM, timeout=15)
    t.join(10)
    assert result == {"status": 200, "body": b"slow done"}
    assert code == 0, srv.output()
    out = srv.output()
    assert "Shutting down (SIGTERM)" in out
    assert "Shutdown complete" in out
    wait_until(lambda: not group_members(srv.pgid), 2, message="no worker left behind")


def test_sigint_stops_with_exit_0(server):
    srv = server(APP)
    assert srv.get("/").status_code == 200
    assert srv.stop(signal.SIGINT) == 0


def test_second_sigint_forces_the_stop(server):
    srv = server("--graceful-timeout", "30", APP)
    mark = srv.mark()
    t = threading.Thread(
        target=lambda: _swallow(lambda: httpx.get(f"{srv.url}/slow?s=20", timeout=25))
    )
    t.start()
    srv.wait_for_line(r"GM-SLOW-START", start=mark)
    srv.send_signal(signal.SIGINT)
    srv.wait_for_line(r"Shutting down \(SIGINT\)", start=mark)
    start = time.monotonic()
    srv.send_signal(signal.SIGINT)  # impatient: do not wait for the slow request
    assert srv.proc.wait(timeout=10) == 1
    assert time.monotonic() - start < 5
    assert any("Forcing shutdown (SIGINT)" in line for line in srv.lines(mark))
    t.join(timeout=25)
    wait_until(lambda: not srv.group_alive(), 10, message="no process left")


def test_graceful_timeout_bounds_shutdown(server):
    srv = server("--graceful-timeout", "1", APP)
    mark = srv.mark()
    t = threading.Thread(
        target=lambda: _swallow(lambda: httpx.get(f"{srv.url}/slow?s=20", timeout=25))
    )
    t.start()
    srv.wait_for_line(r"GM-SLOW-START", start=mark)
    start = time.monotonic()
    srv.stop(signal.SIGTERM, timeout=10)
    assert time.monotonic() - start < 6
    t.join(10)


def _swallow(fn):
    try:
        fn()
    except Exception:  # noqa: BLE001 - the request is expected to be cut off
        pass


def test_sighup_rolling_restart_loses_no_request(server):
    srv = server("--workers", "2", APP)
    wait_until(lambda: len(srv.worker_pids()) == 2, 10, message="two workers")
    old = srv.worker_pids()
    stop = threading.Event()
    reloaded = threading.Event()
    results: list[tuple[bool, bool, object]] = []  # (after reload, ok, pid or error)

    def loop():
        while not stop.is_set():
            after = reloaded.is_set()
            try:
                with httpx.Client(timeout=10) as c:
                    r = c.get(srv.url + "/")
                results.append(
                    (
                        after,
                        r.status_code == 200,
                        int(r.text) if r.status_code == 200 else r.status_code,
                    )
                )
            except Exception as e:  # noqa: BLE001 - counted as a failed request
                results.append((after, False, repr(e)))

    t = threading.Thread(target=loop)
    t.start()
    try:
        wait_until(lambda: len(results) >= 5, 10, message="requests before reload")
        mark = srv.mark()
        srv.send_signal(signal.SIGHUP)
        srv.wait_for_line(r"Reloading workers \(SIGHUP\)", start=mark, timeout=10)
        srv.wait_for_line(r"Reload complete", start=mark, timeout=30)
        reloaded.set()
        count = len(results)
        wait_until(lambda: len(results) >= count + 20, 15, message="requests after reload")
    finally:
        stop.set()
        t.join(15)
    failures = [r for r in results if not r[1]]
    assert failures == [], failures
    after_pids = {pid for after, _, pid in results if after}
    assert after_pids and not after_pids & old, (after_pids, old)
    new = srv.worker_pids()
    assert len(new) == 2 and not new & old


def test_sigttin_and_sigttou_scale_workers(server):
    srv = server("--workers", "1", APP)
    wait_until(lambda: len(srv.worker_pids()) == 1, 10, message="one worker")
    first = srv.worker_pids()
    srv.send_signal(signal.SIGTTIN)
    two = wait_until(
        lambda: (p := srv.worker_pids()) and len(p) == 2 and p,
        10,
        message="a second worker after SIGTTIN",
    )
    assert first < two
    for _ in range(10):
        assert pid_of(srv) in two
    srv.send_signal(signal.SIGTTOU)
    wait_until(lambda: len(srv.worker_pids()) == 1, 15, message="one worker after SIGTTOU")
    for _ in range(10):
        assert pid_of(srv) in srv.worker_pids()


def test_pid_file(server, tmp_path):
    pid_file = tmp_path / "gristmill.pid"
    srv = server("--pid-file", str(pid_file), APP)
    assert int(pid_file.read_text().strip()) == srv.pid
    assert srv.stop() == 0
    assert not pid_file.exists()


def test_unix_socket(server, tmp_path):
    path = str(tmp_path / "gm.sock")
    srv = server("--uds", path, APP, expect_ready=False)

    def accepting():
        assert srv.proc.poll() is None, srv.output()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(path)
            except OSError:
                return False
        return True

    wait_until(accepting, 30, interval=0.05, message="the unix socket to accept")
    with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=5) as client:
        r = client.get("http://gristmill/")
    assert r.status_code == 200 and int(r.text) in srv.worker_pids()
    assert srv.stop() == 0


def test_fixed_port_and_host(server):
    port = free_port()
    srv = server("--host", "127.0.0.1", "--port", str(port), APP)
    assert srv.port == port
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("path", "reason"), [("/exit", r"exit code 7"), ("/segfault", r"killed by SIGSEGV")]
)
def test_worker_dying_inside_the_app_is_respawned(server, path, reason):
    srv = server(APP)
    victim = pid_of(srv)
    mark = srv.mark()
    with pytest.raises(httpx.TransportError):
        srv.get(path)
    srv.wait_for_line(
        rf"Worker {victim} exited unexpectedly \({reason}\); starting a new one", start=mark
    )
    replacement = pid_of(srv)  # the next request is served, by a new worker
    assert replacement != victim


# Runs the gristmill command with one change: when the supervisor's run() has returned
# (the stop is over and its signal handlers are gone), the process sends itself SIGTERM
# and SIGINT, as an impatient process manager or a second Ctrl-C would just then.
LATE_SIGNALS_LAUNCHER = [
    sys.executable,
    "-c",
    "import os, signal, sys\n"
    "from gristmill import cli, supervisor\n"
    "run = supervisor.Supervisor.run\n"
    "def late(self, *a, **kw):\n"
    "    code = run(self, *a, **kw)\n"
    "    print('GM-LATE-SIGNALS', flush=True)\n"
    "    os.kill(os.getpid(), signal.SIGTERM)\n"
    "    os.kill(os.getpid(), signal.SIGINT)\n"
    "    return code\n"
    "supervisor.Supervisor.run = late\n"
    "sys.argv[0] = 'gristmill'\n"
    "cli.main()\n",
]


def test_stop_signals_after_the_stop_do_not_change_the_exit_code(server):
    """The supervisor used to restore the default handlers before exiting: a second
    SIGTERM in that window killed it (-15) instead of letting it exit 0."""
    srv = server(APP, launcher=LATE_SIGNALS_LAUNCHER)
    code = srv.stop(signal.SIGTERM)
    out = srv.output()
    assert "GM-LATE-SIGNALS" in out, out
    assert code == 0, out
    assert "KeyboardInterrupt" not in out


def _anon_huge_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    return 0


def test_workers_use_no_transparent_huge_pages(server):
    """mimalloc commits its arenas as used, without marking them for transparent huge
    pages (which cost several MiB of RSS per worker); the variable that says so is not
    left in the application's environment."""
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
        if "[madvise]" not in f.read():
            pytest.skip("huge pages here are not given on request (madvise) alone")
    srv = server(APP)
    (worker,) = srv.worker_pids()
    for _ in range(50):
        assert srv.get("/").status_code == 200
    assert _anon_huge_kib(worker) == 0
    assert srv.get("/env?name=MIMALLOC_ARENA_EAGER_COMMIT").text == "<unset>"


def _title(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")[0].decode()


@pytest.mark.parametrize(
    ("target", "name", "shown"),
    [
        ("http_app:application", ["--process-name", "shop"], "shop"),
        ("asgi_http_app:app", [], "asgi_http_app:app"),
    ],
)
def test_process_titles(server, target, name, shown):
    """`ps` shows what each process is: the supervisor and numbered workers, with the
    --process-name, else the application target."""
    pytest.importorskip("setproctitle")
    srv = server(target, "--workers", "2", *name)
    assert _title(srv.pid) == f"gristmill: supervisor [{shown}]"
    titles = sorted(_title(pid) for pid in srv.worker_pids())
    assert titles == [f"gristmill: worker 1 [{shown}]", f"gristmill: worker 2 [{shown}]"]
    # A replacement gets the next number.
    before = srv.worker_pids()
    first = min(before)
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: len(srv.worker_pids() - {first}) == 2, 20, message="a replacement")
    (new,) = srv.worker_pids() - before
    # The child sets its title just after the fork: until then it shows the supervisor's.
    expected = f"gristmill: worker 3 [{shown}]"
    wait_until(lambda: _title(new) == expected, 10, message=f"the title {expected!r}")


@pytest.mark.parametrize("max_connections", [300, 1024])
def test_worker_descriptor_table_is_sized_before_threads_start(server, max_connections):
    """A worker grows its descriptor table for --max-connections (plus headroom) before
    any thread exists: grown later, with threads, each growth sleeps through an RCU grace
    period while clients wait (every replacement under load used to, as its predecessor's
    clients reconnected together). /proc shows the table's size (FDSize)."""
    srv = server(APP, "--workers", "2", "--max-connections", str(max_connections))
    for pid in srv.worker_pids():
        assert proc_status(pid, "FDSize") >= max_connections + 64, pid
