"""Loader fixture in a sub-folder: its folder must be importable (sibling import)."""

import json

import nested_helper  # a sibling module: the file's folder is on sys.path


def application(environ, start_response):
    body = json.dumps({"name": "nested", "helper": nested_helper.VALUE, "file": __file__}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
