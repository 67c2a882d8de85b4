"""A tiny WSGI application: `gristmill examples/hello.py` (or `make run`).

``/`` answers ``hello, world``; any other path echoes the request back as plain text
(method, path, query, headers and body size), which is handy for poking at the server
with curl.
"""


def application(environ, start_response):
    if environ["PATH_INFO"] == "/" and environ["REQUEST_METHOD"] in ("GET", "HEAD"):
        body = b"hello, world\n"
    else:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        received = environ["wsgi.input"].read(size) if size else environ["wsgi.input"].read()
        lines = [
            f"{environ['REQUEST_METHOD']} {environ['SCRIPT_NAME']}{environ['PATH_INFO']}",
            f"query: {environ.get('QUERY_STRING', '')}",
            f"protocol: {environ['SERVER_PROTOCOL']}",
            f"client: {environ.get('REMOTE_ADDR', '')}",
            f"body: {len(received)} bytes",
            "headers:",
        ]
        lines += [
            f"  {key[5:].replace('_', '-').title()}: {value}"
            for key, value in sorted(environ.items())
            if key.startswith("HTTP_")
        ]
        body = ("\n".join(lines) + "\n").encode("latin-1", "replace")
    start_response(
        "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]
