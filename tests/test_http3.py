"""HTTP/3 over QUIC (``--http3``), driven by a real HTTP/3 client (aioquic, ``_h3.py``):
requests and bodies both ways in every execution mode, concurrency on one connection,
a client that goes away, the graceful stop, ``Alt-Svc`` over HTTP/1.1 and HTTP/2, and
several workers sharing the port over SO_REUSEPORT."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import time

import httpx
import pytest

from _h3 import H3_NO_ERROR, H3Closed, h3_connect, run, sha_line
from _support import APPS_DIR, every_mode, wait_until

pytestmark = pytest.mark.timeout(120)

WSGI = "h3_app:application"
ASGI = "h3_app:app"
MODES = every_mode(WSGI, ASGI)


def h3_server(server, certs, target_args, env=None, *extra):
    return server(*target_args, "--http3", *certs.server_args(*extra), env=env)


@pytest.fixture(params=list(MODES))
def mode(request):
    return request.param


def test_get_post_stream_in_every_mode(server, certs, mode):
    args, env = MODES[mode]
    srv = h3_server(server, certs, args, env)
    asgi = mode.startswith("asgi")

    async def main():
        async with h3_connect(srv.port, certs) as conn:
            r = await conn.get("/env?x=1")
            assert r.status == 200
            env = json.loads(r.body)
            if asgi:
                assert env["http_version"] == "3"
                assert env["scheme"] == "https"
                assert env["tls"] is True
                assert ["host", "localhost"] in env["headers"]
            else:
                assert env["SERVER_PROTOCOL"] == "HTTP/3"
                assert env["wsgi.url_scheme"] == "https"
                assert env["HTTP_HOST"] == "localhost"
                assert env["SSL_PROTOCOL"] == "TLSv1.3"
                assert env["QUERY_STRING"] == "x=1"
            assert r.header("date")
            assert r.header("alt-svc") is None  # HTTP/3 responses need no pointer
            # A body of several MiB, with and without a declared length.
            data = os.urandom(5 << 20)
            r = await conn.request(
                "POST", "/sha", headers=[("content-length", str(len(data)))], body=data
            )
            assert (r.status, r.text) == (200, sha_line(data))
            r = await conn.request("POST", "/sha", body=data[: 3 << 20])
            assert (r.status, r.text) == (200, sha_line(data[: 3 << 20]))
            # A streamed response, read as it comes.
            r = await conn.get("/stream?64")
            assert r.status == 200 and r.body == b"x" * (64 * 16384)
            # Files: wsgi.file_wrapper and http.response.pathsend.
            r = await conn.get("/file")
            assert r.status == 200
            assert r.body == (APPS_DIR / "h3_app.py").read_bytes()
            # HEAD gets the head alone. (On a route without Content-Length: aioquic
            # checks a HEAD response's Content-Length against its empty body.)
            r = await conn.request("HEAD", "/stream?4")
            assert r.status == 200 and r.body == b""

    run(main())
    srv.wait_for_line(r'"GET /env\?x=1 HTTP/3" 200', timeout=10)


@pytest.mark.parametrize("mode", ["wsgi-pool", "asgi-one-thread", "asgi-loop-thread"])
def test_100_concurrent_streams_on_one_connection(server, certs, mode):
    args, env = MODES[mode]
    srv = h3_server(server, certs, args, env)
    slow = mode.startswith("asgi")

    async def main():
        async with h3_connect(srv.port, certs) as conn:
            # ASGI runs them side by side: 100 requests of 1 s each end within a few.
            path = "/slow?1&{}" if slow else "/env?i={}"
            began = time.monotonic()
            sids = [conn.start("GET", path.format(i)) for i in range(100)]
            responses = await asyncio.gather(*(conn.response(s) for s in sids))
            elapsed = time.monotonic() - began
            assert all(r.status == 200 for r in responses)
            if slow:
                assert all(r.body == b"slow done" for r in responses)
                assert elapsed < 10, elapsed
            else:
                for i, r in enumerate(responses):
                    assert json.loads(r.body)["QUERY_STRING"] == f"i={i}"

    run(main())


@pytest.mark.parametrize("mode", ["wsgi-inline", "asgi-one-thread"])
def test_client_vanishing_mid_response_is_noticed(server, certs, mode):
    """A client that goes quiet mid-body (no CONNECTION_CLOSE): the connection times
    out (--http3-idle-timeout), the application is told, the worker serves on; one that
    closes its connection is noticed at once."""
    args, env = MODES[mode]
    srv = h3_server(server, certs, args, env, "--http3-idle-timeout", "2")

    async def read_some_then(leave, tag):
        async with h3_connect(srv.port, certs) as conn:
            sid = conn.start("GET", f"/endless?{tag}")
            got = 0
            while got < 256 * 1024:
                ev = await conn.next_event(sid)
                if ev.kind == "data":
                    got += len(ev.value)
            leave(conn)

    run(read_some_then(lambda c: c.vanish(), "gone"))
    srv.wait_for_line("GM-H3-CLOSED gone", timeout=20)
    run(read_some_then(lambda c: c.close(), "closed"))
    srv.wait_for_line("GM-H3-CLOSED closed", timeout=5)

    async def reset_stream():
        async with h3_connect(srv.port, certs) as conn:
            sid = conn.start("GET", "/endless?reset")
            assert (await conn.next_event(sid)).kind == "headers"
            conn.reset(sid)  # the request alone is abandoned; the connection goes on
            srv.wait_for_line("GM-H3-CLOSED reset", timeout=5)
            assert (await conn.get("/")).text == "hello h3"

    run(reset_stream())

    async def still_serving():
        async with h3_connect(srv.port, certs) as conn:
            assert (await conn.get("/")).text == "hello h3"

    run(still_serving())


@pytest.mark.parametrize("mode", ["wsgi-pool", "asgi-one-thread"])
def test_stop_finishes_streams_in_flight(server, certs, mode):
    """SIGTERM during requests: they are answered, a request started after the drain
    began is refused with H3_REQUEST_REJECTED (or meets the closed connection), then
    the connection closes with H3_NO_ERROR and the server exits 0."""
    args, env = MODES[mode]
    srv = h3_server(server, certs, args, env)

    async def main():
        async with h3_connect(srv.port, certs) as conn:
            sids = [conn.start("GET", "/slow?1.5") for _ in range(2)]
            srv.wait_for_line("GM-H3-SLOW-START", timeout=10)
            mark = srv.mark()
            srv.send_signal(signal.SIGTERM)
            srv.wait_for_line("Draining", start=mark, timeout=10)
            late = conn.start("GET", "/")
            for sid in sids:
                r = await conn.response(sid)
                assert (r.status, r.body) == (200, b"slow done")
            try:
                r = await conn.response(late)
            except (H3Closed, Exception) as e:  # refused: never started
                assert "0x10b" in str(e) or isinstance(e, H3Closed), e
            else:
                raise AssertionError(f"a request after GOAWAY was served: {r}")
            term = await conn.wait_terminated()
            assert term.error_code == H3_NO_ERROR, term

    run(main())
    assert srv.stop(timeout=20) == 0


def test_alt_svc_on_http1_and_http2(server, certs):
    ctx = ssl.create_default_context()
    certs.ca.configure_trust(ctx)
    srv = server(WSGI, "--http3", *certs.server_args())
    want = f'h3=":{srv.port}"; ma=86400'
    for http2 in (False, True):
        with httpx.Client(verify=ctx, http2=http2, timeout=10) as c:
            r = c.get(f"https://localhost:{srv.port}/")
        assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        assert r.headers.get("alt-svc") == want
    off = server(WSGI, "--http3", "--no-http3-alt-svc", *certs.server_args())
    without = server(WSGI, *certs.server_args())
    for s in (off, without):
        with httpx.Client(verify=ctx, http2=True, timeout=10) as c:
            assert "alt-svc" not in c.get(f"https://localhost:{s.port}/").headers


def test_http3_needs_tls(gristmill_exit):
    code, out = gristmill_exit([WSGI, "--http3"])
    assert code == 2
    assert "--http3 needs --ssl-certfile and --ssl-keyfile" in out


@pytest.mark.parametrize("target", [WSGI, ASGI])
def test_limits_apply(server, certs, target):
    srv = h3_server(
        server, certs, [target], None, "--max-body-size", "1000", "--max-header-size", "4096"
    )

    async def main():
        async with h3_connect(srv.port, certs) as conn:
            r = await conn.request(
                "POST", "/sha", headers=[("content-length", "5000")], body=b"a" * 5000
            )
            assert r.status == 413
            # Without a declared length the interface counts the bytes.
            r = await conn.request("POST", "/sha", body=b"a" * 5000)
            assert r.status == 413
            r = await conn.get("/", headers=[("x-big", "b" * 8000)])
            assert r.status == 431
            r = await conn.get("/")
            assert r.status == 200

    run(main())


def test_two_workers_many_connections(server, certs):
    """Each worker binds the UDP port with SO_REUSEPORT: many connections spread over
    both, and every request of one connection reaches the same worker."""
    srv = h3_server(server, certs, [WSGI, "--workers", "2"])
    assert srv.workers == 2

    async def one_connection(i):
        async with h3_connect(srv.port, certs) as conn:
            pids = set()
            for j in range(5):
                r = await conn.get(f"/env?c={i}&r={j}")
                assert r.status == 200
                pids.add(json.loads(r.body)["pid"])
            assert len(pids) == 1, pids  # one connection, one worker
            return pids.pop()

    async def main():
        return await asyncio.gather(*(one_connection(i) for i in range(40)))

    served_by = run(main())
    assert set(served_by) <= srv.worker_pids()
    assert len(set(served_by)) == 2, served_by


@pytest.mark.parametrize("asgi_mode_env", ["one-thread", "loop-thread"])
def test_fastapi_over_http3(server, certs, asgi_mode_env):
    from _frameworks import FRAMEWORKS_DIR
    from _support import ASGI_MODES

    srv = server(
        "fastapi_app:app",
        "--http3",
        *certs.server_args(),
        cwd=FRAMEWORKS_DIR,
        env=ASGI_MODES[asgi_mode_env],
    )
    upload = os.urandom(3 << 20)
    req = httpx.Request("POST", "https://localhost/upload", files={"file": ("three.bin", upload)})
    multipart = req.read()

    async def main():
        async with h3_connect(srv.port, certs) as conn:
            item = json.dumps({"name": "mill", "price": 2.5, "tags": ["x"]}).encode()
            r = await conn.request(
                "POST",
                "/items",
                headers=[("content-type", "application/json")],
                body=item,
            )
            assert r.status == 200, r.body
            assert json.loads(r.body)["total"] == 5.0
            r = await conn.request(
                "POST",
                "/upload",
                headers=[("content-type", req.headers["content-type"])],
                body=multipart,
            )
            assert r.status == 200, r.body[:2000]
            import hashlib

            assert json.loads(r.body) == {
                "filename": "three.bin",
                "size": len(upload),
                "sha256": hashlib.sha256(upload).hexdigest(),
            }
            r = await conn.get("/stream?n=50")
            assert r.status == 200
            assert r.body == "".join(f"chunk {i}\n" for i in range(50)).encode()

    run(main())


def test_malformed_input_gets_http3_error_codes(server, certs):
    """Frames out of order and a second control stream are connection errors with the
    codes RFC 9114 names; the worker serves on."""
    srv = h3_server(server, certs, [ASGI])

    async def data_before_headers():
        async with h3_connect(srv.port, certs) as conn:
            sid = conn._quic.get_next_available_stream_id()
            conn._quic.send_stream_data(sid, b"\x00\x01x", end_stream=True)  # DATA first
            conn.transmit()
            return (await conn.wait_terminated()).error_code

    async def second_control_stream():
        async with h3_connect(srv.port, certs) as conn:
            await conn.get("/")  # the client's control stream is open by now
            sid = conn._quic.get_next_available_stream_id(is_unidirectional=True)
            conn._quic.send_stream_data(sid, b"\x00\x04\x00")  # type 0x00, empty SETTINGS
            conn.transmit()
            return (await conn.wait_terminated()).error_code

    async def still_serving():
        async with h3_connect(srv.port, certs) as conn:
            return (await conn.get("/")).text

    assert run(data_before_headers()) == 0x105  # H3_FRAME_UNEXPECTED
    assert run(second_control_stream()) == 0x103  # H3_STREAM_CREATION_ERROR
    assert run(still_serving()) == "hello h3"


def test_sighup_reload_finishes_http3_requests(server, certs):
    """SIGHUP replaces the worker the way SIGTERM stops it: the request in flight on the
    old worker is answered, and a new connection is served by the new worker."""
    srv = h3_server(server, certs, [ASGI])
    old = srv.worker_pids()

    async def main():
        async with h3_connect(srv.port, certs) as conn:
            sid = conn.start("GET", "/slow?1.5")
            srv.wait_for_line("GM-H3-SLOW-START", timeout=10)
            srv.send_signal(signal.SIGHUP)
            r = await conn.response(sid)
            assert (r.status, r.body) == (200, b"slow done")
        wait_until(lambda: srv.worker_pids() and not (srv.worker_pids() & old), timeout=20)
        async with h3_connect(srv.port, certs) as conn:
            r = await conn.get("/env")
            assert json.loads(r.body)["pid"] in srv.worker_pids()

    run(main())


def test_udp_port_taken_is_one_clear_error(gristmill_exit, certs):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        code, out = gristmill_exit(
            [WSGI, "--host", "127.0.0.1", "--port", str(port), "--http3", *certs.server_args()]
        )
    assert code == 1
    assert f"cannot serve HTTP/3 on udp 127.0.0.1:{port}" in out
    assert "Worker" not in out  # refused before any worker started


@pytest.mark.parametrize("target", [WSGI, ASGI])
def test_body_that_differs_from_content_length_is_refused(server, certs, target):
    """RFC 9114 §4.1.2: a body longer or shorter than its Content-Length is malformed.
    The application never gets it as complete; the connection serves on."""
    srv = h3_server(server, certs, [target])

    async def main():
        async with h3_connect(srv.port, certs) as conn:
            statuses = []
            for declared, body in ((10, b"a" * 5), (10, b"a" * 20), (70000, b"a" * 100000)):
                r = await conn.request(
                    "POST", "/sha", headers=[("content-length", str(declared))], body=body
                )
                statuses.append(r.status)
            assert (await conn.get("/")).text == "hello h3"
            return statuses

    statuses = run(main())
    if target == WSGI:
        assert statuses == [400, 400, 400]
    else:
        # Too short reaches the application as a disconnect (this one then fails: 500);
        # too long is refused by the server.
        assert statuses[0] in (400, 500) and statuses[1:] in ([400, 400], [500, 400])


def test_wildcard_bind_reports_the_address_reached(server, certs):
    srv = server(WSGI, "--host", "0.0.0.0", "--http3", *certs.server_args(), expect_ready=False)
    port = int(srv.wait_for_line(r"Listening on https://0\.0\.0\.0:(\d+) ", timeout=30).group(1))

    async def main():
        async with h3_connect(port, certs) as conn:
            return json.loads((await conn.get("/env")).body)

    env = run(main())
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(port)


@pytest.mark.parametrize("target", [WSGI, ASGI])
def test_metrics_count_http3(server, certs, target):
    """--metrics-bind counts HTTP/3 like the other versions: requests by version, the
    QUIC connection (open, then closed), its handshake and its bytes."""
    from test_metrics import key, settle, start, value

    srv, url = start(server, target, "--http3", *certs.server_args())
    data = b"z" * 100_000

    async def main():
        async with h3_connect(srv.port, certs) as conn:
            for _ in range(3):
                assert (await conn.get("/")).status == 200
            r = await conn.request("POST", "/sha", body=data)
            assert r.text == sha_line(data)
            big = [("content-length", "5000")]
            assert (await conn.request("POST", "/sha", headers=big, body=b"a" * 5000)).status == 200

    run(main())
    req = "gristmill_requests_total"
    s = settle(url, {key(req, http_version="3"): 5, key("gristmill_connections_open"): 0})
    assert value(s, req, method="GET", http_version="3", status_class="2xx") == 3
    assert value(s, req, method="POST", http_version="3", status_class="2xx") == 2
    assert value(s, "gristmill_tls_handshakes_total", result="ok") == 1
    assert value(s, "gristmill_connections_total") == 1
    assert value(s, "gristmill_received_bytes_total") > len(data)
    assert value(s, "gristmill_requests_in_flight") == 0
    assert srv.stop() == 0


@pytest.mark.parametrize("target", [WSGI, ASGI])
def test_static_files_over_http3(server, certs, target, tmp_path):
    """``--static`` answers over HTTP/3 before the application, with the same
    semantics as over TCP: the file, a range, a 304 and a 404."""
    public = tmp_path / "public"
    public.mkdir()
    data = os.urandom(300_000)
    (public / "blob.bin").write_bytes(data)
    srv = h3_server(server, certs, [target, "--static", f"/s={public}"])

    async def main():
        async with h3_connect(srv.port, certs) as conn:
            r = await conn.get("/s/blob.bin")
            assert r.status == 200 and r.body == data
            etag = r.header("etag")
            assert etag and r.header("last-modified")
            r = await conn.get("/s/blob.bin", headers=[("range", "bytes=10-19")])
            assert (r.status, r.body) == (206, data[10:20])
            r = await conn.get("/s/blob.bin", headers=[("if-none-match", etag)])
            assert (r.status, r.body) == (304, b"")
            r = await conn.get("/s/missing.bin")
            assert r.status == 404
            # Outside the prefix, the application answers.
            r = await conn.get("/env")
            assert r.status == 200

    run(main())
    srv.wait_for_line(r'"GET /s/blob.bin HTTP/3" 200', timeout=10)


ASGI_MODES_ONLY = ["asgi-one-thread", "asgi-loop-thread"]


@pytest.mark.parametrize("mode", ASGI_MODES_ONLY)
def test_asgi_response_trailers_over_http3(server, certs, mode):
    """The scope announces ``http.response.trailers`` over HTTP/3; trailers sent in two
    messages (``more_trailers``) arrive as one trailing HEADERS frame after the body,
    after a streamed body and after a single body message alike."""
    args, env = MODES[mode]
    srv = h3_server(server, certs, args, env)

    async def main():
        async with h3_connect(srv.port, certs) as conn:
            scope = json.loads((await conn.get("/env")).body)
            assert scope["trailers_ext"] is True
            for n, body in ((3, b"part 0\npart 1\npart 2\n"), (0, b"whole")):
                r = await conn.get(f"/trailers?{n}")
                assert (r.status, r.body) == (200, body)
                assert r.trailers == [(b"x-checksum", b"abc"), (b"x-count", b"%d" % n)]
            assert (await conn.get("/")).text == "hello h3"  # the connection goes on

    run(main())


@pytest.mark.parametrize("mode", ASGI_MODES_ONLY)
def test_asgi_response_trailers_over_http2_and_not_http1(server, certs, mode):
    """The same application over TCP: HTTP/2 announces and sends the trailers; HTTP/1.1
    does not announce them, so the application sends none."""
    from _h2 import H2Raw, h2_tls_context

    args, env = MODES[mode]
    srv = h3_server(server, certs, args, env)
    with H2Raw(srv.port, tls=h2_tls_context(certs.ca, ["h2"])) as conn:
        r = conn.response(conn.request("/trailers?2"))
        assert (r.status, r.body) == (200, b"part 0\npart 1\n")
        assert r.trailers == [("x-checksum", "abc"), ("x-count", "2")]
    ctx = ssl.create_default_context()
    certs.ca.configure_trust(ctx)
    with httpx.Client(verify=ctx, timeout=10) as c:
        assert c.get(f"https://localhost:{srv.port}/env").json()["trailers_ext"] is False
        assert c.get(f"https://localhost:{srv.port}/trailers?2").text == "part 0\npart 1\n"


@pytest.mark.parametrize("target", [WSGI, ASGI])
def test_431_is_counted_like_http1(server, certs, target):
    """A header section over --max-header-size is answered 431 by ``h3`` before
    anything of the request is decoded: the rejection counter counts it as it counts
    HTTP/1.1's; like HTTP/1.1's, it has no access log line (no request line was read)."""
    from test_metrics import key, settle, start, value

    srv, url = start(
        server,
        target,
        "--http3",
        "--max-header-size",
        "4096",
        "--access-log",
        *certs.server_args(),
    )

    async def main():
        async with h3_connect(srv.port, certs) as conn:
            r = await conn.get("/big", headers=[("x-big", "b" * 8000)])
            assert r.status == 431
            assert (await conn.get("/after")).status == 200

    run(main())
    s = settle(
        url, {key("gristmill_rejections_total", reason="headers_too_large", status="431"): 1}
    )
    assert value(s, "gristmill_rejections_total", reason="headers_too_large", status="431") == 1
    srv.wait_for_line(r'"GET /after HTTP/3" 200', timeout=10)
    assert '"GET /big' not in srv.output()


@pytest.fixture(params=list(MODES))
def any_mode(request):
    return request.param


def test_send_timeout_cuts_off_a_client_that_stops_reading(server, certs, any_mode):
    """A client that stops granting credit mid-response: the write stays blocked, and
    after --send-timeout the stream is reset and the application is told (WSGI
    ``close()``, ASGI ``send()`` raising); the connection serves on."""
    args, env = MODES[any_mode]
    srv = h3_server(server, certs, args, env, "--send-timeout", "2")

    async def main():
        async with h3_connect(srv.port, certs) as conn:
            conn.stop_reading()
            sid = conn.start("GET", "/endless?stalled")
            began = time.monotonic()
            reset = None
            while reset is None:
                ev = await conn.next_event(sid, timeout=20)
                if ev.kind == "reset":
                    reset = ev.value
            assert reset == 0x102  # H3_INTERNAL_ERROR: the response is not complete
            srv.wait_for_line("GM-H3-CLOSED stalled", timeout=10)
            assert time.monotonic() - began >= 1.5
            assert (await conn.get("/")).text == "hello h3"

    run(main())


def test_max_connections_waits_and_closes_idle_connections(server, certs, any_mode):
    """At --max-connections a new QUIC connection is not refused: it waits for a place,
    as a TCP one waits in the backlog, while idle connections are closed to make room
    (GOAWAY, then H3_NO_ERROR). A connection with a request in flight is not cut: the
    newcomer is served once that request is answered."""
    args, env = MODES[any_mode]
    srv = h3_server(server, certs, args, env, "--max-connections", "1")

    async def second():
        began = time.monotonic()
        async with h3_connect(srv.port, certs, timeout=20) as b:
            r = await b.get("/")
            return r.text, time.monotonic() - began

    async def main():
        async with h3_connect(srv.port, certs) as a:
            sid = a.start("GET", "/slow?1.5")
            srv.wait_for_line("GM-H3-SLOW-START", timeout=10)
            newcomer = asyncio.ensure_future(second())
            r = await a.response(sid)
            assert (r.status, r.body) == (200, b"slow done")
            term = await a.wait_terminated()
            assert term.error_code == H3_NO_ERROR, term
            text, waited = await newcomer
            assert text == "hello h3"
            assert waited >= 0.5, waited  # it waited for the slow request's end
        # An idle connection makes room at once for the next newcomer.
        async with h3_connect(srv.port, certs) as c:
            assert (await c.get("/")).text == "hello h3"
            text, waited = await second()
            assert text == "hello h3" and waited < 5, waited
            assert (await c.wait_terminated()).error_code == H3_NO_ERROR

    run(main())


def test_tls_cipher_suite_reported_in_every_mode(server, certs, any_mode):
    """``SSL_CIPHER`` (WSGI) and the ``tls`` extension's ``cipher_suite`` (ASGI) name
    the suite the QUIC handshake negotiated, for each TLS 1.3 suite a client may insist
    on."""
    from aioquic.tls import CipherSuite

    args, env = MODES[any_mode]
    srv = h3_server(server, certs, args, env)
    names = {
        CipherSuite.AES_128_GCM_SHA256: "TLS13_AES_128_GCM_SHA256",
        CipherSuite.AES_256_GCM_SHA384: "TLS13_AES_256_GCM_SHA384",
        CipherSuite.CHACHA20_POLY1305_SHA256: "TLS13_CHACHA20_POLY1305_SHA256",
    }

    async def main():
        for suite, name in names.items():
            async with h3_connect(srv.port, certs, cipher_suites=[suite]) as conn:
                env = json.loads((await conn.get("/env")).body)
            if any_mode.startswith("asgi"):
                assert env["tls_ext"]["tls_version"] == 0x0304
                assert env["tls_ext"]["cipher_suite"] == int(suite), (name, env["tls_ext"])
            else:
                assert env["SSL_PROTOCOL"] == "TLSv1.3"
                assert env["SSL_CIPHER"] == name, env

    run(main())
