"""Worker-timeout fixture: ``application`` (WSGI) and ``app`` (ASGI) answer by path.

- ``/`` answers at once with the worker's pid (as text);
- ``/gil`` runs a regular expression that backtracks for hours inside the C regex
  engine, which never releases the GIL (in a function named ``hog_the_gil``, which the
  stack dump must show);
- ``/spin`` (ASGI) loops in pure Python without ever awaiting (``spin_forever``): the
  GIL changes hands, but the event loop never runs another callback;
- ``/sleep?s=N`` waits N seconds the cooperative way (``asyncio.sleep`` in ASGI,
  ``time.sleep``, which releases the GIL, in WSGI), then answers with the pid.

Each handler writes ``start /path`` to stderr when it starts, so a test knows the
request reached the application before it waits for the worker to hang. With
``HANG_IMPORT_SECONDS=N`` in the environment the import itself takes N seconds; with
``HANG_IGNORE_SIGABRT=1`` the worker ignores SIGABRT (replacing faulthandler's handler),
so only SIGKILL ends it.
"""

import asyncio
import os
import re
import signal
import sys
import time
from urllib.parse import parse_qs

import _lifespan

time.sleep(float(os.environ.get("HANG_IMPORT_SECONDS", "0")))
if os.environ.get("HANG_IGNORE_SIGABRT"):
    signal.signal(signal.SIGABRT, signal.SIG_IGN)


def _pid() -> bytes:
    return str(os.getpid()).encode()


def _started(path: str) -> None:
    print(f"start {path}", file=sys.stderr, flush=True)


def hog_the_gil() -> None:
    # 2**40 ways to split the a's before failing at the b: hours in _sre, GIL held.
    re.match(r"(a+)+$", "a" * 40 + "b")


def spin_forever() -> None:
    while True:
        pass


def _seconds(query: str) -> float:
    return float(parse_qs(query).get("s", ["0"])[0])


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path != "/":
        _started(path)
    if path == "/gil":
        hog_the_gil()
    elif path == "/spin":
        spin_forever()
    elif path == "/sleep":
        time.sleep(_seconds(environ.get("QUERY_STRING", "")))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [_pid()]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan.complete(receive, send)
    path = scope["path"]
    if path != "/":
        _started(path)
    if path == "/gil":
        hog_the_gil()
    elif path == "/spin":
        spin_forever()
    elif path == "/sleep":
        await asyncio.sleep(_seconds(scope["query_string"].decode()))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": _pid()})
