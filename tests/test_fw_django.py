"""A real Django 5 project (tests/apps/frameworks/djproject) served over WSGI
(``djproject.wsgi:application``, both WSGI modes) and ASGI (``djproject.asgi:application``,
both ASGI modes): admin login with CSRF and sessions on a sqlite database made by
``migrate`` and ``createsuperuser``, multipart uploads of 5 MiB with and without
``Expect: 100-continue`` (curl), ``StreamingHttpResponse``, an async view and static files
through whitenoise."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx
import pytest

from _frameworks import FRAMEWORKS_DIR, MIB, curl, random_file
from _support import WSGI_MODES, Server, base_env

PROJECT = FRAMEWORKS_DIR / "djproject"
PASSWORD = "gm-s3cret-pw"


@pytest.fixture(scope="session")
def django_env(tmp_path_factory) -> dict[str, str]:
    """A migrated sqlite database with a superuser, and the collected static files."""
    folder = tmp_path_factory.mktemp("django")
    env = {
        "DJANGO_SETTINGS_MODULE": "djproject.settings",
        "GM_DJANGO_DB": str(folder / "db.sqlite3"),
        "GM_DJANGO_STATIC": str(folder / "static"),
    }
    setup = (
        "import django; from django.core.management import call_command; django.setup(); "
        "call_command('migrate', interactive=False, verbosity=0); "
        "call_command('createsuperuser', interactive=False, username='admin', "
        "email='admin@example.com', verbosity=0); "
        "call_command('collectstatic', interactive=False, verbosity=0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", setup],
        cwd=PROJECT,
        env=base_env({**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return env


def start(django_env, target: str, *args: str) -> Server:
    srv = Server([target, *args], env=django_env, cwd=PROJECT)
    srv.wait_ready()
    return srv


class _Cases:
    """The checks, run by ``TestWsgi`` and ``TestAsgi`` against their ``srv``."""

    def test_home(self, srv):
        r = srv.get("/")
        assert r.status_code == 200
        assert r.text == "hello from django"

    def test_admin_login_with_csrf_and_session(self, srv):
        with httpx.Client(base_url=srv.url, timeout=20) as client:
            r = client.get("/admin/")
            assert r.status_code == 302
            assert r.headers["location"].startswith("/admin/login/")
            r = client.get("/admin/login/", params={"next": "/admin/"})
            assert r.status_code == 200
            assert "csrftoken" in client.cookies
            m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', r.text)
            assert m, r.text[:2000]
            form = {"username": "admin", "password": PASSWORD, "next": "/admin/"}
            # Without the token the CSRF middleware refuses the post.
            r = client.post("/admin/login/", data=form)
            assert r.status_code == 403
            assert "sessionid" not in client.cookies
            r = client.post("/admin/login/", data={**form, "csrfmiddlewaretoken": m.group(1)})
            assert r.status_code == 302, r.text[:2000]
            assert r.headers["location"] == "/admin/"
            assert "sessionid" in client.cookies
            r = client.get("/admin/")
            assert r.status_code == 200
            assert "Site administration" in r.text
            r = client.get("/admin/auth/user/")
            assert r.status_code == 200
            assert "admin@example.com" in r.text

    def test_admin_login_wrong_password(self, srv):
        with httpx.Client(base_url=srv.url, timeout=20) as client:
            r = client.get("/admin/login/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', r.text).group(1)
            r = client.post(
                "/admin/login/",
                data={"username": "admin", "password": "wrong", "csrfmiddlewaretoken": token},
            )
            assert r.status_code == 200
            assert "Please enter the correct username and password" in r.text
            assert "sessionid" not in client.cookies

    def test_multipart_upload_httpx(self, srv, tmp_path):
        path, digest = random_file(tmp_path, 5 * MIB)
        with httpx.Client(timeout=30) as client, path.open("rb") as f:
            r = client.post(
                f"{srv.url}/upload/",
                files={"file": ("payload.bin", f, "application/octet-stream")},
                data={"note": "httpx"},
            )
        assert r.status_code == 200, srv.output()[-3000:]
        assert r.json() == {
            "name": "payload.bin",
            "size": 5 * MIB,
            "sha256": digest,
            "note": "httpx",
        }

    @pytest.mark.parametrize("expect", [True, False], ids=["expect-100", "no-expect"])
    def test_multipart_upload_curl(self, srv, tmp_path, expect):
        path, digest = random_file(tmp_path, 5 * MIB)
        # curl sends Expect: 100-continue for a body this large; an empty header value
        # turns it off. -v shows the request headers and the interim response on stderr.
        extra = [] if expect else ["-H", "Expect:"]
        out = curl(
            "-v",
            "--expect100-timeout",
            "20",
            "-F",
            f"file=@{path}",
            "-F",
            "note=curl",
            *extra,
            "-w",
            "\n%{http_code}",
            f"{srv.url}/upload/",
        )
        assert out.returncode == 0, out.stderr.decode(errors="replace")
        trace = out.stderr.decode(errors="replace")
        body, _, status = out.stdout.decode().rpartition("\n")
        if expect:
            assert "> Expect: 100-continue" in trace
            assert "< HTTP/1.1 100 Continue" in trace
        else:
            assert "Expect: 100-continue" not in trace
        assert status == "200", srv.output()[-3000:]
        assert json.loads(body) == {
            "name": path.name,
            "size": 5 * MIB,
            "sha256": digest,
            "note": "curl",
        }

    def test_streaming_http_response(self, srv):
        with httpx.Client(timeout=20) as client:
            with client.stream("GET", f"{srv.url}/stream/", params={"n": "50"}) as r:
                assert r.status_code == 200
                assert r.headers["content-type"] == "text/plain"
                assert "content-length" not in r.headers
                assert r.headers["transfer-encoding"] == "chunked"
                body = r.read()
        assert body == b"".join(f"line {i}\n".encode() for i in range(50))

    def test_async_view(self, srv):
        r = srv.get("/async/", params={"q": "café"})
        assert r.status_code == 200
        assert r.json() == {"async": True, "path": "/async/", "q": "café"}

    def test_static_files_through_whitenoise(self, srv):
        r = srv.get("/static/gm/hello.txt")
        assert r.status_code == 200
        assert r.content == b"static file served by whitenoise\n"
        assert r.headers["content-type"].startswith("text/plain")
        assert r.headers["access-control-allow-origin"] == "*"  # set by whitenoise
        assert "max-age=60" in r.headers["cache-control"]
        r = srv.get("/static/admin/css/base.css")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/css")
        assert int(r.headers["content-length"]) == len(r.content) > 1000
        etag = srv.get("/static/gm/hello.txt").headers["etag"]
        r = srv.get("/static/gm/hello.txt", headers={"If-None-Match": etag})
        assert r.status_code == 304
        assert srv.get("/static/gm/missing.txt").status_code == 404


@pytest.fixture(scope="module", params=list(WSGI_MODES))
def wsgi_srv(request, django_env):
    s = start(django_env, "djproject.wsgi:application", *WSGI_MODES[request.param])
    yield s
    s.kill()


@pytest.fixture(scope="module")
def asgi_srv(asgi_mode, django_env):
    s = start(django_env, "djproject.asgi:application")
    yield s
    s.kill()


class TestWsgi(_Cases):
    @pytest.fixture
    def srv(self, wsgi_srv):
        return wsgi_srv


@pytest.mark.usefixtures("asgi_mode")
class TestAsgi(_Cases):
    @pytest.fixture
    def srv(self, asgi_srv):
        return asgi_srv
