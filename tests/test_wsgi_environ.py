"""The WSGI environ, checked by an app wrapped in wsgiref.validate (PEP 3333)."""

from __future__ import annotations

import hashlib
import json

import pytest

from _support import chunked, http_request

APP = "environ_app:application"


def raw_environ(srv, request: bytes) -> dict:
    with srv.raw() as conn:
        conn.send(request)
        resp = conn.final_response()
    assert resp.status == 200, resp.body
    return json.loads(resp.body)


def test_get_environ(server):
    srv = server(APP)
    with srv.raw() as conn:
        conn.send(
            http_request(
                "GET",
                "/some/path?a=1&b=%20c&d",
                host=f"127.0.0.1:{srv.port}",
                headers={"User-Agent": "gm-test", "Accept": "*/*"},
            )
        )
        resp = conn.final_response()
        client_port = conn.local_port
    assert resp.status == 200, resp.body
    e = json.loads(resp.body)
    assert e["REQUEST_METHOD"] == "GET"
    assert e["SCRIPT_NAME"] == ""
    assert e["PATH_INFO"] == "/some/path"
    assert e["QUERY_STRING"] == "a=1&b=%20c&d"
    assert isinstance(e["SERVER_NAME"], str) and e["SERVER_NAME"]
    assert e["SERVER_PORT"] == str(srv.port)
    assert e["REMOTE_ADDR"] == "127.0.0.1"
    assert e["REMOTE_PORT"] == str(client_port)
    assert e["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert e["HTTP_HOST"] == f"127.0.0.1:{srv.port}"
    assert e["HTTP_USER_AGENT"] == "gm-test"
    assert e["HTTP_ACCEPT"] == "*/*"
    assert "HTTP_CONTENT_TYPE" not in e and "HTTP_CONTENT_LENGTH" not in e
    assert e.get("CONTENT_LENGTH", "") in ("", "0")
    assert e["wsgi.version"] == [1, 0]
    assert e["wsgi.url_scheme"] == "http"
    assert e["wsgi.multithread"] is False
    assert e["wsgi.multiprocess"] is False
    assert e["wsgi.run_once"] is False
    assert e["wsgi.input_terminated"] is True
    assert e["_has"] == {"file_wrapper": True, "input.read": True, "errors.write": True}
    assert e["_body_length"] == 0


def test_empty_query_string_is_present(server):
    e = server(APP).get("/x").json()
    assert e["QUERY_STRING"] == ""
    assert e["PATH_INFO"] == "/x"


def test_multithread_and_multiprocess(server):
    e = server("--threads", "4", "--workers", "2", APP).get("/").json()
    assert e["wsgi.multithread"] is True
    assert e["wsgi.multiprocess"] is True


def test_post_environ(server):
    srv = server(APP)
    body = b"name=value&x=1"
    r = srv.post(
        "/form", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["REQUEST_METHOD"] == "POST"
    assert e["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert e["CONTENT_LENGTH"] == str(len(body))
    assert "HTTP_CONTENT_TYPE" not in e and "HTTP_CONTENT_LENGTH" not in e
    assert e["_body_length"] == len(body)
    assert e["_body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_upload_environ(server):
    srv = server(APP)
    pieces = [b"a" * 10, b"b" * 70000, b"c"]
    e = raw_environ(
        srv,
        http_request(
            "PUT",
            "/upload",
            headers={"Transfer-Encoding": "chunked", "Content-Type": "application/octet-stream"},
        )
        + chunked(*pieces),
    )
    assert e["REQUEST_METHOD"] == "PUT"
    assert e["CONTENT_TYPE"] == "application/octet-stream"
    assert e.get("CONTENT_LENGTH", "") == ""
    assert e["wsgi.input_terminated"] is True
    body = b"".join(pieces)
    assert e["_body_length"] == len(body)
    assert e["_body_sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    ("path", "path_info", "query"),
    [
        ("/caf%C3%A9", "/caf\xc3\xa9", ""),  # UTF-8 bytes as latin-1 characters
        ("/a%2Fb", "/a/b", ""),
        ("/sp%20ace/x", "/sp ace/x", ""),
        ("/%E2%82%AC?q=caf%C3%A9&x=%2F+y", "/\xe2\x82\xac", "q=caf%C3%A9&x=%2F+y"),
        ("/plain?", "/plain", ""),
    ],
)
def test_path_decoding_and_raw_query(server, path, path_info, query):
    e = raw_environ(server(APP), http_request("GET", path))
    assert e["PATH_INFO"] == path_info
    assert e["QUERY_STRING"] == query


def test_repeated_headers_and_cookies(server):
    e = raw_environ(
        server(APP),
        http_request(
            "GET",
            "/",
            headers=[("X-Multi", "a"), ("X-Multi", "b"), ("Cookie", "a=1"), ("Cookie", "b=2")],
        ),
    )
    assert e["HTTP_X_MULTI"] == "a,b"
    assert e["HTTP_COOKIE"] == "a=1; b=2"


def test_header_with_underscore_is_dropped(server):
    e = raw_environ(
        server(APP),
        http_request(
            "GET",
            "/",
            headers=[
                ("X_Forwarded_For", "evil"),
                ("X-Forwarded-For", "good"),
                ("X_Only_Underscore", "x"),
            ],
        ),
    )
    assert e["HTTP_X_FORWARDED_FOR"] == "good"
    assert "HTTP_X_ONLY_UNDERSCORE" not in e
    assert "evil" not in json.dumps(e)


def test_server_process_environment_is_not_copied(server):
    e = server(APP, env={"GRISTMILL_TEST_SECRET": "1", "GM_TEST_SECRET": "2"}).get("/").json()
    assert "GRISTMILL_TEST_SECRET" not in e
    assert "GM_TEST_SECRET" not in e
    assert "PATH" not in e and "HOME" not in e


def test_http_10_protocol(server):
    srv = server(APP)
    with srv.raw() as conn:
        conn.send(http_request("GET", "/old", version="HTTP/1.0"))
        resp = conn.final_response()
    assert resp.status == 200
    assert json.loads(resp.body)["SERVER_PROTOCOL"] == "HTTP/1.0"


@pytest.mark.parametrize(
    ("path", "script_name", "path_info"),
    [("/app/x", "/app", "/x"), ("/app/x/y%2Fz", "/app", "/x/y/z"), ("/app", "/app", "")],
)
def test_root_path(server, path, script_name, path_info):
    e = raw_environ(server("--root-path", "/app", APP), http_request("GET", path))
    assert e["SCRIPT_NAME"] == script_name
    assert e["PATH_INFO"] == path_info


# The names whose environ keys the core keeps as ready-made Python strings
# (src/wsgi/environ.rs, common_key): each must land under its CGI name, like any other.
COMMON_HEADERS = [
    "User-Agent",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Connection",
    "Cookie",
    "Authorization",
    "Cache-Control",
    "Referer",
    "Origin",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Request-Id",
    "X-Not-Common",
]


def test_common_header_keys(server):
    headers = {name: f"v-{name}" for name in COMMON_HEADERS}
    e = raw_environ(server(APP), http_request("GET", "/", headers=headers))
    for name in COMMON_HEADERS:
        assert e["HTTP_" + name.upper().replace("-", "_")] == f"v-{name}"
    assert e["HTTP_HOST"]
