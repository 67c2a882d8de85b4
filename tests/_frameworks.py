"""Helpers shared by the framework tests (tests/test_fw_*.py): where the projects live,
curl, and an upload digest."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

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
