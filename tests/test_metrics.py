"""Prometheus metrics (``--metrics-bind``): a real gristmill with 2 workers, scraped over
real HTTP with httpx and parsed with prometheus_client's own text parser, and scraped
by a real Prometheus server queried over its HTTP API.

The counts are exact: after N requests the scrape says N, summed over both workers,
in every execution mode, over HTTP/1.1 and HTTP/2, and they stay exact (and never go
down) when workers are recycled (``--max-requests``), reloaded (SIGHUP) or crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hyperframe.frame import ContinuationFrame, HeadersFrame
from prometheus_client.parser import text_string_to_metric_families

from _h2 import COMPRESSION_ERROR, ENHANCE_YOUR_CALM, H2Raw, h2_tls_context
from _support import Server, every_mode, request, wait_until
from _ws_h2 import CLOSE, TEXT, H2Client, close_payload

pytestmark = pytest.mark.timeout(90)

MODES = every_mode("metrics_app.py:application", "metrics_app.py:app")
METRICS_RE = re.compile(r"Metrics on (?P<where>\S+) \(process (?P<pid>\d+)\)")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, transport: httpx.HTTPTransport | None = None) -> Samples:
    """GET ``url`` and parse it: (sample name, labels) -> value."""
    with httpx.Client(timeout=10, transport=transport) as client:
        r = client.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def start(server, *args: str, env: dict[str, str] | None = None, bind: str = "127.0.0.1:0"):
    """A server with metrics on ``bind``; returns it and its metrics URL."""
    srv: Server = server("--metrics-bind", bind, *args, env=env)
    m = srv.wait_for_line(METRICS_RE)
    return srv, m.group("where")


def settle(url: str, expect: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> Samples:
    """Scrape until every (name, labels) in ``expect`` has its value (the last response
    may still be finishing when its client has it); return that scrape."""
    last: list[Samples] = []

    def ok() -> bool:
        last[:] = [scrape(url)]
        return all(value(last[0], n, **dict(ls)) == v for (n, ls), v in expect.items())

    try:
        wait_until(ok, timeout=15, interval=0.05, message=f"metrics {expect}")
    except AssertionError:
        got = {k: value(last[0], k[0], **dict(k[1])) for k in expect} if last else None
        raise AssertionError(f"expected {expect}, got {got}") from None
    return last[0]


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


@pytest.mark.parametrize("mode", list(MODES))
def test_counts_are_exact_across_two_workers(server, mode):
    args, env = MODES[mode]
    iface = "asgi" if mode.startswith("asgi") else "wsgi"
    srv, url = start(server, *args, "--workers", "2", "--reuse-port", env=env)
    assert srv.workers == 2
    pids = {request("GET", srv.url + "/").text for _ in range(40)}
    assert len(pids) == 2, f"both workers should have answered: {pids}"
    for _ in range(3):
        assert request("GET", srv.url + "/missing").status_code == 404
    assert request("GET", srv.url + "/fail").status_code == 500
    body = b"x" * 1000
    for _ in range(2):
        assert request("POST", srv.url + "/echo", content=body).content == body
    with httpx.Client(http1=False, http2=True, timeout=10) as h2:  # h2c, prior knowledge
        for _ in range(5):
            r = h2.get(srv.url + "/")
            assert r.http_version == "HTTP/2" and r.status_code == 200
    total = 40 + 3 + 1 + 2 + 5
    s = settle(
        url,
        {
            key("gristmill_request_duration_seconds_count", interface=iface): total,
            key("gristmill_requests_in_flight"): 0,
        },
    )
    req = "gristmill_requests_total"
    assert value(s, req) == total
    assert value(s, req, interface=iface) == total
    assert value(s, req, method="GET", http_version="1.1", status_class="2xx") == 40
    assert value(s, req, method="GET", http_version="1.1", status_class="4xx") == 3
    assert value(s, req, method="GET", http_version="1.1", status_class="5xx") == 1
    assert value(s, req, method="POST", http_version="1.1", status_class="2xx") == 2
    assert value(s, req, method="GET", http_version="2", status_class="2xx") == 5
    assert value(s, "gristmill_request_duration_seconds_bucket", le="+Inf") == total
    assert 0 < value(s, "gristmill_request_duration_seconds_sum") < 30
    assert value(s, "gristmill_connections_total") == 40 + 3 + 1 + 2 + 1
    # Bytes: at least the bodies, each way (the heads come on top).
    assert value(s, "gristmill_received_bytes_total") > 2 * len(body) + 46 * 30
    assert value(s, "gristmill_sent_bytes_total") > 2 * len(body) + 46 * 40
    assert value(s, "gristmill_worker_starts_total", reason="initial") == 2
    assert value(s, "gristmill_worker_exits_total") == 0
    assert value(s, "gristmill_workers") == 2
    rss = {dict(ls)["pid"]: v for (n, ls), v in s.items() if n.startswith("gristmill_worker_res")}
    assert set(rss) == pids and all(v > 1 << 20 for v in rss.values())
    # Connections close as their clients do.
    settle(url, {key("gristmill_connections_open"): 0})
    assert srv.stop() == 0


def test_metrics_port_serves_only_metrics(server):
    srv, url = start(server, "metrics_app.py:application")
    base = url.rsplit("/", 1)[0]
    assert request("GET", base + "/").status_code == 404
    assert request("GET", base + "/metrics/x").status_code == 404
    r = request("GET", url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")
    # The application's port does not serve the metrics.
    assert request("GET", srv.url + "/metrics").text.isdigit()
    assert srv.stop() == 0


@pytest.mark.parametrize("mode", ["asgi-one-thread", "asgi-loop-thread"])
def test_websocket_connections_and_messages(server, mode):
    from websockets.sync.client import connect

    args, env = MODES[mode]
    srv, url = start(server, *args, "--workers", "2", env=env)
    ws_url = srv.url.replace("http://", "ws://") + "/ws"
    with connect(ws_url) as ws:
        settle(url, {key("gristmill_websocket_connections_open"): 1})
        for i in range(3):
            ws.send(f"hello {i}")
            assert ws.recv(timeout=10) == f"hello {i}"
        ws.send(b"bytes")
        assert ws.recv(timeout=10) == b"bytes"
    with connect(ws_url) as ws:
        ws.send("again")
        assert ws.recv(timeout=10) == "again"
    # Over HTTP/2 (RFC 8441): the same counters.
    with H2Client(srv.port) as c:
        sid, status, _ = c.open_ws("/ws")
        assert status == 200
        settle(url, {key("gristmill_websocket_connections_open"): 1})
        c.send_text(sid, "over h2")
        assert c.recv(sid) == (TEXT, b"over h2")
        c.send(sid, CLOSE, close_payload(1000))
        assert c.recv(sid)[0] == CLOSE
        c.wait_ended(sid)
    m = "gristmill_websocket_messages_total"
    s = settle(
        url,
        {
            key("gristmill_websocket_connections_open"): 0,
            key("gristmill_websocket_connections_total"): 3,
            key(m, direction="received"): 6,
            key(m, direction="sent"): 6,
        },
    )
    # The handshakes are requests too: a 101 each over HTTP/1.1, a 200 over HTTP/2.
    assert value(s, "gristmill_requests_total", status_class="1xx", http_version="1.1") == 2
    assert value(s, "gristmill_requests_total", method="CONNECT", http_version="2") == 1
    assert srv.stop() == 0


@pytest.mark.parametrize("mode", list(MODES))
def test_counters_survive_recycling(server, mode):
    args, env = MODES[mode]
    srv, url = start(server, *args, "--workers", "2", "--max-requests", "10", env=env)
    seen: list[float] = []
    for i in range(1, 61):
        assert request("GET", srv.url + "/").status_code == 200
        if i % 10 == 0:
            # Never down, whatever is being recycled at this moment.
            now = value(scrape(url), "gristmill_requests_total")
            assert not seen or now >= seen[-1], (seen, now)
            seen.append(now)
    s = settle(
        url,
        {
            key("gristmill_requests_total"): 60,
            key("gristmill_request_duration_seconds_count"): 60,
        },
    )
    assert value(s, "gristmill_worker_starts_total", reason="recycle") >= 1
    # Wait for the replaced workers to be gone: their counts are in the retired total.
    s = settle(url, {key("gristmill_workers"): 2})
    exits = value(s, "gristmill_worker_exits_total", reason="max_requests")
    starts = value(s, "gristmill_worker_starts_total", reason="recycle")
    assert exits >= 1 and exits <= starts
    assert value(s, "gristmill_requests_total") == 60
    assert srv.stop() == 0


def test_counters_survive_sighup_and_a_crash(server):
    srv, url = start(server, "metrics_app.py:application", "--workers", "2")
    for _ in range(7):
        request("GET", srv.url + "/")
    srv.send_signal(signal.SIGHUP)
    srv.wait_for_line("Reload complete")
    s = settle(
        url,
        {
            key("gristmill_worker_exits_total", reason="reload"): 2,
            key("gristmill_worker_starts_total", reason="reload"): 2,
            key("gristmill_workers"): 2,
        },
    )
    assert value(s, "gristmill_requests_total") == 7
    for _ in range(3):
        request("GET", srv.url + "/")
    victim = int(request("GET", srv.url + "/").text)
    os.kill(victim, signal.SIGKILL)
    s = settle(
        url,
        {
            key("gristmill_worker_exits_total", reason="crashed"): 1,
            key("gristmill_worker_starts_total", reason="crashed"): 1,
            key("gristmill_requests_total"): 11,
        },
    )
    assert value(s, "gristmill_worker_starts_total", reason="initial") == 2
    assert srv.stop() == 0


def test_a_hung_worker_counts_as_hung(server):
    srv, url = start(server, "hang_app:app", "--workers", "2", "--worker-timeout", "1")
    for _ in range(3):
        request("GET", srv.url + "/")
    with pytest.raises(httpx.HTTPError):
        request("GET", srv.url + "/spin", timeout=30)  # the worker is killed under it
    s = settle(
        url,
        {
            key("gristmill_worker_exits_total", reason="hung"): 1,
            key("gristmill_worker_starts_total", reason="hung"): 1,
            key("gristmill_workers"): 2,
        },
    )
    assert value(s, "gristmill_requests_total") == 3
    assert srv.stop() == 0


@pytest.mark.parametrize("mode", ["wsgi-pool", "asgi-one-thread", "asgi-loop-thread"])
def test_rejections_by_limit(server, mode):
    args, env = MODES[mode]
    srv, url = start(
        server,
        *args,
        "--limit-concurrency",
        "1",
        "--max-body-size",
        "100",
        "--max-header-size",
        "2048",
        "--request-timeout",
        "1",
        env=env,
    )
    assert request("POST", srv.url + "/echo", content=b"x" * 200).status_code == 413
    assert request("GET", srv.url + "/", headers={"x-big": "y" * 4000}).status_code == 431
    with httpx.Client(timeout=10) as slow:
        t = threading.Thread(target=lambda: slow.get(srv.url + "/slow?s=3"), daemon=True)
        t.start()
        settle(url, {key("gristmill_requests_in_flight"): 1})
        assert request("GET", srv.url + "/").status_code == 503
        t.join(10)
    r = "gristmill_rejections_total"
    s = settle(url, {key(r, reason="request_timeout"): 1, key("gristmill_requests_in_flight"): 0})
    assert value(s, r, reason="body_too_large", status="413") == 1
    assert value(s, r, reason="headers_too_large", status="431") == 1
    assert value(s, r, reason="limit_concurrency", status="503") == 1
    assert value(s, r, reason="request_timeout", status="504") == 1
    assert value(s, "gristmill_requests_total", status_class="5xx") == 2  # 503 and 504
    assert srv.stop() == 0


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
@pytest.mark.parametrize("mode", list(MODES))
def test_http2_header_blocks_over_the_limit(server, certs, mode, tls):
    """Over HTTP/2 the `h2` crate refuses a header block over --max-header-size itself,
    before hyper or the application sees a request: a 431 on that stream (the
    connection carries on), or, for a block that goes on growing far past the limit,
    GOAWAY (COMPRESSION_ERROR, ENHANCE_YOUR_CALM). Each counts once under
    ``headers_too_large``, as HTTP/1.1's and HTTP/3's 431, with no access log line and
    not as a request. h2c by prior knowledge and TLS after ALPN chose h2."""
    args, env = MODES[mode]
    srv, url = start(
        server,
        *args,
        "--max-header-size",
        "4096",
        "--access-log",
        *(certs.server_args() if tls else ["--http", "auto"]),
        env=env,
    )
    ctx = h2_tls_context(certs.ca, ["h2"]) if tls else None
    big = {"x-big": "y" * 8000}
    client = httpx.Client(http1=False, http2=True, verify=ctx or True, timeout=10)
    with client:
        # The first request of a connection, then one on a connection in use.
        r = client.get(srv.url + "/big", headers=big)
        assert (r.status_code, r.http_version) == (431, "HTTP/2")
        assert client.get(srv.url + "/").status_code == 200
        assert client.get(srv.url + "/big", headers=big).status_code == 431
        assert client.get(srv.url + "/").status_code == 200
    with H2Raw(srv.port, tls=ctx) as conn:  # 4 x 5000 octets: far over twice the limit
        sid = conn.new_stream()
        extra = [(f"x-big-{i}", "v" * 5000) for i in range(4)]
        block = conn.encoder.encode(conn.request_headers("/big", extra=extra))
        conn.send(HeadersFrame(sid, data=block[:16000], flags=["END_STREAM"]))
        conn.send(ContinuationFrame(sid, data=block[16000:], flags=["END_HEADERS"]))
        conn.expect_goaway(COMPRESSION_ERROR)
    with H2Raw(srv.port, tls=ctx) as conn:  # one frame decoding to over 4 x the limit
        conn.request("/big", extra=[("x-big", "a" * 20000)])  # Huffman: 12500 octets
        conn.expect_goaway(ENHANCE_YOUR_CALM)
    r = "gristmill_rejections_total"
    s = settle(url, {key(r, reason="headers_too_large", status="431"): 4})
    assert value(s, r) == 4
    assert value(s, "gristmill_requests_total") == 2
    assert value(s, "gristmill_requests_total", http_version="2", status_class="2xx") == 2
    srv.wait_for_line(r'"GET / HTTP/2" 200', timeout=10)
    assert srv.stop() == 0
    assert '"GET /big' not in srv.output()


@pytest.mark.parametrize("mode", ["wsgi-inline", "asgi-one-thread"])
def test_refusals_before_the_application(server, mode):
    args, env = MODES[mode]
    srv, url = start(
        server, *args, "--header-read-timeout", "1", "--body-read-timeout", "1", env=env
    )
    with srv.raw() as conn:  # a head that never ends: closed, no answer
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        conn.closed_within(10)
    with srv.raw() as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
        assert conn.response().status == 400
    with srv.raw() as conn:  # a body that stalls
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        assert conn.response().status == 408
    r = "gristmill_rejections_total"
    s = settle(
        url,
        {
            key(r, reason="header_timeout", status="408"): 1,
            key(r, reason="bad_request", status="400"): 1,
            key(r, reason="body_timeout", status="408"): 1,
        },
    )
    # hyper answered the 400 itself (no request reached us); the 408 is a request.
    assert value(s, "gristmill_requests_total", status_class="4xx") == 1
    assert srv.stop() == 0


def test_tls_handshakes(server, certs):
    srv, url = start(server, "metrics_app.py:application", *certs.server_args())
    ctx = ssl.create_default_context()
    certs.ca.configure_trust(ctx)
    with httpx.Client(verify=ctx, timeout=10) as client:
        assert client.get(srv.url + "/").status_code == 200
    with socket.create_connection(("127.0.0.1", srv.port)) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not a TLS ClientHello
        raw.settimeout(10)
        while raw.recv(1024):
            pass
    t = "gristmill_tls_handshakes_total"
    settle(url, {key(t, result="ok"): 1, key(t, result="failed"): 1})
    assert srv.stop() == 0


def test_unix_socket_bind(server, tmp_path):
    path = tmp_path / "metrics.sock"
    srv, where = start(server, "metrics_app.py:application", bind=f"unix:{path}")
    assert where == f"unix:{path}"
    request("GET", srv.url + "/")
    transport = httpx.HTTPTransport(uds=str(path))
    s = scrape("http://metrics/metrics", transport=transport)
    assert value(s, "gristmill_requests_total") == 1
    assert srv.stop() == 0
    assert not path.exists()


def test_ipv6_bind(server):
    srv, url = start(server, "metrics_app.py:application", bind="[::1]:0")
    assert url.startswith("http://[::1]:"), url
    request("GET", srv.url + "/")
    settle(url, {key("gristmill_requests_total"): 1})
    assert srv.stop() == 0


def test_off_by_default(server):
    srv = server("metrics_app.py:application", "--workers", "2")
    assert "Metrics on" not in srv.output()
    assert len(srv.worker_pids()) == 2  # no metrics process
    assert srv.stop() == 0


@pytest.mark.parametrize(
    "bind, message",
    [
        ("nonsense", "expected HOST:PORT, [IPV6]:PORT or unix:PATH"),
        ("::1:9100", "put an IPv6 address in brackets"),
        ("unix:", "empty socket path"),
        ("192.0.2.1:9100", "cannot serve metrics on 192.0.2.1:9100"),
    ],
)
def test_bad_bind_is_a_clear_error(gristmill_exit, bind, message):
    code, out = gristmill_exit(["metrics_app.py:application", "--metrics-bind", bind])
    assert code != 0
    assert message in out, out
    assert "Traceback" not in out


def test_port_in_use_is_a_clear_error(gristmill_exit):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out = gristmill_exit(
            ["metrics_app.py:application", "--metrics-bind", f"127.0.0.1:{port}"]
        )
    assert code != 0
    assert f"cannot serve metrics on 127.0.0.1:{port}" in out, out


def test_missing_prometheus_client_is_a_clear_error(gristmill_exit, tmp_path):
    shadow = tmp_path / "prometheus_client"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('no prometheus_client here')\n")
    code, out = gristmill_exit(
        ["metrics_app.py:application", "--metrics-bind", "127.0.0.1:0"],
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert code == 2, out
    assert "pip install 'gristmill[metrics]'" in out


# --- a real Prometheus -------------------------------------------------------------------

PROMETHEUS = shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _prometheus(tmp_path: Path, target: str) -> Iterator[str]:
    """A Prometheus scraping ``target`` with the docs' scrape configuration; yields the
    address of its HTTP API."""
    from _proxy import docs_config

    config = docs_config(
        "prometheus",
        {"scrape_interval: 15s": "scrape_interval: 1s", "localhost:9100": target},
    )
    (tmp_path / "prometheus.yml").write_text(config)
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        cwd=tmp_path,
    )
    api = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _get(api + "/-/ready") == 200, timeout=30, message="Prometheus ready")
        yield api
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return 0


def _query(api: str, promql: str) -> float | None:
    r = httpx.get(api + "/api/v1/query?" + urllib.parse.urlencode({"query": promql}), timeout=5)
    data = r.json()
    assert data["status"] == "success", data
    result = data["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (.ci/run installs it)")
@pytest.mark.timeout(120)
def test_a_real_prometheus_scrapes_two_workers(server, tmp_path):
    srv, url = start(server, "metrics_app.py:application", "--workers", "2", "--reuse-port")
    target = urllib.parse.urlsplit(url).netloc
    pids = {request("GET", srv.url + "/").text for _ in range(30)}
    assert len(pids) == 2
    for _ in range(4):
        request("GET", srv.url + "/missing")
    settle(url, {key("gristmill_request_duration_seconds_count"): 34})
    with _prometheus(tmp_path, target) as api:
        wait_until(
            lambda: _query(api, 'up{job="gristmill"}') == 1,
            timeout=30,
            interval=0.2,
            message="Prometheus to scrape gristmill",
        )
        q = {
            'sum(gristmill_requests_total{status_class="2xx"})': 30,
            'sum(gristmill_requests_total{status_class="4xx"})': 4,
            'sum(gristmill_request_duration_seconds_count{interface="wsgi"})': 34,
            'gristmill_worker_starts_total{reason="initial"}': 2,
            "count(gristmill_worker_resident_memory_bytes)": 2,
        }
        for promql, want in q.items():
            got = _query(api, promql)
            assert got == want, (promql, got, json.dumps(want))
    assert srv.stop() == 0
