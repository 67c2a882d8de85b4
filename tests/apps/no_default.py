"""Loader fixture: neither `application` nor `app` is defined."""


def something_else(environ, start_response):  # pragma: no cover - never served
    start_response("200 OK", [])
    return [b""]
