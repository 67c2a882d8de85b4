"""Fixtures: start real gristmill processes and clean them up.

``server(*args, env=None, cwd=None, expect_ready=True)`` starts
``python -m gristmill --port 0 <args>`` (cwd ``tests/apps`` unless given), waits for the
readiness line and returns a :class:`_support.Server`. Whatever is left of it (supervisor
and workers, one process group) is killed at teardown.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _support  # noqa: E402
from _certs import Certs, make_certs  # noqa: E402
from _support import APPS_DIR, ASGI_MODES, Server, run_to_exit  # noqa: E402


@pytest.fixture(scope="module", params=list(ASGI_MODES))
def asgi_mode(request):
    """Run the module once per ASGI mode (``_support.ASGI_MODES``): every server it
    starts gets that mode's environment. Use with ``pytestmark``."""
    _support.mode_env.update(ASGI_MODES[request.param])
    yield request.param
    _support.mode_env.clear()


@pytest.fixture
def server():
    started: list[Server] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        cwd=None,
        expect_ready: bool = True,
        **kw,
    ) -> Server:
        srv = Server(list(args), env=env, cwd=cwd, **kw)
        started.append(srv)
        if expect_ready:
            srv.wait_ready()
        return srv

    yield start
    for srv in started:
        srv.kill()


@pytest.fixture
def gristmill_exit():
    """``run(args, timeout=15, env=None, cwd=None) -> (exit code, output)``."""
    return run_to_exit


@pytest.fixture
def apps_dir() -> Path:
    return APPS_DIR


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    """Test certificates (EC keys): see ``_certs.py``."""
    return make_certs(tmp_path_factory.mktemp("certs-ec"))
