"""Fixture for how WSGI requests reach Python (inline vs thread pool).

/ticks: how often a background thread started at import has run (it needs the GIL
between requests). /thread-read: the body, read by a thread the application starts.
/hang: announces itself on stderr, then sleeps for ?s= seconds (default 60).
/thread-name: the name of the thread that runs the application.
"""

import gc
import sys
import threading
import time
from urllib.parse import parse_qs

_ticks = 0


def _tick() -> None:
    global _ticks
    while True:
        _ticks += 1
        time.sleep(0.005)


threading.Thread(target=_tick, daemon=True).start()


def _respond(start_response, body: bytes):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/ticks":
        return _respond(start_response, str(_ticks).encode())
    if path == "/thread-read":
        out = []
        t = threading.Thread(target=lambda: out.append(environ["wsgi.input"].read()))
        t.start()
        t.join(30)
        return _respond(start_response, out[0] if out else b"thread did not finish")
    if path == "/hang":
        secs = float(parse_qs(environ["QUERY_STRING"]).get("s", ["60"])[0])
        print("GM-HANG-START", file=sys.stderr, flush=True)
        time.sleep(secs)
        return _respond(start_response, b"woke")
    if path == "/gc-frozen":
        return _respond(start_response, str(gc.get_freeze_count()).encode())
    if path == "/thread-name":
        return _respond(start_response, threading.current_thread().name.encode())
    return _respond(start_response, b"ok")
