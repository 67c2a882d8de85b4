"""ASGI lifespan: startup/shutdown, failures, ``--lifespan auto|on|off``, ``state``.

The fixture app writes marker files into $GM_TEST_DIR when it sees lifespan events;
$GM_LIFESPAN picks how it behaves (see tests/apps/asgi_lifespan_app.py).
"""

from __future__ import annotations

import json
import signal

import pytest

from _support import http_request, wait_for_file, wait_until

# Every test here runs once per ASGI mode (one thread, loop thread).
pytestmark = pytest.mark.usefixtures("asgi_mode")

APP = "asgi_lifespan_app:app"


def env(tmp_path, mode: str = "ok") -> dict[str, str]:
    return {"GM_TEST_DIR": str(tmp_path), "GM_LIFESPAN": mode}


def markers(tmp_path, prefix: str) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(prefix))


def test_startup_before_traffic_and_shutdown_on_sigterm(server, tmp_path):
    srv = server(APP, env=env(tmp_path))
    (worker,) = srv.worker_pids()
    # Startup completed before the worker was ready: no waiting needed.
    assert (tmp_path / f"startup-{worker}").exists()
    seen = json.loads((tmp_path / f"lifespan-seen-{worker}").read_text())
    assert seen == {"version": "3.0", "spec_version": "2.4"}
    r = srv.get("/")
    assert r.status_code == 200
    assert r.json()["state"] == {"greeting": "hello from startup", "pid": worker}
    assert not (tmp_path / f"shutdown-{worker}").exists()
    assert srv.stop(signal.SIGTERM) == 0, srv.output()
    # shutdown ran, after the request was served
    assert (tmp_path / f"shutdown-{worker}").read_text() == "1"


def test_state_is_a_shallow_copy_per_request(server, tmp_path):
    srv = server(APP, env=env(tmp_path))
    (worker,) = srv.worker_pids()
    original = {"greeting": "hello from startup", "pid": worker}
    assert srv.get("/?mutate").json()["state"] == original
    for _ in range(2):
        assert srv.get("/").json()["state"] == original


def test_every_worker_runs_lifespan(server, tmp_path):
    srv = server("--workers", "2", APP, env=env(tmp_path))
    workers = wait_until(
        lambda: (p := srv.worker_pids()) and len(p) == 2 and p, 10, message="two workers"
    )
    assert markers(tmp_path, "startup-") == sorted(f"startup-{pid}" for pid in workers)
    assert srv.stop(signal.SIGTERM) == 0, srv.output()
    assert markers(tmp_path, "shutdown-") == sorted(f"shutdown-{pid}" for pid in workers)


@pytest.mark.parametrize("lifespan", ["auto", "on"])
def test_startup_failed_stops_the_server(gristmill_exit, tmp_path, lifespan):
    code, out = gristmill_exit(
        ["--port", "0", "--lifespan", lifespan, APP], env=env(tmp_path, "fail")
    )
    assert code == 3, out
    assert "gm-startup-failed" in out
    assert "startup failed" in out
    assert "Listening on" not in out


def test_lifespan_on_with_an_app_that_raises_on_lifespan(gristmill_exit, tmp_path):
    code, out = gristmill_exit(["--port", "0", "--lifespan", "on", APP], env=env(tmp_path, "raise"))
    assert code == 3, out
    assert "gm-no-lifespan-here" in out
    assert "RuntimeError" in out
    assert "Listening on" not in out


def test_lifespan_auto_with_an_app_that_raises_on_lifespan(server, tmp_path):
    srv = server("--lifespan", "auto", "--log-level", "debug", APP, env=env(tmp_path, "raise"))
    (worker,) = srv.worker_pids()
    assert (tmp_path / f"lifespan-seen-{worker}").exists()
    srv.wait_for_line(r"\[DEBUG\] ASGI lifespan not supported .*gm-no-lifespan-here")
    r = srv.get("/")
    assert r.status_code == 200
    assert "ERROR" not in srv.output()
    assert srv.stop(signal.SIGTERM) == 0, srv.output()
    assert "ERROR" not in srv.output()


def test_lifespan_off_never_sends_lifespan(server, tmp_path):
    srv = server("--lifespan", "off", APP, env=env(tmp_path))
    r = srv.get("/")
    assert r.status_code == 200
    assert srv.stop(signal.SIGTERM) == 0, srv.output()
    assert markers(tmp_path, "") == [], "the app saw a lifespan event"


def test_lifespan_on_with_a_supporting_app(server, tmp_path):
    srv = server("--lifespan", "on", APP, env=env(tmp_path))
    (worker,) = srv.worker_pids()
    assert srv.get("/").json()["state"] == {"greeting": "hello from startup", "pid": worker}


def test_shutdown_failed_is_logged(server, tmp_path):
    srv = server(APP, env=env(tmp_path, "shutdown-fail"))
    (worker,) = srv.worker_pids()
    assert srv.get("/").status_code == 200
    srv.stop(signal.SIGTERM)
    assert wait_for_file(tmp_path / f"shutdown-{worker}") == "1"
    srv.wait_for_line(r"\[ERROR\] ASGI lifespan shutdown failed: gm-shutdown-failed")


def test_connections_are_closed_before_lifespan_shutdown(server, tmp_path):
    """A connection the graceful drain gave up on is ended before lifespan shutdown
    runs, not served on while the application shuts down."""
    srv = server(APP, "--graceful-timeout", "1", env=env(tmp_path, "shutdown-slow"))
    (worker,) = srv.worker_pids()
    with srv.raw() as conn:
        # A request whose body never comes keeps the connection busy past the drain.
        conn.send(http_request("POST", "/", headers={"Content-Length": "10"}))
        srv.send_signal(signal.SIGTERM)
        wait_for_file(tmp_path / f"shutdown-{worker}")
        # The application takes 3 s to shut down; the connection ends well before.
        conn.read_to_eof(2.0)
    assert srv.stop() == 0, srv.output()
