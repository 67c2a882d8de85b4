"""Settings: one schema → CLI flags and GRISTMILL_* env vars, config file, precedence, errors.

Unit tests of ``gristmill.settings`` plus end-to-end checks of ``python -m gristmill``.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess

import pytest

import gristmill.settings as settings_mod
from _support import base_env, gristmill_cmd
from gristmill.errors import ConfigError

Settings = settings_mod.Settings
APP = "http_app:application"


def from_sources(cli=None, environ=None):
    return settings_mod.from_sources(dict(cli or {}), dict(environ or {}))


# --- schema -------------------------------------------------------------------------------
def test_flags_and_env_names_derive_from_field_names():
    infos = {i.name: i for i in settings_mod.schema()}
    assert set(infos) == {f.name for f in dataclasses.fields(Settings)}
    for name, info in infos.items():
        assert info.env == "GRISTMILL_" + name.upper()
        if name == "app_args":
            assert info.flag == "--app-arg"
        elif not info.positional:
            assert info.flag == "--" + name.replace("_", "-")


def test_every_setting_documents_its_default():
    for info in settings_mod.schema():
        if info.positional:
            continue
        assert re.search(r"Default is .+\.$", info.help), (info.name, info.help)


@pytest.mark.parametrize(
    ("value", "metavar", "words"),
    [
        (None, None, "none"),
        ([], None, "none"),
        (True, None, "on"),
        (False, None, "off"),
        ("", None, "empty"),
        ("auto", None, "`auto`"),
        (20.0, "SECONDS", "20 seconds"),
        (1.0, "SECONDS", "1 second"),
        (2.5, "SECONDS", "2.5 seconds"),
        (2048, None, "2048"),
        (65536, "BYTES", "65536 (64 KiB)"),
        (16 * 1024 * 1024, "BYTES", "16777216 (16 MiB)"),
        (1 << 30, "BYTES", "1073741824 (1 GiB)"),
        (1000, "BYTES", "1000"),
    ],
)
def test_describe_default(value, metavar, words):
    assert settings_mod.describe_default(value, metavar) == words


def test_default_is_stated_once():
    # `_setting` appends "Default is X." from the value; a help text that states it too
    # would say it twice (and could drift from the value).
    for info in settings_mod.schema():
        assert info.help.count("Default is") == (0 if info.positional else 1), info.name


def test_defaults():
    s = from_sources()
    assert (s.host, s.port, s.workers, s.threads) == ("127.0.0.1", 8000, 1, 1)
    assert s.access_log is True and s.server_header is True
    assert s.app_args == []


def test_help_lists_every_flag():
    out = subprocess.run(
        gristmill_cmd(["--help"]), capture_output=True, text=True, env=base_env(), timeout=30
    )
    assert out.returncode == 0, out.stderr
    for info in settings_mod.schema():
        if info.positional:
            continue
        assert info.flag in out.stdout, info.flag
        if info.negatable:
            assert "--no-" + info.flag[2:] in out.stdout


# --- env vars -----------------------------------------------------------------------------
def test_env_vars_are_parsed_by_type():
    s = from_sources(
        environ={
            "GRISTMILL_WORKERS": "3",
            "GRISTMILL_KEEPALIVE_TIMEOUT": "2.5",
            "GRISTMILL_ACCESS_LOG": "false",
            "GRISTMILL_SERVER_HEADER": "0",
            "GRISTMILL_LOG_LEVEL": "debug",
            "GRISTMILL_ROOT_PATH": "/app",
            "GRISTMILL_APP_ARGS": "--debug:--verbose",
            "GRISTMILL_MAX_REQUESTS": "1000",
            "GRISTMILL_WORKER_LIFETIME": "3600",
            "GRISTMILL_WORKER_MAX_RSS": "512",
            "GRISTMILL_UNRELATED": "x",
        }
    )
    assert (s.max_requests, s.worker_lifetime, s.worker_max_rss) == (1000, 3600.0, 512)
    assert s.workers == 3
    assert s.keepalive_timeout == 2.5
    assert s.access_log is False and s.server_header is False
    assert s.log_level == "debug"
    assert s.root_path == "/app"
    assert s.app_args == ["--debug", "--verbose"]


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("GRISTMILL_WORKERS", "many"),
        ("GRISTMILL_ACCESS_LOG", "maybe"),
        ("GRISTMILL_LOG_LEVEL", "loud"),
        ("GRISTMILL_KEEPALIVE_TIMEOUT", "soon"),
    ],
)
def test_invalid_env_values(var, value):
    with pytest.raises(ConfigError, match=var.removeprefix("GRISTMILL_").lower()):
        from_sources(environ={var: value})


# --- config file and precedence -----------------------------------------------------------
def test_precedence_cli_over_env_over_config_over_default(tmp_path):
    cfg = tmp_path / "gristmill.toml"
    cfg.write_text('workers = 4\nthreads = 3\nkeepalive-timeout = 7\nlog_level = "warning"\n')
    env = {"GRISTMILL_CONFIG": str(cfg), "GRISTMILL_WORKERS": "3", "GRISTMILL_THREADS": "2"}
    s = from_sources({"workers": 2}, env)
    assert s.workers == 2  # command line
    assert s.threads == 2  # env over config
    assert s.keepalive_timeout == 7.0  # config (int accepted for a float), dashes allowed
    assert s.log_level == "warning"
    assert s.max_headers == 100  # default


def test_pyproject_style_tool_table(tmp_path):
    cfg = tmp_path / "pyproject.toml"
    cfg.write_text(
        '[project]\nname = "x"\n\n[tool.gristmill]\nworkers = 5\napp-args = ["--debug"]\n'
    )
    s = from_sources({"config": str(cfg)})
    assert s.workers == 5
    assert s.app_args == ["--debug"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("no_such_setting = 1\n", "unknown setting"),
        ('workers = "two"\n', "workers"),
        ("workers = true\n", "workers"),
        ("workers = [\n", "invalid TOML"),
        ('interface = "cgi"\n', "interface"),
    ],
)
def test_config_file_errors(tmp_path, text, match):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=match):
        from_sources({"config": str(cfg)})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        from_sources({"config": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("cli", "match"),
    [
        ({"workers": 0}, "workers"),
        ({"threads": 0}, "threads"),
        ({"port": 70000}, "port"),
        ({"keepalive_timeout": 0.0}, "keepalive_timeout"),
        ({"ws_send_timeout": 0.0}, "ws_send_timeout"),
        ({"keepalive_timeout": float("nan")}, "keepalive_timeout"),
        ({"graceful_timeout": float("inf")}, "graceful_timeout"),
        ({"http2_keep_alive_interval": float("nan")}, "http2_keep_alive_interval"),
        ({"ws_max_size": 0}, "ws_max_size"),
        ({"max_body_size": -1}, "max_body"),
        ({"max_header_size": 100}, "max_header_size"),
        ({"root_path": "app"}, "root_path"),
        ({"root_path": "/app/"}, "root_path"),
        ({"max_requests": -1}, "max_requests"),
        ({"max_requests_jitter": -1}, "max_requests_jitter"),
        ({"worker_max_rss": -1}, "worker_max_rss"),
        ({"worker_lifetime": -1.0}, "worker_lifetime"),
        ({"worker_lifetime": float("nan")}, "worker_lifetime"),
        ({"worker_lifetime_jitter": float("inf")}, "worker_lifetime_jitter"),
    ],
)
def test_validation(cli, match):
    with pytest.raises(ConfigError, match=match):
        from_sources(cli)


# --- end to end ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--no-such-flag", APP], None),
        (["--workers", "0", APP], None),
        (["--workers", "abc", APP], None),
        (["--interface", "cgi", APP], None),
        ([], None),  # no target
        ([APP], {"GRISTMILL_WORKERS": "abc"}),
        (["--config", "/nonexistent/gm.toml", APP], None),
    ],
)
def test_usage_errors_exit_2(gristmill_exit, args, env):
    code, out = gristmill_exit(args, env=env)
    assert code == 2, out
    assert out.strip()


def test_config_file_end_to_end(server, tmp_path):
    cfg = tmp_path / "gm.toml"
    cfg.write_text('workers = 3\naccess-log-format = "CFG %(s)s %(U)s"\n')
    srv = server("-c", str(cfg), "--workers", "2", APP, env={"GRISTMILL_WORKERS": "1"})
    assert srv.workers == 2  # flag over env over file
    srv.get("/from-config")
    srv.wait_for_line(r"^CFG 200 /from-config$", stream="stdout")


def test_env_vars_end_to_end(server):
    srv = server(
        APP,
        env={
            "GRISTMILL_WORKERS": "2",
            "GRISTMILL_NO_SUCH_VAR": "x",
            "GRISTMILL_SERVER_HEADER": "false",
        },
    )
    assert srv.workers == 2
    r = srv.get("/")
    assert "server" not in r.headers


def test_target_from_env(server):
    srv = server(env={"GRISTMILL_TARGET": APP})
    assert srv.get("/").text == "hello"


# --- execution mode -------------------------------------------------------------------------
Mode = settings_mod.ExecutionMode


@pytest.mark.parametrize(
    ("changes", "mode"),
    [
        ({"interface": "wsgi"}, Mode.WSGI_INLINE),
        ({"interface": "wsgi", "threads": 2}, Mode.WSGI_POOL),
        ({"interface": "wsgi", "runtime_threads": 2}, Mode.WSGI_POOL),
        ({"interface": "wsgi", "loop": "uvloop"}, Mode.WSGI_INLINE),
        ({"interface": "asgi"}, Mode.ASGI_DRIVEN),
        ({"interface": "asgi", "loop": "asyncio"}, Mode.ASGI_DRIVEN),
        ({"interface": "asgi", "threads": 4}, Mode.ASGI_DRIVEN),
        ({"interface": "asgi", "loop": "uvloop"}, Mode.ASGI_LOOP_THREAD),
        ({"interface": "asgi", "runtime_threads": 2}, Mode.ASGI_LOOP_THREAD),
    ],
)
def test_execution_mode_is_decided_from_the_settings(changes, mode):
    # The one place the worker and the core read it from (config.rs matches the values).
    assert Settings().replace(**changes).execution_mode is mode


def test_execution_mode_needs_a_resolved_interface():
    with pytest.raises(ValueError, match="resolved interface"):
        _ = Settings().execution_mode


def test_replace_is_a_copy_with_the_changes():
    """``Settings.replace`` (a cheap shallow copy, taken on every worker replacement)
    gives what ``dataclasses.replace`` gives, leaves the original alone, refuses unknown
    fields and keeps the copy frozen."""
    s = Settings(target="app:application", workers=3)
    t = s.replace(max_requests=500, interface="asgi")
    assert t == dataclasses.replace(s, max_requests=500, interface="asgi")
    assert (s.max_requests, s.interface, t.workers) == (0, "auto", 3)
    assert t.execution_mode.name == "ASGI_DRIVEN"
    with pytest.raises(TypeError, match="no field max_request"):
        s.replace(max_request=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.workers = 1  # type: ignore[misc]
