"""WSGI environ fixture: reports the environ as JSON, behind wsgiref's validator.

The validator asserts the PEP 3333 environ and the server/app protocol; any violation
becomes an exception, so the server answers 500 instead of 200. Its warnings are turned
into errors too (only WSGIWarning, so the server's own warnings are untouched).
"""

import hashlib
import json
import os
import warnings
from wsgiref.validate import WSGIWarning, validator

warnings.filterwarnings("error", category=WSGIWarning)


def _jsonable(value):
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, tuple):
        return list(value)
    return f"<{type(value).__name__}>"


def _raw_application(environ, start_response):
    digest = hashlib.sha256()
    length = 0
    while True:
        block = environ["wsgi.input"].read(65536)
        if not block:
            break
        digest.update(block)
        length += len(block)
    report = {k: _jsonable(v) for k, v in environ.items()}
    report["_body_sha256"] = digest.hexdigest()
    report["_body_length"] = length
    report["_pid"] = os.getpid()
    report["_has"] = {
        "file_wrapper": callable(environ.get("wsgi.file_wrapper")),
        "input.read": hasattr(environ["wsgi.input"], "read"),
        "errors.write": hasattr(environ["wsgi.errors"], "write"),
    }
    body = json.dumps(report).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


application = validator(_raw_application)
