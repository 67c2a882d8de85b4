"""Static files served by the Rust core (``--static URL_PREFIX=DIR``, src/static_files/),
and the same file bodies under ``wsgi.file_wrapper`` and ASGI ``http.response.pathsend``
(src/http/file.rs, src/http/sendfile.rs).

Every semantic runs against a real server in each of the four execution modes (the
static path is decided before the application, so the mode must not matter) with httpx,
curl and raw sockets: validators and conditional requests, ranges (single, suffix,
unsatisfiable, multipart), HEAD, 405, precompressed siblings, index files, fallthrough,
symbolic links, dotfiles and hostile paths. Large files are checked by SHA-256 over
HTTP/1.1 (``sendfile``), HTTP/2 and TLS (chunked reads); a client that reads nothing
must not hold up the others; Django's ``FileResponse`` goes through ``wsgi.file_wrapper``.
Where ``strace`` is installed, a test watches the worker use ``sendfile(2)``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from _frameworks import curl
from _support import Server, every_mode, http_request, wait_until

pytestmark = pytest.mark.timeout(120)

MIB = 1 << 20
BIG = 16 * MIB
MODES = every_mode("static_app:app", "static_app:asgi")


# --- the directory served ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict:
    """``root/public`` is served; ``root/secret.txt`` and ``root/outside/`` lie beside it."""
    root = tmp_path_factory.mktemp("static")
    pub = root / "public"
    (pub / "sub").mkdir(parents=True)
    (pub / "nodex").mkdir()
    (pub / ".git").mkdir()
    (root / "outside").mkdir()
    (root / "secret.txt").write_bytes(b"SECRET outside the directory\n")
    (root / "outside" / "x.txt").write_bytes(b"SECRET through a link\n")
    (pub / "hello.txt").write_bytes(b"hello, static world\n")
    (pub / "style.css").write_bytes(b"body { color: red }\n" * 50)
    (pub / "style.css.gz").write_bytes(gzip.compress((pub / "style.css").read_bytes()))
    (pub / "style.css.br").write_bytes(b"pretend-brotli")
    (pub / "app.js").write_bytes(b"console.log(1)\n")
    (pub / "app.js.gz").write_bytes(gzip.compress(b"console.log(1)\n"))
    (pub / "sub" / "index.html").write_bytes(b"<h1>index</h1>\n")
    (pub / "sub" / "page.html").write_bytes(b"<p>page</p>\n")
    (pub / "nodex" / "file.txt").write_bytes(b"no index here\n")
    (pub / ".env").write_bytes(b"SECRET dotfile\n")
    (pub / ".git" / "config").write_bytes(b"SECRET git config\n")
    (pub / "café menu.txt").write_bytes(b"unicode name\n")
    (pub / "empty.txt").write_bytes(b"")
    (pub / "link-in.txt").symlink_to(pub / "hello.txt")
    (pub / "link-out.txt").symlink_to(root / "outside" / "x.txt")
    (pub / "link-dir").symlink_to(root / "outside")
    (pub / "link-dot.txt").symlink_to(pub / ".env")
    big = os.urandom(BIG)
    (pub / "big.bin").write_bytes(big)
    mid = os.urandom(200_000)
    (pub / "mid.bin").write_bytes(mid)
    return {
        "root": root,
        "pub": pub,
        "big_sha": hashlib.sha256(big).hexdigest(),
        "mid": mid,
    }


def static_args(tree, *extra: str) -> list[str]:
    return ["--static", f"/static={tree['pub']}", "--static-max-age", "600", *extra]


@pytest.fixture(scope="module", params=list(MODES))
def srv(request, tree):
    args, env = MODES[request.param]
    server = Server([*args, *static_args(tree, "--static-index")], env=env)
    server.wait_ready()
    yield server
    server.kill()


# --- basics --------------------------------------------------------------------------------
def test_file_with_validators_and_type(srv):
    r = srv.get("/static/hello.txt")
    assert r.status_code == 200
    assert r.content == b"hello, static world\n"
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["content-length"] == "20"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["cache-control"] == "public, max-age=600"
    etag = r.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert r.headers["last-modified"].endswith(" GMT")
    assert "vary" not in r.headers
    assert srv.get("/static/hello.txt").headers["etag"] == etag
    assert srv.get("/static/style.css").headers["content-type"] == "text/css"
    assert srv.get("/static/app.js").headers["content-type"] in (
        "text/javascript",
        "application/javascript",
    )
    assert srv.get("/static/sub/page.html").headers["content-type"] == "text/html"
    assert (
        srv.get("/static/big.bin", headers={"Range": "bytes=0-0"}).headers["content-type"]
        == "application/octet-stream"
    )


def test_names_are_percent_decoded(srv):
    r = srv.get("/static/caf%C3%A9%20menu.txt")
    assert r.status_code == 200 and r.content == b"unicode name\n"
    assert srv.get("/st%61tic/hello.txt").content == b"hello, static world\n"


def test_empty_file(srv):
    r = srv.get("/static/empty.txt")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "0"


def test_prefix_owns_its_requests(srv):
    """A request under the prefix never reaches the application; others do."""
    r = srv.get("/static/missing.txt")
    assert r.status_code == 404 and not r.text.startswith("app")
    assert srv.get("/static").status_code == 404
    assert srv.get("/staticfoo").text == "app /staticfoo"
    assert srv.get("/other/hello.txt").text == "app /other/hello.txt"


def test_head(srv):
    get = srv.get("/static/mid.bin")
    with srv.raw() as conn:
        conn.send(http_request("HEAD", "/static/mid.bin"))
        head = conn.response("HEAD")
        assert head.status == 200
        assert head.header("content-length") == "200000"
        assert head.header("etag") == get.headers["etag"]
        # No body: the next response on the connection follows the head directly.
        conn.send(http_request("GET", "/static/hello.txt"))
        assert conn.response().body == b"hello, static world\n"


def test_other_methods_get_405(srv):
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        r = httpx.request(method, srv.url + "/static/hello.txt", timeout=10)
        assert r.status_code == 405, method
        assert r.headers["allow"] == "GET, HEAD"
        assert not r.text.startswith("app")


# --- conditional requests --------------------------------------------------------------------
def test_conditional_requests(srv):
    r = srv.get("/static/hello.txt")
    etag, lm = r.headers["etag"], r.headers["last-modified"]
    for headers in (
        {"If-None-Match": etag},
        {"If-None-Match": f'"nope", W/{etag}'},
        {"If-None-Match": "*"},
        {"If-Modified-Since": lm},
        {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"},
    ):
        nm = srv.get("/static/hello.txt", headers=headers)
        assert nm.status_code == 304, headers
        assert nm.content == b""
        assert nm.headers["etag"] == etag
        assert nm.headers["cache-control"] == "public, max-age=600"
    for headers in (
        {"If-None-Match": '"other"'},
        {"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"},
        {"If-Modified-Since": "not a date"},
        # If-None-Match wins over If-Modified-Since.
        {"If-None-Match": '"other"', "If-Modified-Since": lm},
    ):
        assert srv.get("/static/hello.txt", headers=headers).status_code == 200, headers
    assert srv.get("/static/hello.txt", headers={"If-Match": '"other"'}).status_code == 412
    assert srv.get("/static/hello.txt", headers={"If-Match": etag}).status_code == 200
    old = "Sat, 01 Jan 2000 00:00:00 GMT"
    assert srv.get("/static/hello.txt", headers={"If-Unmodified-Since": old}).status_code == 412


def test_etag_changes_with_the_file(srv, tree):
    path = tree["pub"] / "changing.txt"
    path.write_bytes(b"one")
    first = srv.get("/static/changing.txt")
    path.write_bytes(b"two!")
    os.utime(path, (time.time() + 5, time.time() + 5))
    second = srv.get("/static/changing.txt")
    assert second.content == b"two!"
    assert first.headers["etag"] != second.headers["etag"]
    r = srv.get("/static/changing.txt", headers={"If-None-Match": first.headers["etag"]})
    assert r.status_code == 200 and r.content == b"two!"


# --- ranges -------------------------------------------------------------------------------
def test_single_ranges(srv, tree):
    mid = tree["mid"]
    for spec, (a, b) in (
        ("bytes=0-99", (0, 99)),
        ("bytes=199990-", (199990, 199999)),
        ("bytes=-10", (199990, 199999)),
        ("bytes=100-999999", (100, 199999)),
        ("bytes=150000-150000", (150000, 150000)),
    ):
        r = srv.get("/static/mid.bin", headers={"Range": spec})
        assert r.status_code == 206, spec
        assert r.headers["content-range"] == f"bytes {a}-{b}/200000"
        assert r.headers["content-length"] == str(b - a + 1)
        assert r.content == mid[a : b + 1]


def test_unsatisfiable_and_ignored_ranges(srv, tree):
    for spec in ("bytes=200000-", "bytes=300000-400000", "bytes=-0"):
        r = srv.get("/static/mid.bin", headers={"Range": spec})
        assert r.status_code == 416, spec
        assert r.headers["content-range"] == "bytes */200000"
    for spec in ("items=0-5", "bytes=5-1", "bytes=x-y", "bytes="):
        r = srv.get("/static/mid.bin", headers={"Range": spec})
        assert r.status_code == 200, spec
        assert r.content == tree["mid"]


def test_multiple_ranges(srv, tree):
    mid = tree["mid"]
    r = srv.get("/static/mid.bin", headers={"Range": "bytes=0-9, 100-109, -5"})
    assert r.status_code == 206
    ctype = r.headers["content-type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    boundary = ctype.split("boundary=", 1)[1].encode()
    assert int(r.headers["content-length"]) == len(r.content)
    parts = r.content.split(b"--" + boundary)
    assert parts[-1] == b"--\r\n"
    bodies = []
    for part in parts[1:-1]:
        head, _, body = part.partition(b"\r\n\r\n")
        assert b"Content-Type: application/octet-stream" in head
        assert body.endswith(b"\r\n")
        bodies.append((head, body[:-2]))
    assert [b for _, b in bodies] == [mid[0:10], mid[100:110], mid[-5:]]
    assert b"Content-Range: bytes 199995-199999/200000" in bodies[2][0]
    # Overlapping ranges are merged into one.
    r = srv.get("/static/mid.bin", headers={"Range": "bytes=0-50,20-99"})
    assert r.status_code == 206 and r.headers["content-range"] == "bytes 0-99/200000"


def test_if_range(srv, tree):
    r = srv.get("/static/mid.bin")
    etag, lm = r.headers["etag"], r.headers["last-modified"]
    for validator in (etag, lm):
        r = srv.get("/static/mid.bin", headers={"Range": "bytes=0-9", "If-Range": validator})
        assert r.status_code == 206 and r.content == tree["mid"][:10]
    for validator in ('"stale"', f"W/{etag}", "Sat, 01 Jan 2000 00:00:00 GMT"):
        r = srv.get("/static/mid.bin", headers={"Range": "bytes=0-9", "If-Range": validator})
        assert r.status_code == 200 and len(r.content) == 200000


def test_curl_resumes_a_download(srv, tree, tmp_path):
    out = tmp_path / "mid.part"
    out.write_bytes(tree["mid"][:5000])
    done = curl("-f", "-C", "-", "-o", str(out), srv.url + "/static/mid.bin")
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == tree["mid"]


# --- precompressed siblings ------------------------------------------------------------------
def test_precompressed_siblings(srv, tree):
    plain = (tree["pub"] / "style.css").read_bytes()
    r = srv.get("/static/style.css", headers={"Accept-Encoding": "gzip, br"})
    assert r.headers["content-encoding"] == "br"
    assert r.headers["vary"] == "Accept-Encoding"
    assert r.headers["content-type"] == "text/css"
    with httpx.Client(timeout=10) as c:
        r = c.get(srv.url + "/static/style.css", headers={"Accept-Encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip"
        assert r.content == plain  # httpx inflated it
        r = c.get(srv.url + "/static/style.css", headers={"Accept-Encoding": "br;q=0, gzip;q=0.5"})
        assert r.headers["content-encoding"] == "gzip"
        r = c.get(srv.url + "/static/style.css", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in r.headers
        assert r.headers["vary"] == "Accept-Encoding"
        assert r.content == plain
        r = c.get(srv.url + "/static/app.js", headers={"Accept-Encoding": "br"})
        assert "content-encoding" not in r.headers  # no .br sibling
    # Each encoding is its own representation, with its own strong ETag.
    tags = {
        srv.get("/static/style.css", headers={"Accept-Encoding": e}).headers["etag"]
        for e in ("br", "gzip", "identity")
    }
    assert len(tags) == 3
    # The siblings themselves are files like any other.
    assert srv.get("/static/style.css.gz").headers["content-type"] in (
        "application/gzip",
        "application/x-gzip",
    )


# --- directories, fallthrough --------------------------------------------------------------
def test_index_and_directories(srv):
    r = srv.get("/static/sub/")
    assert r.status_code == 200 and r.content == b"<h1>index</h1>\n"
    assert r.headers["content-type"] == "text/html"
    r = srv.get("/static/sub?x=1", follow_redirects=False)
    assert r.status_code == 301 and r.headers["location"] == "/static/sub/?x=1"
    assert srv.get("/static/nodex/").status_code == 404
    assert srv.get("/static/nodex").status_code == 404


def test_without_index_and_with_fallthrough(server, tree):
    srv = server("static_app:app", *static_args(tree, "--static-fallthrough"))
    assert srv.get("/static/sub/").text == "app /static/sub/"  # no --static-index
    assert srv.get("/static/missing.js").text == "app /static/missing.js"
    assert srv.get("/static/hello.txt").content == b"hello, static world\n"
    # Refused paths (dotfiles, `..`, encoded separators) are not "missing": they are
    # answered 404 and never reach the application.
    assert srv.get("/static/.env").status_code == 404
    with srv.raw() as conn:
        conn.send(http_request("GET", "/static/../secret.txt"))
        r = conn.response()
        assert r.status == 404 and b"SECRET" not in r.body


def test_longest_prefix_wins(server, tree):
    srv = server(
        "static_app:asgi",
        "--static",
        f"/assets={tree['pub']}",
        "--static",
        f"/assets/sub={tree['pub'] / 'nodex'}",
        "--static-fallthrough",
    )
    assert srv.get("/assets/hello.txt").content == b"hello, static world\n"
    assert srv.get("/assets/sub/file.txt").content == b"no index here\n"
    assert srv.get("/assets/sub/page.html").text == "app /assets/sub/page.html"


def test_root_mount_with_fallthrough(server, tree):
    srv = server("static_app:asgi", "--static", f"/={tree['pub']}", "--static-fallthrough")
    assert srv.get("/hello.txt").content == b"hello, static world\n"
    assert srv.get("/api/users").text == "app /api/users"


def test_static_files_take_no_place_under_limit_concurrency(server, tree):
    """`--limit-concurrency` bounds application calls; static files are none, but a miss
    passed on to the application (fallthrough) is one."""
    srv = server(
        "static_app:asgi", *static_args(tree, "--static-fallthrough"), "--limit-concurrency", "1"
    )
    with httpx.Client(timeout=20) as c:

        def hold_the_place() -> None:
            # A probe below in flight at the same moment takes the place first: retry.
            while c.get(srv.url + "/sleep?s=4").status_code == 503:
                pass

        slow = threading.Thread(target=hold_the_place)
        slow.start()
        try:
            wait_until(lambda: c.get(srv.url + "/other").status_code == 503, 10)
            assert c.get(srv.url + "/static/hello.txt").status_code == 200
            assert c.get(srv.url + "/static/missing.txt").status_code == 503
        finally:
            slow.join(20)
    assert srv.get("/static/missing.txt").text == "app /static/missing.txt"


# --- safety ---------------------------------------------------------------------------------
NASTY = [
    "/static/../secret.txt",
    "/static/sub/../../secret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/.%2e/secret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/..%2fsecret.txt",
    "/static/..%2Fsecret.txt",
    "/static/sub%2f..%2f..%2fsecret.txt",
    "/static/..\\secret.txt",
    "/static/..%5csecret.txt",
    "/static/%5c..%5csecret.txt",
    "/static/hello.txt%00",
    "/static/hello.txt%00.png",
    "/static/%c0%ae%c0%ae/secret.txt",
    "/static/%c0%ae%c0%ae%c0%afsecret.txt",
    "/static/%e0%80%ae%e0%80%ae/secret.txt",
    "/static/..%c0%afsecret.txt",
    "/static/.env",
    "/static/%2eenv",
    "/static/.git/config",
    "/static/sub/../.env",
    "/static/link-out.txt",
    "/static/link-dir/x.txt",
    "/static/link-dot.txt",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
]


@pytest.mark.parametrize("path", NASTY)
def test_hostile_paths(srv, path):
    with srv.raw() as conn:
        conn.send(http_request("GET", path))
        r = conn.response()
    assert r.status in (400, 404), (path, r.status)
    assert b"SECRET" not in r.body and b"root:" not in r.body
    assert not r.body.startswith(b"app")


def test_hostile_paths_with_curl(srv):
    for path in NASTY[:12]:
        done = curl("--path-as-is", "-o", "-", "-w", "\n%{http_code}", srv.url + path)
        body, _, code = done.stdout.rpartition(b"\n")
        assert code in (b"400", b"404"), (path, code)
        assert b"SECRET" not in body


def test_bad_escape_is_400(srv):
    with srv.raw() as conn:
        conn.send(http_request("GET", "/static/a%zzb"))
        assert conn.response().status == 400


def test_symlinks_inside_are_served(srv):
    assert srv.get("/static/link-in.txt").content == b"hello, static world\n"


def test_follow_symlinks(server, tree):
    srv = server("static_app:app", *static_args(tree, "--static-follow-symlinks"))
    assert srv.get("/static/link-out.txt").content == b"SECRET through a link\n"
    assert srv.get("/static/link-dir/x.txt").content == b"SECRET through a link\n"
    # Dotfiles and `..` stay refused.
    assert srv.get("/static/.env").status_code == 404
    with srv.raw() as conn:
        conn.send(http_request("GET", "/static/../secret.txt"))
        assert conn.response().status == 404


def test_a_fifo_is_not_served(srv, tree):
    fifo = tree["pub"] / "pipe"
    if not fifo.exists():
        os.mkfifo(fifo)
    r = srv.get("/static/pipe", timeout=5)
    assert r.status_code == 404


# --- big files, protocols -------------------------------------------------------------------
def _sha_of(client: httpx.Client, url: str) -> tuple[str, str, int]:
    h = hashlib.sha256()
    with client.stream("GET", url) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            h.update(chunk)
        return h.hexdigest(), r.http_version, int(r.headers["content-length"])


def test_large_file_http1(srv, tree):
    with httpx.Client(timeout=30) as c:
        sha, version, length = _sha_of(c, srv.url + "/static/big.bin")
    assert (sha, version, length) == (tree["big_sha"], "HTTP/1.1", BIG)


def test_large_file_h2c(srv, tree):
    with httpx.Client(http1=False, http2=True, timeout=30) as c:
        sha, version, _ = _sha_of(c, srv.url + "/static/big.bin")
        assert (sha, version) == (tree["big_sha"], "HTTP/2")
        r = c.get(srv.url + "/static/mid.bin", headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == tree["mid"][10:20]


def test_large_file_and_ranges_over_tls(server, tree, certs):
    srv = server("static_app:asgi", *static_args(tree), *certs.server_args())
    ctx = ssl.create_default_context()
    certs.ca.configure_trust(ctx)
    for http2 in (False, True):
        with httpx.Client(verify=ctx, http2=http2, timeout=30) as c:
            url = f"https://localhost:{srv.port}"
            sha, version, _ = _sha_of(c, url + "/static/big.bin")
            assert sha == tree["big_sha"]
            assert version == ("HTTP/2" if http2 else "HTTP/1.1")
            r = c.get(url + "/static/mid.bin", headers={"Range": "bytes=5-9,-3"})
            assert r.status_code == 206 and r.content.count(b"Content-Range") == 2
            assert c.get(url + "/static/hello.txt").content == b"hello, static world\n"


def test_large_file_over_a_unix_socket(server, tree, tmp_path):
    """`sendfile` to a Unix socket (a proxy in front on the same host)."""
    path = str(tmp_path / "gm.sock")
    srv = server("static_app:app", "--uds", path, *static_args(tree), expect_ready=False)
    srv.wait_for_line(rf"Listening on unix:{path} \(1 worker\)")
    transport = httpx.HTTPTransport(uds=path)
    with httpx.Client(transport=transport, timeout=30) as c:
        sha, version, _ = _sha_of(c, "http://gm/static/big.bin")
        assert (sha, version) == (tree["big_sha"], "HTTP/1.1")
        assert c.get("http://gm/x").text == "app /x"


def test_keepalive_and_pipelining_after_a_large_file(srv, tree):
    with srv.raw(timeout=30) as conn:
        conn.send(
            http_request("GET", "/static/mid.bin")
            + http_request("GET", "/static/hello.txt")
            + http_request("GET", "/static/mid.bin", headers={"Range": "bytes=0-4"})
            + http_request("GET", "/dynamic")
        )
        assert conn.response().body == tree["mid"]
        assert conn.response().body == b"hello, static world\n"
        assert conn.response().body == tree["mid"][:5]
        assert conn.response().body == b"app /dynamic"


def test_slow_reader_does_not_stall_others(srv, tree):
    """A client that reads none of a 16 MiB file holds its own connection only."""
    with srv.raw(timeout=30, rcvbuf=4096) as slow:
        slow.send(http_request("GET", "/static/big.bin"))
        head = slow.read_head()
        assert head.status == 200
        started = time.monotonic()
        with httpx.Client(timeout=10) as c:
            for _ in range(20):
                assert c.get(srv.url + "/static/hello.txt").status_code == 200
                assert c.get(srv.url + "/x").text == "app /x"
        assert time.monotonic() - started < 10
        # Then it reads, and gets every byte.
        h = hashlib.sha256()
        left = BIG
        while left:
            chunk = slow.recv_some(min(left, 1 << 20))
            assert chunk, "connection closed early"
            h.update(chunk)
            left -= len(chunk)
        assert h.hexdigest() == tree["big_sha"]


def test_client_gone_mid_file(srv, tree):
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(http_request("GET", "/static/big.bin"))
        s.recv(1000)
        s.close()
    assert srv.get("/static/hello.txt").status_code == 200


def test_access_log(srv):
    mark = srv.mark()
    srv.get("/static/hello.txt")
    srv.get("/static/nope")
    srv.wait_for_line(r'"GET /static/hello\.txt HTTP/1\.1" 200 20 ', start=mark)
    srv.wait_for_line(r'"GET /static/nope HTTP/1\.1" 404 ', start=mark)


# --- the application's files: wsgi.file_wrapper and pathsend ----------------------------------
@pytest.fixture(scope="module", params=list(MODES))
def app_srv(request):
    args, env = MODES[request.param]
    server = Server(args, env=env)
    server.wait_ready()
    yield request.param, server
    server.kill()


def test_application_files(app_srv, tree):
    mode, srv = app_srv
    route = "/pathsend" if mode.startswith("asgi") else "/file_wrapper"
    url = f"{srv.url}{route}?path={tree['pub'] / 'big.bin'}"
    for http2 in (False, True):
        with httpx.Client(http1=not http2, http2=http2, timeout=30) as c:
            sha, _, length = _sha_of(c, url)
            assert (sha, length) == (tree["big_sha"], BIG)
    with srv.raw() as conn:
        conn.send(http_request("HEAD", f"{route}?path={tree['pub'] / 'mid.bin'}"))
        head = conn.response("HEAD")
        assert head.status == 200 and head.header("content-length") == "200000"
        conn.send(http_request("GET", f"{route}?path={tree['pub'] / 'mid.bin'}"))
        assert conn.response().body == tree["mid"]


def test_application_files_cut_to_a_declared_length(app_srv, tree):
    """A Content-Length shorter than the file sends that much, and the connection goes
    on (over `sendfile`, the placeholder is cut with the body, never left over)."""
    mode, srv = app_srv
    route = "/pathsend" if mode.startswith("asgi") else "/file_wrapper"
    with srv.raw(timeout=30) as conn:
        for length in (100_000, 1, 150_000):
            conn.send(
                http_request("GET", f"{route}?path={tree['pub'] / 'mid.bin'}&length={length}")
            )
            r = conn.response()
            assert r.status == 200 and r.body == tree["mid"][:length]
        conn.send(http_request("GET", "/static-free"))
        assert conn.response().body == b"app /static-free"


def test_application_files_over_tls(server, tree, certs):
    ctx = ssl.create_default_context()
    certs.ca.configure_trust(ctx)
    for target, route in (("static_app:app", "/file_wrapper"), ("static_app:asgi", "/pathsend")):
        srv = server(target, *certs.server_args())
        with httpx.Client(verify=ctx, timeout=30) as c:
            sha, _, _ = _sha_of(
                c, f"https://localhost:{srv.port}{route}?path={tree['pub'] / 'big.bin'}"
            )
        assert sha == tree["big_sha"]


DJANGO_APP = """
import os
from django.conf import settings
settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="x" * 50,
                   MIDDLEWARE=[], INSTALLED_APPS=[])
import django
django.setup()
from django.core.signals import request_finished
from django.core.wsgi import get_wsgi_application
from django.http import FileResponse
from django.urls import path

def download(request):
    return FileResponse(open(os.environ["GM_FILE"], "rb"), as_attachment=True, filename="big.bin")

def finished(sender, **kw):
    print("request_finished", flush=True)

request_finished.connect(finished)
urlpatterns = [path("download", download)]
application = get_wsgi_application()
"""


@pytest.mark.parametrize("threads", ["1", "4"])
def test_django_file_response(server, tree, tmp_path, threads):
    pytest.importorskip("django")
    (tmp_path / "dj_file_app.py").write_text(DJANGO_APP)
    srv = server(
        "dj_file_app:application",
        "--threads",
        threads,
        cwd=tmp_path,
        env={"GM_FILE": str(tree["pub"] / "big.bin")},
    )
    mark = srv.mark()
    with httpx.Client(timeout=30) as c:
        sha, _, length = _sha_of(c, srv.url + "/download")
        r = c.get(srv.url + "/download", headers={"Range": "bytes=0-9"})
    assert (sha, length) == (tree["big_sha"], BIG)
    assert r.headers["content-disposition"] == 'attachment; filename="big.bin"'
    # The wrapper was closed (Django's close() sends request_finished) once per request.
    wait_until(
        lambda: sum("request_finished" in line for line in srv.lines(mark)) == 2,
        10,
        message="request_finished twice",
    )
    srv.wait_for_line(r'"GET /download HTTP/1\.1" 200 16777216 ', start=mark)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_sendfile_is_used_on_cleartext_http1(server, tree):
    srv = server("static_app:app", *static_args(tree))
    with _strace(srv, tree, "sendfile", "/static/mid.bin", "sendfile(") as out:
        before = out.read_text().count("sendfile(")
        r = srv.get(f"/file_wrapper?path={tree['pub'] / 'big.bin'}")
        assert hashlib.sha256(r.content).hexdigest() == tree["big_sha"]
        wait_until(lambda: out.read_text().count("sendfile(") > before, 10, message="file_wrapper")


@contextlib.contextmanager
def _strace(srv, tree, calls: str, probe: str, seen: str):
    """Trace the worker's system calls ``calls`` (strace ``-e trace=``) during the block,
    which gets the trace file once strace traces: strace attaches, then the traced
    process carries on, so requests for ``probe`` are repeated until ``seen`` shows."""
    (worker,) = srv.worker_pids()
    out = Path(tree["root"]) / f"strace-{worker}.txt"
    tracer = subprocess.Popen(
        ["strace", "-f", "-qq", "-e", f"trace={calls}", "-o", str(out), "-p", str(worker)],
        stderr=subprocess.DEVNULL,
    )
    try:

        def traced() -> bool:
            srv.get(probe)
            return out.exists() and seen in out.read_text()

        wait_until(traced, 15, message=f"strace saw {seen}")
        yield out
    finally:
        tracer.terminate()
        tracer.wait(10)


# --- the cache of small files (--static-cache) ----------------------------------------------
def _warm(srv, path: str, **kw) -> httpx.Response:
    """Ask three times: the first lookup watches the directories, the second fills the
    cache, the third is answered from it."""
    return [srv.get(path, **kw) for _ in range(3)][-1]


def test_cached_file_changes_are_seen(srv, tree):
    d = tree["pub"] / f"cached-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    f = d / "a.txt"
    f.write_bytes(b"one")
    url = f"/static/{d.name}/a.txt"
    assert _warm(srv, url).content == b"one"
    # Rewritten in place: same size, most likely the same second.
    f.write_bytes(b"two")
    assert srv.get(url).content == b"two"
    _warm(srv, url)
    # Replaced by a rename, as deployments do.
    (d / "a.tmp").write_bytes(b"three")
    os.replace(d / "a.tmp", f)
    assert srv.get(url).content == b"three"
    etag = _warm(srv, url).headers["etag"]
    # Touched: the validators follow.
    os.utime(f, (time.time() + 5, time.time() + 5))
    assert srv.get(url).headers["etag"] != etag
    _warm(srv, url, headers={"Accept-Encoding": "gzip"})
    _warm(srv, url, headers={"Accept-Encoding": "identity"})
    # A precompressed sibling appears: chosen, and the answer now varies.
    (d / "a.txt.gz").write_bytes(gzip.compress(b"three"))
    r = srv.get(url, headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and r.content == b"three"
    assert srv.get(url, headers={"Accept-Encoding": "identity"}).headers["vary"] == (
        "Accept-Encoding"
    )
    _warm(srv, url)
    # Removed, then back.
    f.unlink()
    (d / "a.txt.gz").unlink()
    assert srv.get(url).status_code == 404
    f.write_bytes(b"four")
    assert srv.get(url).content == b"four"


def test_cached_file_in_a_replaced_directory(srv, tree):
    d = tree["pub"] / f"dir-{uuid.uuid4().hex[:8]}"
    (d / "deeper").mkdir(parents=True)
    (d / "deeper" / "x.txt").write_bytes(b"old")
    url = f"/static/{d.name}/deeper/x.txt"
    assert _warm(srv, url).content == b"old"
    os.rename(d, d.with_name(d.name + "-moved"))
    assert srv.get(url).status_code == 404
    (d / "deeper").mkdir(parents=True)
    (d / "deeper" / "x.txt").write_bytes(b"new")
    assert srv.get(url).content == b"new"
    assert _warm(srv, url).content == b"new"
    shutil.rmtree(d / "deeper")
    assert srv.get(url).status_code == 404


def test_cached_files_when_the_static_directory_or_its_parent_is_replaced(server, tmp_path):
    site = tmp_path / "site"
    pub = site / "pub"
    pub.mkdir(parents=True)
    (pub / "x.txt").write_bytes(b"v1")
    srv = server("static_app:app", "--static", f"/s={pub}")
    assert _warm(srv, "/s/x.txt").content == b"v1"
    # The directory's parent swapped for another (the directory path stays the same).
    os.rename(site, tmp_path / "site-1")
    pub.mkdir(parents=True)
    (pub / "x.txt").write_bytes(b"v2")
    assert srv.get("/s/x.txt").content == b"v2"
    assert _warm(srv, "/s/x.txt").content == b"v2"
    # The directory itself swapped.
    os.rename(pub, site / "pub-2")
    pub.mkdir()
    (pub / "x.txt").write_bytes(b"v3")
    assert srv.get("/s/x.txt").content == b"v3"


def test_files_behind_symbolic_links_are_not_cached(server, tmp_path):
    """A link's target may change in a directory that is not watched: such files are
    looked up every time."""
    pub = tmp_path / "pub"
    (pub / "sub").mkdir(parents=True)
    (pub / "sub" / "in.txt").write_bytes(b"in-1")
    (pub / "in.txt").symlink_to(pub / "sub" / "in.txt")
    (tmp_path / "out.txt").write_bytes(b"out-1")
    (pub / "out.txt").symlink_to(tmp_path / "out.txt")
    srv = server("static_app:app", "--static", f"/s={pub}", "--static-follow-symlinks")
    assert _warm(srv, "/s/in.txt").content == b"in-1"
    assert _warm(srv, "/s/out.txt").content == b"out-1"
    (pub / "sub" / "in.txt").write_bytes(b"in-2")
    (tmp_path / "out.txt").write_bytes(b"out-2")
    assert srv.get("/s/in.txt").content == b"in-2"
    assert srv.get("/s/out.txt").content == b"out-2"


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
@pytest.mark.parametrize("cache", [True, False])
def test_a_cached_file_is_answered_without_the_file_system(server, tree, cache):
    """From the cache, a small file costs no `openat2`; with `--no-static-cache`, each
    request opens it."""
    flag = "--static-cache" if cache else "--no-static-cache"
    srv = server("static_app:app", *static_args(tree), flag)
    with _strace(srv, tree, "openat2,recvfrom", "/static/hello.txt", "recvfrom(") as out:
        _warm(srv, "/static/hello.txt")
        text = out.read_text()
        before, received = text.count("openat2("), text.count("recvfrom(")
        for _ in range(10):
            assert srv.get("/static/hello.txt").content == b"hello, static world\n"
        wait_until(
            lambda: out.read_text().count("recvfrom(") >= received + 10, 10, message="traced"
        )
        opened = out.read_text().count("openat2(") - before
        assert (opened == 0) if cache else (opened >= 10), opened


# --- settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, message",
    [
        ("static=/tmp", "must start with '/'"),
        ("/static", "URL_PREFIX=DIR"),
        ("/static=/nonexistent/dir", "is not a directory"),
        ("/st%61tic=/tmp", "plain path"),
    ],
)
def test_bad_static_settings_exit_2(gristmill_exit, value, message):
    code, output = gristmill_exit(["static_app:app", "--static", value])
    assert code == 2
    assert message in output


def test_static_settings_from_env_and_config(server, tree, tmp_path):
    config = tmp_path / "g.toml"
    config.write_text(f'static = ["/c={tree["pub"]}"]\nstatic-max-age = 5\n')
    srv = server("static_app:app", "-c", str(config))
    r = srv.get("/c/hello.txt")
    assert r.status_code == 200 and r.headers["cache-control"] == "public, max-age=5"
    srv = server(
        "static_app:app",
        env={"GRISTMILL_STATIC": f"/e={tree['pub']}", "GRISTMILL_STATIC_INDEX": "1"},
    )
    assert srv.get("/e/sub/").content == b"<h1>index</h1>\n"
    assert "cache-control" not in srv.get("/e/hello.txt").headers


def test_last_modified_matches_the_file(srv, tree):
    r = srv.get("/static/hello.txt")
    mtime = int((tree["pub"] / "hello.txt").stat().st_mtime)
    expected = format_datetime(datetime.fromtimestamp(mtime, timezone.utc), usegmt=True)
    assert r.headers["last-modified"] == expected


def test_concurrent_downloads(srv, tree):
    results = []

    def fetch():
        with httpx.Client(timeout=60) as c:
            results.append(_sha_of(c, srv.url + "/static/big.bin")[0])

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [tree["big_sha"]] * 4


def test_metrics_count_static_responses_and_sendfile_bytes(server, tree):
    """Static answers count as requests, and bytes sent by `sendfile` as bytes sent."""
    pytest.importorskip("prometheus_client")
    from test_metrics import scrape, start, value

    srv, url = start(server, "static_app:app", *static_args(tree))
    with httpx.Client(timeout=30) as c:
        assert _sha_of(c, srv.url + "/static/big.bin")[0] == tree["big_sha"]
        assert c.get(srv.url + "/static/nope").status_code == 404

    def counted() -> bool:
        s = scrape(url)
        return value(s, "gristmill_sent_bytes_total") >= BIG and (
            value(s, "gristmill_requests_total") >= 2
        )

    wait_until(counted, 15, message="static bytes and requests in the metrics")
