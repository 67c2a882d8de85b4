"""Application errors and invalid output: each path breaks the WSGI contract one way."""


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/ok":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    if path == "/raise-before":
        raise RuntimeError("gm-boom-before-start")
    if path == "/no-sr":
        return [b"body without start_response"]
    if path == "/st-int":
        start_response(200, [("Content-Type", "text/plain")])
        return [b"x"]
    if path == "/st-short":
        start_response("200", [("Content-Type", "text/plain")])
        return [b"x"]
    if path == "/st-garbage":
        start_response("OK 200", [("Content-Type", "text/plain")])
        return [b"x"]
    if path == "/hn-bytes":
        start_response("200 OK", [(b"X-Bad", "v")])
        return [b"x"]
    if path == "/hv-number":
        start_response("200 OK", [("X-Bad", 5)])
        return [b"x"]
    if path == "/hv-crlf":
        start_response("200 OK", [("X-Bad", "a\r\nInjected: yes")])
        return [b"x"]
    if path == "/hn-space":
        start_response("200 OK", [("X Bad", "v")])
        return [b"x"]
    if path == "/body-text":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["a str, not bytes"]
    if path == "/body-42":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return 42
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]
