"""Helpers shared by the framework tests (tests/test_fw_*.py): where the projects live,
curl, random files and the echo check."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from _support import APPS_DIR

FRAMEWORKS_DIR = APPS_DIR / "frameworks"
MIB = 1 << 20


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    """Run curl (HTTP/1.1, silent but showing errors); skip when it is not installed."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    return subprocess.run(["curl", "-sS", "--http1.1", *args], capture_output=True, timeout=timeout)


def random_file(folder: Path, size: int, name: str = "payload.bin") -> tuple[Path, str]:
    """A file of ``size`` random bytes in ``folder``: (path, sha256 hex)."""
    data = os.urandom(size)
    path = folder / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def check_echo(url: str, size: int = 2 * MIB, chunked: bool = False, **expect) -> None:
    """POST ``size`` random bytes to an echo route (Content-Length, or chunked from a
    generator) and check the streamed answer: a JSON summary line (size, sha256 and the
    ``expect`` items), then the same bytes."""
    data = os.urandom(size)
    piece = 256 * 1024

    def gen():
        for i in range(0, size, piece):
            yield data[i : i + piece]

    with httpx.Client(timeout=30) as client:
        with client.stream("POST", url, content=gen() if chunked else data) as r:
            assert r.status_code == 200, r.read()[:2000]
            assert "content-length" not in r.headers
            assert r.headers["transfer-encoding"] == "chunked"
            pieces = list(r.iter_raw())
    body = b"".join(pieces)
    line, _, echoed = body.partition(b"\n")
    summary = json.loads(line)
    assert summary["size"] == size
    assert summary["sha256"] == hashlib.sha256(data).hexdigest()
    for key, value in expect.items():
        assert summary[key] == value, summary
    assert echoed == data
