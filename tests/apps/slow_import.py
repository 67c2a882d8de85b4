"""Process fixture: a slow import that reports itself, to check readiness ordering."""

import os
import sys
import time

time.sleep(0.5)
print(f"GM-IMPORTED pid={os.getpid()}", file=sys.stderr, flush=True)


def application(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
