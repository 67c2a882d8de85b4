"""gristmill behind a real nginx, started here with the site configuration
docs/deployment.md shows ("Behind nginx on a Unix socket"), in every execution mode:
WebSocket through nginx, HTTP/2 from the client to nginx (TLS), a large upload and
download, and not one 502 through a SIGHUP rolling restart or ``--max-requests``
recycling under load, nor for the requests in flight at a SIGTERM.

Upstreams: the Unix socket the docs use and TCP, both for the transfers and WebSocket;
the restarts run over the Unix socket (SIGHUP, SIGTERM) and TCP (recycling).
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import ssl
import threading
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from _proxy import EdgeProxies, docs_config
from _support import PidLoad, Server, every_mode, free_port, wait_until

MODES = every_mode("edge_app:application", "edge_app:app")
ASGI_ONLY = {k: v for k, v in MODES.items() if k.startswith("asgi")}
UPSTREAMS = ["unix", "tcp"]
CLIENTS = 4
MIB = 1024 * 1024

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def edge(tmp_path):
    proxies = EdgeProxies(tmp_path)
    yield proxies
    proxies.close()


class Front:
    """gristmill (``mode``, over ``upstream``) with nginx in front."""

    def __init__(self, server, edge, tmp_path: Path, certs, mode: str, upstream: str, *args):
        app, env = MODES[mode]
        path = str(tmp_path / "app.sock")
        bind = f"unix:{path}" if upstream == "unix" else "127.0.0.1:0"
        self.srv: Server = server(*app, "--bind", bind, *args, env=env, expect_ready=False)
        self.srv.wait_for_line(r"Listening on \S+ \(\d+ workers?\)", timeout=30)
        if upstream == "tcp":
            port = self.srv.wait_for_line(r"Listening on http://127\.0\.0\.1:(\d+)").group(1)
            target = f"127.0.0.1:{port}"
        else:
            target = f"unix:{path}"
        self.http_port, self.https_port = free_port(), free_port()
        site = docs_config(
            "nginx-site",
            {
                "unix:/run/gristmill/app.sock": target,
                "listen 80;": f"listen 127.0.0.1:{self.http_port};",
                "listen 443 ssl http2;": f"listen 127.0.0.1:{self.https_port} ssl http2;",
                "/etc/ssl/example.org/fullchain.pem": str(certs.chain),
                "/etc/ssl/example.org/privkey.pem": str(certs.key_pkcs8),
            },
        )
        self.nginx_dir = edge.nginx(site, [self.http_port, self.https_port])
        self.url = f"http://127.0.0.1:{self.http_port}"

    def nginx_log(self) -> str:
        return (self.nginx_dir / "error.log").read_text()


@pytest.fixture
def front(server, edge, tmp_path, certs):
    def start(mode: str, upstream: str, *args: str) -> Front:
        return Front(server, edge, tmp_path, certs, mode, upstream, *args)

    return start


@pytest.mark.parametrize("upstream", UPSTREAMS)
@pytest.mark.parametrize("mode", list(ASGI_ONLY))
def test_websocket_through_nginx(front, mode, upstream):
    f = front(mode, upstream)

    async def talk():
        async with connect(f"ws://127.0.0.1:{f.http_port}/ws") as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01" * 40000)
            assert await ws.recv() == b"\x00\x01" * 40000

    asyncio.run(asyncio.wait_for(talk(), 20))


@pytest.mark.parametrize("mode", list(MODES))
def test_http2_from_the_client_to_nginx(front, certs, mode):
    f = front(mode, "unix")
    ctx = ssl.create_default_context()
    certs.ca.configure_trust(ctx)
    with httpx.Client(http2=True, verify=ctx, timeout=20) as client:
        # Several streams on one connection, a download among them.
        resps = [client.get(f"https://127.0.0.1:{f.https_port}/") for _ in range(3)]
        big = client.get(f"https://127.0.0.1:{f.https_port}/download?mib=2")
    for r in [*resps, big]:
        assert (r.status_code, r.http_version) == (200, "HTTP/2")
    assert int(resps[0].text) > 0
    assert big.content == bytes(range(256)) * (2 * MIB // 256)


@pytest.mark.parametrize("upstream", UPSTREAMS)
@pytest.mark.parametrize("mode", list(MODES))
def test_large_upload_and_download(front, mode, upstream):
    f = front(mode, upstream)
    body = bytes(range(256)) * (16 * MIB // 256)
    body = hashlib.sha256(body).digest() * 16 + body  # not only the ramp
    with httpx.Client(timeout=60) as client:
        up = client.post(f.url + "/upload", content=body)
        assert up.status_code == 200, up.text
        assert up.text == f"{len(body)} {hashlib.sha256(body).hexdigest()}"
        down = client.get(f.url + "/download?mib=16")
    assert down.status_code == 200
    assert down.content == bytes(range(256)) * (16 * MIB // 256)


def _check(load: PidLoad, f: Front) -> None:
    """Not one request through nginx failed (no 502 above all)."""
    assert not load.failures, (load.failures[:5], load.statuses, f.nginx_log())
    assert set(load.statuses) == {200}


def _replaced(f: Front, old: set[int], load: PidLoad) -> None:
    """Every worker of ``old`` has exited and new workers serve the load."""
    wait_until(lambda: not (f.srv.worker_pids() & old), 40, message=f"workers {old} to exit")
    new = f.srv.worker_pids() - old
    assert new
    before = load.served_by(new)
    wait_until(lambda: load.served_by(new) > before + 100, 30, message="new workers serving")


@pytest.mark.parametrize("mode", list(MODES))
def test_sighup_rolling_restart_gives_no_502(front, mode):
    f = front(mode, "unix", "--workers", "2", "--no-access-log")
    old = f.srv.worker_pids()
    with PidLoad(f.url + "/", CLIENTS) as load:
        wait_until(lambda: load.served_by(old) > 100, 20, message="load on the old workers")
        f.srv.send_signal(signal.SIGHUP)
        _replaced(f, old, load)
    _check(load, f)


@pytest.mark.parametrize("mode", list(MODES))
def test_max_requests_recycling_gives_no_502(front, mode):
    f = front(mode, "tcp", "--workers", "2", "--max-requests", "80", "--no-access-log")
    old = f.srv.worker_pids()
    with PidLoad(f.url + "/", CLIENTS) as load:
        _replaced(f, old, load)
    _check(load, f)
    f.srv.wait_for_line(r"Worker \d+ served \d+ requests .*; replacing it", timeout=1)


@pytest.mark.parametrize("mode", list(MODES))
def test_sigterm_finishes_the_requests_in_flight(front, mode, tmp_path):
    # n requests, all started before the signal. (In the WSGI inline mode a worker runs
    # one at a time: the last to start is then the one in flight.)
    f = front(mode, "unix", "--workers", "2")
    marks = tmp_path / "marks"
    marks.mkdir()
    n = 4
    results: list[object] = [None] * n

    def one(i: int) -> None:
        try:
            r = httpx.get(f"{f.url}/sleep?s=1&mark={marks}", timeout=30)
            results[i] = r.status_code
        except httpx.HTTPError as e:
            results[i] = repr(e)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    wait_until(lambda: len(list(marks.glob("started-*"))) == n, 20, message="requests in flight")
    f.srv.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert results == [200] * n, (results, f.nginx_log())
    assert f.srv.proc.wait(30) == 0
