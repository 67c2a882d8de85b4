"""Process fixture: which worker answered, a slow request for graceful stops, and ways
for a worker to die (``/exit``: ``os._exit(7)``; ``/segfault``: a crash in C code)."""

import os
import sys
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    path = environ["PATH_INFO"]
    qs = parse_qs(environ["QUERY_STRING"])
    if path == "/env":
        value = os.environ.get(qs["name"][0], "<unset>")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [value.encode()]
    if path == "/exit":
        os._exit(7)  # the worker ends without any cleanup
    if path == "/segfault":
        import ctypes

        ctypes.string_at(0)  # a crash in C code: SIGSEGV
    if path == "/slow":
        seconds = float(qs.get("s", ["1.5"])[0])
        print(f"GM-SLOW-START pid={os.getpid()}", file=sys.stderr, flush=True)
        time.sleep(seconds)
        body = b"slow done"
    else:
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
