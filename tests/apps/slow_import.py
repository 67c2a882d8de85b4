"""Process fixture: a slow import that reports itself, to check readiness ordering."""

import os
import sys
import time

time.sleep(0.5)
# One write of the whole line: print() writes the text and the newline separately, and
# two workers importing at once then interleave them on the shared stderr pipe.
sys.stderr.write(f"GM-IMPORTED pid={os.getpid()}\n")
sys.stderr.flush()


def application(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
