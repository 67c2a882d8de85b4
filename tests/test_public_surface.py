"""The names ``gristmill`` exports (``python/gristmill/__init__.py``).

``_core.pyi`` is checked against the built core by ``make lint`` (mypy.stubtest); these
tests hold the package's side: every public name resolves, and the core's exceptions
reach users through ``gristmill`` with the tree the docs describe.
"""

import pytest

import gristmill
from gristmill import (
    ClientDisconnected,
    RequestBodyError,
    RequestBodyTimeout,
    RequestBodyTooLarge,
)


def test_every_public_name_resolves():
    for name in gristmill.__all__:
        assert getattr(gristmill, name) is not None, name


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gristmill.nope  # noqa: B018


def test_request_body_errors_are_os_errors():
    assert issubclass(RequestBodyError, OSError)
    for exc in (ClientDisconnected, RequestBodyTimeout, RequestBodyTooLarge):
        assert issubclass(exc, RequestBodyError)


def test_errors_name_the_public_module():
    # Tracebacks and reprs say where users import them from, not the private core.
    for exc in (RequestBodyError, ClientDisconnected, RequestBodyTimeout, RequestBodyTooLarge):
        assert exc.__module__ == "gristmill"
        assert getattr(gristmill, exc.__name__) is exc
