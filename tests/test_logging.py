"""Logging: the default error-log format, access log lines and atoms, --log-config."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import sys

import httpx
import pytest

from _support import every_mode, free_port, wait_until
from gristmill import logging as gm_logging

APP = "http_app:application"


def test_default_error_log_format(server):
    srv = server(APP)
    m = re.fullmatch(
        r"\[([^\]]+)\] \[(\d+)\] \[INFO\] Listening on "
        r"http://127\.0\.0\.1:(\d+) \(1 worker\)",
        srv.ready_line,
    )
    assert m, srv.ready_line
    assert m.group(1).strip()
    assert int(m.group(2)) == srv.pid  # the supervisor says it
    assert srv.ready_line in srv.stderr_lines()


def test_default_access_log_line_on_stdout(server):
    srv = server(APP)
    assert srv.get("/x?y=1").text == "hello"
    m = srv.wait_for_line(r'^127\.0\.0\.1 - "GET /x\?y=1 HTTP/1\.1" 200 5 \d+ms$', stream="stdout")
    assert m.string not in srv.stderr_lines()


def test_access_log_atoms(server):
    fmt = (
        "h=%(h)s|t=%(t)s|r=%(r)s|m=%(m)s|U=%(U)s|q=%(q)s|H=%(H)s|s=%(s)s|b=%(b)s"
        "|D=%(D)s|M=%(M)s|T=%(T)s|p=%(p)s|hdr=%({x-test}i)s"
    )
    srv = server("--access-log-format", fmt, APP)
    pid = int(srv.get("/pid").text)
    r = srv.post("/created?a=1&b=2", content=b"ignored", headers={"X-Test": "hdr-value"})
    assert r.status_code == 201
    line = srv.wait_for_line(r"^h=.*\|U=/created\|", stream="stdout").string
    fields = dict(part.split("=", 1) for part in line.split("|"))
    assert fields["h"] == "127.0.0.1"
    assert fields["t"].strip()
    assert fields["r"] == "POST /created?a=1&b=2 HTTP/1.1"
    assert fields["m"] == "POST"
    assert fields["U"] == "/created"
    assert fields["q"] == "a=1&b=2"
    assert fields["H"] == "HTTP/1.1"
    assert fields["s"] == "201"
    assert fields["b"] == str(len(b"created!"))
    assert fields["D"].isdigit()
    assert fields["M"].isdigit()
    assert int(fields["D"]) >= int(fields["M"])
    assert float(fields["T"]) >= 0
    assert fields["p"] == str(pid)
    assert fields["hdr"] == "hdr-value"


def test_no_access_log(server):
    srv = server("--no-access-log", APP)
    for _ in range(3):
        assert srv.get("/no-log").status_code == 200
    assert srv.stop() == 0  # flushes everything the processes printed
    assert not any("/no-log" in line for line in srv.lines())


def test_wsgi_errors_are_logged_as_errors(server):
    srv = server(APP)
    assert srv.get("/errors").text == "logged"
    line = srv.wait_for_line(r"gm-wsgi-errors-message", stream="stderr").string
    assert re.match(r"\[[^\]]+\] \[\d+\] \[ERROR\] ", line), line


def test_log_level_warning_hides_info(server):
    port = free_port()
    srv = server("--log-level", "warning", "--port", str(port), APP, expect_ready=False)

    def up():
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
        except httpx.TransportError:
            assert srv.proc.poll() is None, srv.output()
            return False

    wait_until(up, 30, interval=0.05, message="the server to answer")
    assert srv.stop() == 0
    assert not any("[INFO]" in line for line in srv.stderr_lines()), srv.output()


CUSTOM_JSON = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "custom": {"format": "CUSTOM|%(levelname)s|%(message)s"},
        "access": {"format": "ACCESS|%(message)s"},
    },
    "handlers": {
        "err": {
            "class": "logging.StreamHandler",
            "formatter": "custom",
            "stream": "ext://sys.stderr",
        },
        "acc": {
            "class": "logging.StreamHandler",
            "formatter": "access",
            "stream": "ext://sys.stdout",
        },
    },
    "loggers": {
        "gristmill.error": {"level": "INFO", "handlers": ["err"], "propagate": False},
        "gristmill.access": {"level": "INFO", "handlers": ["acc"], "propagate": False},
    },
}

CUSTOM_TOML = """
version = 1
disable_existing_loggers = false

[formatters.custom]
format = "CUSTOM|%(levelname)s|%(message)s"

[formatters.access]
format = "ACCESS|%(message)s"

[handlers.err]
class = "logging.StreamHandler"
formatter = "custom"
stream = "ext://sys.stderr"

[handlers.acc]
class = "logging.StreamHandler"
formatter = "access"
stream = "ext://sys.stdout"

[loggers."gristmill.error"]
level = "INFO"
handlers = ["err"]
propagate = false

[loggers."gristmill.access"]
level = "INFO"
handlers = ["acc"]
propagate = false
"""


@pytest.mark.parametrize("kind", ["json", "toml", "yaml"])
def test_log_config_changes_the_format(server, tmp_path, kind):
    if kind == "json":
        text = json.dumps(CUSTOM_JSON)
    elif kind == "toml":
        text = CUSTOM_TOML
    else:
        yaml = pytest.importorskip("yaml")
        text = yaml.safe_dump(CUSTOM_JSON)
    path = tmp_path / f"logging.{kind}"
    path.write_text(text)
    srv = server("--log-config", str(path), APP)
    assert re.fullmatch(
        r"CUSTOM\|INFO\|Listening on http://127\.0\.0\.1:\d+ \(1 worker\)", srv.ready_line
    ), srv.ready_line
    srv.get("/path?q=1")
    line = srv.wait_for_line(r"^ACCESS\|", stream="stdout").string
    assert '"GET /path?q=1 HTTP/1.1" 200' in line
    assert srv.stop(signal.SIGTERM) == 0
    assert any(line == "CUSTOM|INFO|Shutdown complete" for line in srv.stderr_lines())


def test_invalid_log_config_is_a_config_error(gristmill_exit, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    code, out = gristmill_exit(["--log-config", str(path), APP])
    assert code == 2, out
    assert "bad.json" in out


# --- the access log's direct path (default configuration shape) ------------------------
def _access_logger_with(handler: logging.Handler, propagate: bool = False) -> None:
    logger = logging.getLogger(gm_logging.ACCESS_LOGGER)
    logger.handlers[:] = [handler]
    logger.propagate = propagate


@pytest.fixture
def access_logger():
    logger = logging.getLogger(gm_logging.ACCESS_LOGGER)
    saved = (logger.handlers[:], logger.propagate, logger.filters[:])
    yield logger
    logger.handlers[:], logger.propagate, logger.filters[:] = saved


def _stream_handler(fmt: str | None = "%(message)s", cls=logging.StreamHandler):
    h = cls(sys.stdout)
    if fmt is not None:
        h.setFormatter(logging.Formatter(fmt))
    return h


class _SubHandler(logging.StreamHandler):
    pass


def test_access_log_fd_for_the_default_shape(access_logger):
    _access_logger_with(_stream_handler())
    assert gm_logging.access_log_fd() == sys.stdout.fileno()
    _access_logger_with(_stream_handler(fmt=None))  # no formatter: the message alone
    assert gm_logging.access_log_fd() == sys.stdout.fileno()


@pytest.mark.parametrize(
    "change",
    ["other-format", "subclass", "propagates", "handler-filter", "logger-filter", "no-fd"],
)
def test_access_log_goes_through_logging_otherwise(access_logger, change):
    handler = _stream_handler(
        "ACCESS|%(message)s" if change == "other-format" else "%(message)s",
        _SubHandler if change == "subclass" else logging.StreamHandler,
    )
    if change == "no-fd":
        handler.setStream(io.StringIO())
    if change == "handler-filter":
        handler.addFilter(lambda r: True)
    _access_logger_with(handler, propagate=change == "propagates")
    if change == "logger-filter":
        access_logger.addFilter(lambda r: True)
    assert gm_logging.access_log_fd() is None


def test_access_lines_from_two_workers_are_whole_and_complete(server):
    srv = server(APP, "--workers", "2", "--log-level", "debug")
    srv.wait_for_line(r"access lines are written to fd 1 directly")
    mark = srv.mark()
    n = 400
    with httpx.Client(base_url=srv.url, limits=httpx.Limits(max_connections=8)) as client:
        for i in range(n):
            assert client.get(f"/line/{i}").status_code == 200
    # Batched lines still arrive promptly without further traffic, and each is whole.
    wait_until(lambda: len(srv.stdout_lines(mark)) >= n, 10, message=f"{n} access lines")
    lines = srv.stdout_lines(mark)
    pattern = re.compile(r'^127\.0\.0\.1 - "GET /line/(\d+) HTTP/1\.1" 200 5 \d+ms$')
    seen = sorted(int(m.group(1)) for m in map(pattern.match, lines) if m)
    assert seen == list(range(n)), [line for line in lines if not pattern.match(line)][:5]


#: Every execution mode: SIGUSR1 reaches a worker's core the same way in each, but the
#: thread that then takes the GIL competes with a different serving thread.
REOPEN_MODES = every_mode(APP, "asgi_http_app:app")


@pytest.mark.parametrize("mode", list(REOPEN_MODES))
def test_sigusr1_reopens_log_files_after_logrotate(server, tmp_path, mode):
    """logrotate moves the file away and sends SIGUSR1 (its postrotate): the supervisor
    and every worker reopen their log files, so new lines go to the new file and none
    to the moved one, while the server keeps serving."""
    args, env = REOPEN_MODES[mode]
    logfile = tmp_path / "gristmill.log"
    config = {
        "version": 1,
        "formatters": {"f": {"format": "%(process)d|%(name)s|%(message)s"}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": str(logfile), "formatter": "f"},
            "err": {"class": "logging.StreamHandler", "formatter": "f"},
        },
        "loggers": {
            "gristmill.error": {"level": "INFO", "handlers": ["file", "err"], "propagate": False},
            "gristmill.access": {"level": "INFO", "handlers": ["file"], "propagate": False},
        },
    }
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    srv = server(*args, "--workers", "2", "--log-config", str(path), env=env)
    workers = srv.worker_pids()

    def served(marker: str, text: str) -> set[int]:
        return {
            int(line.split("|")[0])
            for line in text.splitlines()
            if "gristmill.access" in line and marker in line
        }

    # Before the rotation: requests until both workers have logged one.
    with httpx.Client(timeout=10) as client:

        def hit(marker: str, file) -> bool:
            client.get(f"{srv.url}/path?q={marker}", headers={"Connection": "close"})
            return served(marker, file.read_text() if file.exists() else "") == workers

        wait_until(lambda: hit("before", logfile), 20, message="both workers logged")
        rotated = tmp_path / "gristmill.log.1"
        logfile.rename(rotated)
        mark = srv.mark()
        srv.send_signal(signal.SIGUSR1)
        srv.wait_for_line(r"\|Reopened 1 log file \(SIGUSR1\)", start=mark)
        for pid in workers:
            srv.wait_for_line(rf"^{pid}\|gristmill.error\|Worker reopened 1 log file", start=mark)
        wait_until(lambda: hit("after", logfile), 20, message="both workers logged anew")
    assert "q=after" not in rotated.read_text()
    assert "Reopened 1 log file (SIGUSR1)" in logfile.read_text()
    assert srv.worker_pids() == workers
