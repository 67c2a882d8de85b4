"""ASGI regressions found under load, each reproduced with real clients."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from pathlib import Path

import pytest

from _support import (
    TEXT,
    gated_log_config,
    http_request,
    raw_ws,
    wait_for_file,
    wait_until,
    ws_frame,
)


def test_responses_to_departed_clients_do_not_wedge_the_loop(server):
    """A response whose client already left used to deadlock the event loop thread:
    dropping the unwanted response re-locked the request state it was dropped under."""
    srv = server("asgi_abort_app:app")
    for n in range(5):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        # Leave only once the app has the request (else it may never reach the app).
        wait_until(lambda n=n: srv.output().count("slow-started") > n, timeout=10)
        s.close()
    wait_until(
        lambda: srv.output().count("slow-finished") == 5,
        timeout=10,
        message="all five responses to settle",
    )
    assert "slow-finished ClientDisconnected" in srv.output()
    assert srv.get("/").text == "ok"


# --- a slow log handler must not hold up the I/O threads -------------------------------------
# In the one-thread mode the log handler runs on the I/O thread itself; these are about
# the I/O thread beside the event loop's.
LOOP_THREAD = ("--runtime-threads", "1", "--loop", "uvloop")


def _io_thread_answers(srv) -> bool:
    """Whether the I/O thread answers a request it handles alone (no Host: a 400)."""
    with srv.raw(timeout=3) as conn:
        conn.send(b"GET / HTTP/1.1\r\n\r\n")
        try:
            return conn.final_response().status == 400
        except TimeoutError:
            return False


def test_a_blocked_log_handler_does_not_stall_websocket_io(server, tmp_path):
    """The access line of a finished WebSocket used to be logged with its state locked:
    a log handler that blocked left the socket task (and with it, with one I/O thread,
    the whole worker) waiting for that lock."""
    logging = gated_log_config(tmp_path, '"GET /return HTTP/1.1"')
    srv = server("asgi_ws_app:app", *LOOP_THREAD, "--log-config", logging)
    with raw_ws(srv, "/return") as ws:
        wait_for_file(tmp_path / "blocked")  # the app returned; its access line is stuck
        ws.send(ws_frame(TEXT, b"for the reader"))  # the socket task needs the state now
        answered = _io_thread_answers(srv)
        (tmp_path / "gate").write_text("open")
    assert answered, "the I/O thread waited for the blocked log handler"


def test_a_blocked_log_handler_does_not_stall_http_io(server, tmp_path):
    """The same for an HTTP request whose application raised: its error line used to be
    logged with the request state locked, which the connection needs when it drops the
    response."""
    logging = gated_log_config(tmp_path, "Exception in ASGI application for GET /v/raise")
    srv = server(
        "asgi_http_app:app",
        *LOOP_THREAD,
        "--log-config",
        logging,
        env={"GM_TEST_DIR": str(tmp_path)},
    )
    with srv.raw() as conn:
        conn.send(http_request("GET", "/v/raise-midstream"))
        wait_for_file(tmp_path / "blocked")  # the app raised; its error line is stuck
        conn.close()  # the connection drops the response: it needs the state now
        answered = _io_thread_answers(srv)
        (tmp_path / "gate").write_text("open")
    assert answered, "the I/O thread waited for the blocked log handler"


# --- pathsend opens its file with the request state unlocked ---------------------------------
def _blocked_opening_a_fifo(pid: int) -> bool:
    """Whether a thread of ``pid`` waits in open() for a FIFO's writer (wchan)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            if (task / "wchan").read_text().strip() == "wait_for_partner":
                return True
    return False


def _wchan_shows_fifo_opens(folder: Path) -> bool:
    """Whether this kernel names the wait of a thread blocked opening a FIFO (some hide
    wchan); checked on a thread of our own."""
    probe = folder / "probe-fifo"
    os.mkfifo(probe)
    t = threading.Thread(target=lambda: open(probe, "rb").close(), daemon=True)
    t.start()
    try:
        return bool(wait_until(lambda: _blocked_opening_a_fifo(os.getpid()), 2, message="probe"))
    except AssertionError:
        return False
    finally:
        with open(probe, "wb"):
            pass
        t.join(5)


def test_pathsend_opens_the_file_without_the_request_state_locked(server, tmp_path):
    """pathsend used to open and stat the file with the request's state locked: while
    the open blocked (a slow disk; here a FIFO nobody writes to yet), a client leaving
    made the I/O thread wait for that lock, and with one I/O thread the worker stalled."""
    if not _wchan_shows_fifo_opens(tmp_path):
        pytest.skip("this kernel does not show a blocked FIFO open in /proc/*/wchan")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    srv = server(
        "asgi_http_app:app",
        "--runtime-threads",
        "1",
        "--no-access-log",
        env={"GM_TEST_DIR": str(tmp_path)},
    )
    (worker,) = srv.worker_pids()
    with srv.raw() as conn:
        conn.send(http_request("GET", f"/pathsend?path={fifo}"))
        wait_until(lambda: _blocked_opening_a_fifo(worker), 10, message="pathsend opening")
        # The client leaves; once the server closed its side too, the connection has
        # dropped the request, which needs the state (in the same step of the I/O thread).
        conn.sock.shutdown(socket.SHUT_WR)
        assert conn.sock.recv(1) == b""
        answered = _io_thread_answers(srv)
        with open(fifo, "wb"):
            pass  # let the open finish (an empty file)
    assert answered, "the I/O thread waited for pathsend's file open"
    assert srv.get("/pathsend?path=" + str(_a_file(tmp_path))).content == b"pathsend body"


def _a_file(folder: Path) -> Path:
    path = folder / "plain"
    path.write_bytes(b"pathsend body")
    return path


# --- an application still running after its response keeps the worker draining ---------------
def test_drain_waits_for_an_application_still_running_after_its_response(server, tmp_path):
    """The connection's slot used to be released once the response was sent and the
    connection closed: a SIGTERM then ended the drain at once and the worker stopped
    under an application that was still working (Starlette background tasks)."""
    srv = server(
        "asgi_background_app:app",
        "--graceful-timeout",
        "20",
        env={"GM_TEST_DIR": str(tmp_path)},
    )
    assert srv.get("/bg").text == "sent"  # its connection is closed afterwards
    srv.wait_for_line("GM-BG-RESPONDED")
    mark = srv.mark()
    srv.send_signal(signal.SIGTERM)
    srv.wait_for_line(r"Shutting down \(SIGTERM\)", start=mark)
    (tmp_path / "release").write_text("go")
    assert srv.proc.wait(25) == 0, srv.output()
    srv.join_output(5)
    lines = srv.lines(mark)
    done = [i for i, line in enumerate(lines) if "GM-BG-DONE" in line]
    shutdown = [i for i, line in enumerate(lines) if "GM-LIFESPAN-SHUTDOWN" in line]
    assert done and shutdown and done[0] < shutdown[0], "\n".join(lines)


def test_an_application_still_running_after_its_response_holds_its_slot(server, tmp_path):
    """With --max-connections 1, the next client waits until the application returned,
    as it waits for a WebSocket whose application has not returned."""
    srv = server(
        "asgi_background_app:app",
        "--max-connections",
        "1",
        env={"GM_TEST_DIR": str(tmp_path)},
    )
    assert srv.get("/bg").text == "sent"
    srv.wait_for_line("GM-BG-RESPONDED")
    mark = srv.mark()
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("ping", srv.get("/ping").text))
    t.start()
    (tmp_path / "release").write_text("go")
    t.join(15)
    assert result == {"ping": "pong"}
    lines = srv.lines(mark)
    done = [i for i, line in enumerate(lines) if "GM-BG-DONE" in line]
    ping = [i for i, line in enumerate(lines) if "GM-PING" in line]
    assert done and ping and done[0] < ping[0], "\n".join(lines)
