"""ASGI over HTTP/2 and TLS: `http_version` "2", `scheme` https/wss, the `tls` scope
extension with the client certificate, `host` from `:authority`, WebSocket over TLS."""

from __future__ import annotations

import ast
import asyncio
import ssl

import httpx
import pytest
from hyperframe.frame import DataFrame, HeadersFrame, RstStreamFrame
from websockets.asyncio.client import connect

from _h2 import H2Raw, h2_tls_context
from _support import answer_while_io_thread_blocked, io_gated_args, wait_for_file

# Every test here runs once per ASGI mode (one thread, loop thread).
pytestmark = pytest.mark.usefixtures("asgi_mode")

SCOPE_APP = "asgi_scope_app:app"


def scope_over(client: httpx.Client, url: str) -> tuple[str, dict]:
    r = client.get(url)
    assert r.status_code == 200, r.text
    return r.http_version, ast.literal_eval(r.text)


def test_asgi_h2c_scope(server):
    srv = server(SCOPE_APP, "--interface", "asgi")
    with httpx.Client(http1=False, http2=True, timeout=10) as c:
        version, scope = scope_over(c, srv.url + "/p?q=1")
    assert version == "HTTP/2"
    assert scope["http_version"] == "2"
    assert scope["scheme"] == "http"
    assert (b"host", f"127.0.0.1:{srv.port}".encode()) in scope["headers"]
    assert "tls" not in scope["extensions"]


def test_asgi_many_streams_on_one_connection(server):
    srv = server(SCOPE_APP, "--interface", "asgi")
    with H2Raw(srv.port) as conn:
        sids = [conn.request(f"/s{i}") for i in range(100)]
        for i, sid in enumerate(sids):
            r = conn.response(sid)
            assert r.status == 200
            assert ast.literal_eval(r.body.decode())["path"] == f"/s{i}"


def test_asgi_https_h2_scope_and_tls_extension(server, certs):
    srv = server(
        SCOPE_APP,
        "--interface",
        "asgi",
        *certs.server_args(
            "--ssl-ca-certs", str(certs.client_ca), "--ssl-client-verify", "optional"
        ),
    )
    ctx = ssl.create_default_context()
    certs.ca.configure_trust(ctx)
    with httpx.Client(verify=ctx, http2=True, timeout=10) as c:
        version, scope = scope_over(c, f"https://localhost:{srv.port}/t")
    assert version == "HTTP/2" and scope["http_version"] == "2"
    assert scope["scheme"] == "https"
    tls = scope["extensions"]["tls"]
    assert tls["tls_version"] == 0x0304
    assert tls["cipher_suite"] in (0x1301, 0x1302, 0x1303)
    assert tls["client_cert_chain"] == [] and tls["client_cert_name"] is None
    # The shared extensions are not changed for everyone.
    assert "http.response.pathsend" in scope["extensions"]

    certs.client.configure_cert(ctx)
    with httpx.Client(verify=ctx, http1=True, http2=False, timeout=10) as c:
        version, scope = scope_over(c, f"https://localhost:{srv.port}/t")
    assert version == "HTTP/1.1" and scope["http_version"] == "1.1"
    tls = scope["extensions"]["tls"]
    assert tls["client_cert_chain"] == [certs.client.cert_chain_pems[0].bytes().decode()]
    assert "CN=gm-test-client" in tls["client_cert_name"]
    assert tls["client_cert_error"] is None


def test_asgi_h2_invalid_preface_gets_goaway(server, certs):
    srv = server(SCOPE_APP, "--interface", "asgi", *certs.server_args())
    with H2Raw(srv.port, tls=h2_tls_context(certs.ca, ["h2"]), handshake=False) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.expect_goaway(0x1).error_code == 0x1


def test_websocket_over_tls(server, certs):
    srv = server("asgi_ws_app:app", "--interface", "asgi", *certs.server_args())
    ctx = ssl.create_default_context()
    certs.ca.configure_trust(ctx)

    async def go():
        async with connect(f"wss://localhost:{srv.port}/echo", ssl=ctx) as ws:
            await ws.send("over tls")
            return await ws.recv()

    assert asyncio.run(asyncio.wait_for(go(), 20)) == "over tls"


def test_asgi_stream_reset_gives_http_disconnect(server, tmp_path):
    """RST_STREAM from the client: the app waiting in receive() gets http.disconnect,
    and the connection's other streams carry on."""
    srv = server("asgi_http_app:app", "--interface", "asgi", env={"GM_TEST_DIR": str(tmp_path)})
    with H2Raw(srv.port) as conn:
        sid = conn.request("/disconnect-before-response?tag=h2-rst")
        wait_for_file(tmp_path / "h2-rst-waiting")
        conn.send(RstStreamFrame(sid, error_code=0x8))  # CANCEL
        assert wait_for_file(tmp_path / "h2-rst") == "http.disconnect"
        other = conn.request("/ok")
        assert conn.response(other).body == b"ok"


@pytest.mark.parametrize("path", ["/v/raise-midstream", "/v/return-midstream"])
def test_asgi_h2_failure_right_after_the_first_chunk_sends_it_then_resets(
    server, tmp_path, asgi_mode, path
):
    """Over HTTP/2, the app sending the head and one chunk and failing at once (before
    the connection wrote anything) gets the head and the chunk out, then the stream is
    reset (INTERNAL_ERROR); the connection's other streams carry on."""
    srv = server(
        "asgi_http_app:app", *io_gated_args(tmp_path, asgi_mode), env={"GM_TEST_DIR": str(tmp_path)}
    )
    with H2Raw(srv.port) as conn:
        sid = conn.request(f"{path}?tag=once&before={tmp_path / 'before'}")
        answer_while_io_thread_blocked(srv, tmp_path, r'"GET /v/\S+ HTTP/2" 200')
        frames = [f for f in conn.frames_until(RstStreamFrame) if f.stream_id == sid]
        assert [type(f) for f in frames] == [HeadersFrame, DataFrame, RstStreamFrame], frames
        assert dict(frames[0].decoded)[":status"] == "200"
        assert frames[1].data == b"partial-" and "END_STREAM" not in frames[1].flags
        assert frames[2].error_code == 0x2  # INTERNAL_ERROR
        other = conn.request("/ok")
        assert conn.response(other).body == b"ok"


def test_a_stream_whose_window_stays_shut_times_out(server, tmp_path):
    """A client that keeps one stream's window at 0 while its connection stays healthy:
    the application's send() raises ClientDisconnected after --send-timeout, and the
    stream is reset rather than ended as if complete once the window opens."""
    srv = server("asgi_http_app:app", "--send-timeout", "1", env={"GM_TEST_DIR": str(tmp_path)})
    mark = srv.mark()
    with H2Raw(srv.port, handshake=False) as conn:
        conn.handshake_with_shut_windows()
        sid = conn.request("/v/raise-after-flood?n=40")
        srv.wait_for_line(r"took none of the response for 1(\.0)? s \(send_timeout\)", start=mark)
        assert srv.get("/ok").text == "ok"
        conn.open_windows(sid)
        frames = [f for f in conn.frames_until(RstStreamFrame) if f.stream_id == sid]
        assert isinstance(frames[-1], RstStreamFrame), frames
        assert not any("END_STREAM" in f.flags for f in frames), frames
