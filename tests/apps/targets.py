"""Loader fixture: one WSGI app per target form, each saying who it is and what it saw."""

import json
import os
import sys

IMPORTED_AS = __name__


def _make(name):
    def wsgi(environ, start_response):
        body = json.dumps(
            {
                "name": name,
                "argv": sys.argv,
                "module": IMPORTED_AS,
                "file": __file__,
                "cwd": os.getcwd(),
                "pid": os.getpid(),
                "env": {k: v for k, v in os.environ.items() if k.startswith("GM_TEST_")},
            }
        ).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return wsgi


application = _make("application")
app = _make("app")
custom = _make("custom")


class _Holder:
    def __init__(self):
        self.inner = _Inner()


class _Inner:
    wsgi = staticmethod(_make("dotted"))


holder = _Holder()

FACTORY_CALLS = 0


def create_app():
    global FACTORY_CALLS
    FACTORY_CALLS += 1
    return _make(f"factory-{FACTORY_CALLS}")


not_callable = 42
