"""A real Falcon 4 application (tests/apps/frameworks/falcon_app.py) served as WSGI
(``falcon.App``, both WSGI modes) and ASGI (``falcon.asgi.App``, both ASGI modes): a
route that reads the request body and streams a response."""

from __future__ import annotations

import pytest

from _frameworks import FRAMEWORKS_DIR, MIB, check_echo
from _support import WSGI_MODES, Server


def start(*args: str) -> Server:
    s = Server(list(args), cwd=FRAMEWORKS_DIR)
    s.wait_ready()
    return s


@pytest.fixture(scope="module", params=list(WSGI_MODES))
def wsgi_srv(request):
    s = start("falcon_app:app", *WSGI_MODES[request.param])
    yield s
    s.kill()


@pytest.fixture(scope="module")
def asgi_srv(asgi_mode):
    s = start("falcon_app:asgi_app")
    yield s
    s.kill()


class _Cases:
    """Run by ``TestWsgi`` and ``TestAsgi`` against their ``srv``."""

    interface = ""

    def test_media(self, srv):
        r = srv.get("/echo")
        assert r.status_code == 200
        assert r.json() == {"framework": "falcon", "interface": self.interface}

    @pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
    def test_body_in_stream_out(self, srv, chunked):
        check_echo(f"{srv.url}/echo", 2 * MIB, chunked=chunked, via=self.interface)


class TestWsgi(_Cases):
    interface = "wsgi"

    @pytest.fixture
    def srv(self, wsgi_srv):
        return wsgi_srv


@pytest.mark.usefixtures("asgi_mode")
class TestAsgi(_Cases):
    interface = "asgi"

    @pytest.fixture
    def srv(self, asgi_srv):
        return asgi_srv
