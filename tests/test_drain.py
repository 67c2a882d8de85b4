"""Graceful retirement under a keep-alive load, in every execution mode.

SIGTERM (the whole server), SIGHUP (the old workers of a rolling restart) and SIGTTOU
(one worker fewer) all retire a worker the same way: it stops accepting, finishes the
requests it already received and answers them with ``Connection: close``, closes its
idle connections at once, and exits as soon as that work is done. Each test runs two
workers under a steady load of keep-alive clients, sends the signal, and checks three
things about every retired worker:

- no request sent before the signal failed (for SIGHUP and SIGTTOU, where other workers
  go on serving, no request failed at all);
- no old connection started more than one request after the worker was told to stop:
  the one its client had already sent, or was sending while its last response was
  fresh (the bug this guards against kept serving old connections until
  ``--graceful-timeout``);
- the worker exited within about one request's duration after its last request ended.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import httpx
import pytest

from _support import Server, _stat, every_mode, wait_until

#: Every execution mode: WSGI inline and pool, ASGI one-thread and loop-thread.
MODES = every_mode("drain_app:application", "drain_app:app")
CLIENTS = 20
REQUEST_SECONDS = 0.05


@dataclass
class Sent:
    at: float
    ok: bool
    info: dict | None = None
    error: str = ""


def _load(url: str, stop: threading.Event, out: list[Sent]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            at = time.monotonic()
            try:
                r = client.post(url, content=b"payload")
                r.raise_for_status()
                info = json.loads(r.content)
                info["close"] = r.headers.get("connection", "").lower() == "close"
                out.append(Sent(at, True, info))
            except httpx.HTTPError as e:
                out.append(Sent(at, False, error=repr(e)))


def _connections(results: list[list[Sent]]) -> dict[tuple[int, int, int], list[dict]]:
    """The requests each client connection served, keyed by (worker pid, client port, n).

    A client's next request goes on a new connection after a failure, after a response
    with ``Connection: close``, or when the port changes. A new connection may get the
    port of one just closed, so the port alone does not name a connection.
    """
    by_conn: dict[tuple[int, int, int], list[dict]] = defaultdict(list)
    for n, out in enumerate(results):
        key = None
        for s in out:
            if not s.ok:
                key = None
                continue
            info = s.info
            if key is None or key[:2] != (info["pid"], info["port"]):
                key = (info["pid"], info["port"], n * 1_000_000 + len(by_conn))
            by_conn[key].append(info)
            if info["close"]:
                key = None
    return by_conn


def _gone(pid: int) -> bool:
    st = _stat(pid)
    return st is None or st[0] == "Z"


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGTTOU"])
@pytest.mark.parametrize("mode", list(MODES))
def test_retired_worker_drains_and_exits(mode, sig):
    args, env = MODES[mode]
    srv = Server(
        [*args, "--workers", "2", "--graceful-timeout", "20", "--no-access-log"],
        env={**env, "DRAIN_APP_SECONDS": str(REQUEST_SECONDS)},
    )
    try:
        srv.wait_ready()
        old = srv.worker_pids()
        assert len(old) == 2
        results: list[list[Sent]] = [[] for _ in range(CLIENTS)]
        stop = threading.Event()
        threads = [
            threading.Thread(target=_load, args=(srv.url + "/", stop, out), daemon=True)
            for out in results
        ]
        for t in threads:
            t.start()
        # Steady load on every client's connection first.
        wait_until(lambda: all(sum(s.ok for s in out) >= 3 for out in results), 20, message="load")
        signum = getattr(signal, sig)
        mark = srv.mark()
        t_sig = time.monotonic()
        srv.send_signal(signum)
        retired = old if sig in ("SIGTERM", "SIGHUP") else None
        if retired is None:  # SIGTTOU retires the newest worker
            wait_until(lambda: len(old - srv.worker_pids()) == 1, 20, message="a worker gone")
            retired = old - srv.worker_pids()
        exited: dict[int, float] = {}

        def all_exited():
            for pid in retired:
                if pid not in exited and _gone(pid):
                    exited[pid] = time.monotonic()
            return len(exited) == len(retired)

        wait_until(all_exited, 25, interval=0.005, message="the retired workers to exit")
        stopped = {pid: srv.line_arrival(rf"\[{pid}\] .*Draining", start=mark) for pid in retired}
        assert None not in stopped.values(), srv.output()
        if sig != "SIGTERM":
            # The other workers go on serving: let the load run into them.
            wait_until(
                lambda: (
                    sum(s.ok and s.at > max(exited.values()) for o in results for s in o) >= CLIENTS
                ),
                20,
                message="requests served after the retirement",
            )
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        srv.kill()

    sent = [s for out in results for s in out]
    failed_before = [s for s in sent if not s.ok and s.at < t_sig]
    assert not failed_before, failed_before[:3]
    if sig != "SIGTERM":
        failed = [s for s in sent if not s.ok]
        assert not failed, f"{len(failed)} requests failed, e.g. {failed[:3]}"

    served = [s.info for s in sent if s.ok]
    by_conn = _connections(results)
    for pid in retired:
        # When the worker began its drain (the line follows the start by a little). On
        # SIGHUP that is when the new workers were ready; in inline WSGI mode, after the
        # application call that was running.
        t_stop = stopped[pid]
        mine = [i for i in served if i["pid"] == pid]
        assert mine, f"worker {pid} served nothing"
        for (p, port, _), infos in by_conn.items():
            if p != pid or min(i["start"] for i in infos) > t_stop:
                continue  # another worker's, or a connection opened after the stop
            after = [i for i in infos if i["start"] > t_stop]
            assert len(after) <= 1, (
                f"worker {pid} started {len(after)} requests on an old connection "
                f"(port {port}) after {sig}"
            )
        last_end = max(i["end"] for i in mine)
        took = exited[pid] - last_end
        assert took < 1.0, f"worker {pid} exited {took:.2f} s after its last request ended"
