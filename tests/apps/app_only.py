"""Loader fixture: a module with only an `app` attribute (no `application`)."""

import json


def app(environ, start_response):
    body = json.dumps({"name": "app-only"}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
