"""--reload: a real edit to the application's file restarts the workers (new ones first,
as on SIGHUP); an edit that breaks the import keeps the old workers serving and logs the
traceback; the next good edit recovers. Files the patterns exclude change nothing."""

from __future__ import annotations

import os
import threading

import httpx
import pytest

from _support import wait_until

pytest.importorskip("watchfiles")

WSGI = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"VERSION"]
"""

ASGI = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"VERSION"})
"""


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_reload_follows_edits_and_survives_a_broken_one(server, tmp_path, kind):
    source = WSGI if kind == "wsgi" else ASGI
    target = "site_app:application" if kind == "wsgi" else "site_app:app"
    module = tmp_path / "site_app.py"
    module.write_text(source.replace("VERSION", "v1"))
    (tmp_path / "notes.txt").write_text("not code")
    srv = server(target, "--reload", "--workers", "2", cwd=tmp_path)
    srv.wait_for_line(rf"Watching {tmp_path} for changes to \*\.py")
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    client.get(srv.url + "/").raise_for_status()
                except httpx.HTTPError as e:
                    failures.append(repr(e))

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:

        def serves(version: str) -> bool:
            return httpx.get(srv.url + "/", timeout=10).text == version

        assert serves("v1")
        mark = srv.mark()
        (tmp_path / "notes.txt").write_text("still not code")
        module.write_text(source.replace("VERSION", "v2"))
        wait_until(lambda: serves("v2"), 20, message="the edit served")
        srv.wait_for_line("Reload complete", start=mark)
        assert not any("notes.txt" in line for line in srv.lines(mark))

        mark = srv.mark()
        module.write_text(source.replace("VERSION", "v3") + "\ndef (\n")
        srv.wait_for_line("Reload failed: .*keeping the old workers", timeout=20, start=mark)
        assert any("SyntaxError" in line for line in srv.lines(mark))
        assert serves("v2")

        mark = srv.mark()
        module.write_text(source.replace("VERSION", "v4"))
        wait_until(lambda: serves("v4"), 20, message="the fix served")
        srv.wait_for_line("Reload complete", start=mark)
    finally:
        stop.set()
        loader.join(15)
    assert not failures, failures[:3]


def test_reload_without_watchfiles_is_a_config_error(gristmill_exit, tmp_path):
    """Without the extra, --reload says what to install (exit code 2)."""
    blocker = tmp_path / "watchfiles.py"
    blocker.write_text("raise ImportError('blocked for the test')\n")
    code, out = gristmill_exit(
        ["http_app:application", "--reload"], env={"PYTHONPATH": str(tmp_path)}
    )
    assert code == 2, out
    assert "--reload needs watchfiles: pip install 'gristmill[reload]'" in out


@pytest.mark.parametrize(
    ("path", "wanted"),
    [
        ("/srv/app/views.py", True),
        ("/srv/app/templates/page.html", False),  # not included
        ("/srv/app/__pycache__/views.cpython-312.pyc", False),
        ("/srv/app/__pycache__/views.py", False),  # an always-ignored folder
        ("/srv/app/.git/hooks/x.py", False),
        ("/srv/app/migrations/0001_initial.py", False),  # an excluded folder
        ("/srv/app/local_settings.py", False),  # an excluded file
        ("/srv/app/./sub//models.py", True),  # not normalised by the watcher
        ("views.py", True),
    ],
)
def test_which_changes_call_for_a_restart(tmp_path, path, wanted):
    """``Reloader.wants``: the file name matches an include pattern, and neither it nor a
    folder above it matches an exclude pattern or is one never watched."""
    from gristmill.reloader import Reloader
    from gristmill.settings import Settings

    settings = Settings(
        reload_dir=[str(tmp_path)],
        reload_include=["*.py"],
        reload_exclude=["migrations", "local_*"],
    )
    reloader = Reloader(settings)
    try:
        assert reloader.wants(path) is wanted
    finally:
        for fd in reloader.pipe_fds():  # never started: no thread to stop
            os.close(fd)
