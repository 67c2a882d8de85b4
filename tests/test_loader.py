"""App loading: every target form, the clean argv, app arguments and load errors."""

from __future__ import annotations

import functools
import inspect
import os
import shutil
import time

import pytest

from _support import APPS_DIR, group_members, wait_until
from gristmill import loader
from gristmill.errors import ConfigError
from gristmill.loader import apply_env_files, read_dotenv

ACCESS_FORMAT = "%(h)s %(m)s %(U)s %(s)s"


# --- target forms ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "name", "argv0"),
    [
        ("targets:custom", "custom", "targets"),
        ("targets", "application", "targets"),  # `application` wins over `app`
        ("app_only", "app-only", None),  # falls back to `app`
        ("targets:holder.inner.wsgi", "dotted", "targets"),  # dotted attribute
        ("targets.py", "application", "targets.py"),
        ("targets.py:custom", "custom", "targets.py"),
        ("./targets.py:app", "app", "./targets.py"),
        ("site.wsgi", "site.wsgi", "site.wsgi"),  # any extension
    ],
)
def test_target_forms(server, target, name, argv0):
    srv = server(target)
    r = srv.get("/")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["name"] == name
    if argv0 is not None:
        assert data["argv"] == [argv0]


def test_module_target_is_imported_as_a_normal_module(server):
    data = server("targets:custom").get("/").json()
    assert data["module"] == "targets"
    assert data["file"] == str(APPS_DIR / "targets.py")


def test_file_target_is_not_main(server):
    data = server("targets.py:custom").get("/").json()
    assert data["module"] != "__main__"
    assert os.path.samefile(data["file"], APPS_DIR / "targets.py")


def test_absolute_file_path_from_another_directory(server, tmp_path):
    target = str(APPS_DIR / "targets.py") + ":custom"
    data = server(target, cwd=tmp_path).get("/").json()
    assert data["name"] == "custom"
    assert data["argv"] == [str(APPS_DIR / "targets.py")]


def test_file_target_folder_is_on_sys_path(server, tmp_path):
    """A script in another folder can import its siblings (its folder is on sys.path)."""
    data = server(str(APPS_DIR / "sub" / "nested_app.py"), cwd=tmp_path).get("/").json()
    assert data["name"] == "nested"
    assert data["helper"] == "sibling-import-works"


@pytest.mark.parametrize("form", ["parens", "flag"])
def test_factory(server, form):
    args = ["targets:create_app()"] if form == "parens" else ["--factory", "targets:create_app"]
    srv = server(*args)
    for _ in range(3):
        r = srv.get("/")
        assert r.status_code == 200
        # called exactly once per worker, before traffic
        assert r.json()["name"] == "factory-1"


def test_working_dir(server, tmp_path):
    srv = server("--working-dir", str(APPS_DIR), "targets:custom", cwd=tmp_path)
    data = srv.get("/").json()
    assert data["name"] == "custom"
    assert os.path.samefile(data["cwd"], APPS_DIR)


def test_env_files(server, tmp_path):
    first = tmp_path / "first.env"
    first.write_text(
        "# a comment\n"
        "GM_TEST_A=from-first\n"
        "GM_TEST_B='quoted value'\n"
        "export GM_TEST_C=exported\n"
        "GM_TEST_KEEP=from-file\n"
    )
    second = tmp_path / "second.env"
    second.write_text('GM_TEST_A="from-second"\n')
    srv = server(
        "--env-file",
        str(first),
        "--env-file",
        str(second),
        "targets:custom",
        env={"GM_TEST_KEEP": "from-process"},
    )
    env = srv.get("/").json()["env"]
    assert env["GM_TEST_A"] == "from-second"  # later files win
    assert env["GM_TEST_B"] == "quoted value"
    assert env["GM_TEST_C"] == "exported"
    assert env["GM_TEST_KEEP"] == "from-process"  # variables already set are kept


def test_bad_env_file_is_a_config_error(gristmill_exit, tmp_path):
    path = tmp_path / "bad.env"
    path.write_text("GM_TEST_OK=1\nGM_TEST_BAD='unterminated\n")
    code, out = gristmill_exit(["--env-file", str(path), "targets:custom"])
    assert code == 2, out
    assert f"{path}:2: cannot parse" in out


# The env files are read by python-dotenv, as uvicorn's are; these pin what gristmill
# relies on (and the parser API loader.read_dotenv uses).
def test_dotenv_syntax():
    text = (
        "# a comment\n"
        "PLAIN=value # trailing comment\n"
        "HASH=a#b\n"
        "export EXPORTED=yes\n"
        "SINGLE='lit\\n ${PLAIN} $PLAIN'\n"
        'DOUBLE="tab\\there\\nnewline"\n'
        'MULTI="one\ntwo"\n'
        "EMPTY=\n"
        "NAME_ONLY\n"
    )
    assert read_dotenv(text) == {
        "PLAIN": "value",
        "HASH": "a#b",
        "EXPORTED": "yes",
        # Single quotes keep backslashes; ${NAME} expands in every value (python-dotenv),
        # $NAME without braces never does.
        "SINGLE": "lit\\n value $PLAIN",
        "DOUBLE": "tab\there\nnewline",
        "MULTI": "one\ntwo",
        "EMPTY": "",
    }  # a name without `=` sets nothing


def test_dotenv_expansion_sees_the_value_in_force(monkeypatch, tmp_path):
    monkeypatch.setenv("GM_TEST_HOME", "/from-process")
    monkeypatch.delenv("GM_TEST_UNSET", raising=False)
    text = (
        "GM_TEST_HOME=/from-file\n"
        "GM_TEST_BASE=/base\n"
        "GM_TEST_DATA=${GM_TEST_HOME}/data\n"  # the process's value, which is kept
        "GM_TEST_LOGS=${GM_TEST_BASE}/logs\n"  # a line above
        "GM_TEST_DEFAULT=${GM_TEST_UNSET:-fallback}\n"
    )
    path = tmp_path / "x.env"
    path.write_text(text)
    env = {"GM_TEST_HOME": "/from-process"}
    apply_env_files([str(path)], env)
    assert env == {
        "GM_TEST_HOME": "/from-process",
        "GM_TEST_BASE": "/base",
        "GM_TEST_DATA": "/from-process/data",
        "GM_TEST_LOGS": "/base/logs",
        "GM_TEST_DEFAULT": "fallback",
    }


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("A=1\nB='open\n", 2),
        ('A="closed" trailing\n', 1),
        ("not a binding at all\n", 1),
    ],
)
def test_dotenv_errors_name_the_line(text, line):
    with pytest.raises(ConfigError, match=rf"^x\.env:{line}: cannot parse "):
        read_dotenv(text, "x.env")


def test_unreadable_env_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read env file .*missing.env"):
        apply_env_files([str(tmp_path / "missing.env")], {})


# --- the case that started the project ----------------------------------------------------
KEYSTONE = "keystone-wsgi-public"


def test_pbr_script_served_with_many_server_flags(server, tmp_path):
    marker = tmp_path / "main-ran"
    srv = server(
        "--workers",
        "2",
        "--threads",
        "4",
        "--backlog",
        "100",
        "--keepalive-timeout",
        "3",
        "--header-read-timeout",
        "5",
        "--max-body-size",
        "1000000",
        "--max-header-size",
        "32768",
        "--max-headers",
        "50",
        "--max-connections",
        "100",
        "--graceful-timeout",
        "5",
        "--log-level",
        "debug",
        "--access-log-format",
        ACCESS_FORMAT,
        "--no-server-header",
        "--interface",
        "wsgi",
        "--pid-file",
        str(tmp_path / "pid"),
        KEYSTONE,
        env={"GM_TEST_MAIN_MARKER": str(marker)},
    )
    assert srv.workers == 2
    pids = set()
    for _ in range(4):
        r = srv.get("/v3")
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["argv"] == [KEYSTONE]  # exactly the target as given
        assert data["prog"] == KEYSTONE
        assert data["debug"] is False and data["config_file"] == []
        assert data["module"] != "__main__"
        assert os.path.samefile(data["file"], APPS_DIR / KEYSTONE)
        pids.add(data["pid"])
    assert not marker.exists(), "the script's __main__ branch ran"
    # the access log format given on the command line is in force
    srv.wait_for_line(r"^127\.0\.0\.1 GET /v3 200$", stream="stdout")


def test_pbr_script_by_absolute_path(server, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / KEYSTONE
    shutil.copy(APPS_DIR / KEYSTONE, script)
    srv = server("--workers", "1", "--log-level", "debug", str(script), cwd=tmp_path)
    data = srv.get("/").json()
    assert data["argv"] == [str(script)]


@pytest.mark.parametrize("style", ["app-arg", "dashdash"])
def test_app_args_reach_the_app(server, style):
    if style == "app-arg":
        args = [
            "--workers",
            "1",
            "--app-arg=--debug",
            "--app-arg=--config-file",
            "--app-arg=x.conf",
            KEYSTONE,
        ]
    else:
        args = ["--workers", "1", KEYSTONE, "--", "--debug", "--config-file", "x.conf"]
    data = server(*args).get("/").json()
    assert data["argv"] == [KEYSTONE, "--debug", "--config-file", "x.conf"]
    assert data["debug"] is True
    assert data["config_file"] == ["x.conf"]


def test_app_arg_separate_value_form(server):
    data = server("--app-arg", "--debug", KEYSTONE).get("/").json()
    assert data["argv"] == [KEYSTONE, "--debug"]


def test_clean_argv_for_module_target(server):
    srv = server("--threads", "2", "--keepalive-timeout", "2", "targets:custom")
    assert srv.get("/").json()["argv"] == ["targets"]


def test_app_arg_rejected_by_app_is_a_load_error(gristmill_exit):
    code, out = gristmill_exit(["--app-arg=--bogus", KEYSTONE], timeout=15)
    assert code != 0
    assert "unrecognized arguments: --bogus" in out
    assert KEYSTONE in out


# --- load errors -------------------------------------------------------------------------
def _assert_load_error(code: int, out: str, *needles: str) -> None:
    assert code == 3, f"exit code {code}, output:\n{out}"
    for needle in needles:
        assert needle in out, f"{needle!r} not in output:\n{out}"


def test_import_error_inside_module(gristmill_exit):
    code, out = gristmill_exit(["broken_import:application"])
    _assert_load_error(code, out, "broken_import", "Traceback", "gm_this_module_does_not_exist")


def test_exception_at_import(gristmill_exit):
    code, out = gristmill_exit(["raising_import.py"])
    _assert_load_error(code, out, "raising_import", "Traceback", "gm-kaboom-at-import")


def test_missing_module(gristmill_exit):
    code, out = gristmill_exit(["gm_no_such_module:app"])
    _assert_load_error(code, out, "gm_no_such_module")


def test_missing_attribute(gristmill_exit):
    code, out = gristmill_exit(["targets:gm_nope"])
    _assert_load_error(code, out, "targets", "gm_nope")


def test_module_without_default_attribute(gristmill_exit):
    code, out = gristmill_exit(["no_default"])
    _assert_load_error(code, out, "no_default", "application")


def test_not_callable(gristmill_exit):
    code, out = gristmill_exit(["targets:not_callable"])
    _assert_load_error(code, out, "targets:not_callable", "callable")


def test_missing_file(gristmill_exit, tmp_path):
    path = str(tmp_path / "gm_missing_app.py")
    code, out = gristmill_exit([path])
    _assert_load_error(code, out, "gm_missing_app.py")


@pytest.mark.parametrize("target", ["asgi_app:app", "asgi_app:instance", "asgi_app:Asgi2"])
def test_asgi_app_detected_and_served(server, target):
    resp = server(target).get("/")
    assert resp.status_code == 200
    assert resp.text == "asgi"


def test_wsgi_app_forced_to_asgi_is_a_load_error(gristmill_exit):
    code, out = gristmill_exit(["--interface", "asgi", "targets:application"])
    _assert_load_error(code, out, "targets:application", "neither an ASGI 3 application")


def test_load_error_with_several_workers_does_not_loop(gristmill_exit):
    start = time.monotonic()
    code, out = gristmill_exit(["--workers", "2", "raising_import.py"], timeout=15)
    assert code == 3, out
    assert time.monotonic() - start < 10
    # each worker may report it once; a respawn loop would print it again and again
    assert out.count("gm-kaboom-at-import") <= 4, out


def test_load_error_leaves_no_process_behind(server):
    srv = server("--workers", "2", "raising_import.py", expect_ready=False)
    code = srv.proc.wait(15)  # a TimeoutExpired fails the test; teardown kills the group
    srv.join_output(5)
    assert code == 3, srv.output()
    wait_until(lambda: not group_members(srv.pgid), 5, message="workers to exit")


# --- the supervisor's look-up before it forks ----------------------------------------------
FIND_PROBE = """
import os, sys
from gristmill.loader import find_top_module
sys.path_importer_cache.clear()
find_top_module(sys.argv[1])
print(sorted(m for m in sys.modules if m.startswith("findme")))
finder = sys.path_importer_cache.get(os.getcwd())
print("findme" in getattr(finder, "_path_cache", ()))
"""


@pytest.mark.timeout(30)
@pytest.mark.parametrize("target", ["findme.sub:app", "findme", "./findme/sub.py:app"])
def test_finding_the_top_module_imports_nothing(tmp_path, target):
    """``loader.find_top_module`` (the supervisor, before its first fork) fills the import
    system's caches for the target's folder and runs none of the application's code: a
    package whose import writes a file is found, not imported."""
    import subprocess
    import sys

    pkg = tmp_path / "findme"
    pkg.mkdir()
    marker = tmp_path / "imported"
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (pkg / "sub.py").write_text(f"open({str(marker)!r}, 'w').close()\napp = None\n")
    out = subprocess.run(
        [sys.executable, "-c", FIND_PROBE, target],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout.split("\n")
    assert not marker.exists()
    assert out[0] == "[]", out
    # A module target's folder is listed, and the listing cached; a file needs no finder.
    assert out[1] == str(not target.startswith("./")), out


# --- the interface guess without inspect.signature ------------------------------------


def _wsgi(environ, start_response): ...


def _one(scope): ...


def _one_with_default(scope, extra=None): ...


def _keyword_only(scope, *, extra): ...


def _star(*args): ...


def _one_and_star(scope, *rest): ...


def _posonly(scope, /): ...


class _Call:
    def __call__(self, environ, start_response): ...

    def method(self, scope): ...

    @staticmethod
    def static(scope): ...

    @classmethod
    def klass(cls, scope): ...


class _CallOne:
    def __call__(self, scope): ...


class _CallStar:
    def __call__(*args): ...


class _Resigned(_CallOne):
    __signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_ONLY) for n in ("a", "b")]
    )


@functools.wraps(_wsgi)
def _wrapper(scope): ...


def _inspect_answer(app):
    """What ``_looks_asgi2`` said before the shortcut (its ``inspect.signature`` path)."""
    params = inspect.signature(app).parameters.values()
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) == 1 and not any(p.kind is p.VAR_POSITIONAL for p in params)


QUICK = [
    _wsgi, _one, _one_with_default, _keyword_only, _star, _one_and_star, _posonly,
    lambda scope: None, lambda environ, start_response: None,
    _Call(), _Call().method, _Call.static, _Call().klass, _CallOne(), _CallOne().__call__,
]  # fmt: skip
SLOW = [_CallStar(), _Resigned(), _wrapper, functools.partial(_wsgi, {}), sorted, len]


@pytest.mark.parametrize("app", QUICK + SLOW, ids=lambda a: getattr(a, "__name__", repr(a)))
def test_interface_guess_reads_code_objects_like_inspect(app):
    """``loader._one_required_positional`` answers plain functions, methods and callable
    instances from their code object, exactly as ``inspect.signature`` would, and leaves
    anything re-signed, wrapped, partial or builtin to ``inspect.signature``."""
    quick = loader._one_required_positional(app)
    if app in SLOW:
        assert quick is None
    else:
        assert quick is not None
        assert quick == _inspect_answer(app)
    assert loader._looks_asgi2(app) == _inspect_answer(app)
