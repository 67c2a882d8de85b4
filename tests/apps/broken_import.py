"""Loader fixture: importing this module fails inside it."""

import gm_this_module_does_not_exist  # noqa: F401


def application(environ, start_response):  # pragma: no cover - never reached
    start_response("200 OK", [])
    return [b""]
