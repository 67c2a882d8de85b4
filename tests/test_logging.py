"""Logging: the default error-log format, access log lines and atoms, --log-config."""

from __future__ import annotations

import json
import re
import signal

import httpx
import pytest

from _support import free_port, wait_until

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
