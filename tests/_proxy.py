"""What the proxy tests share: a full set of X-Forwarded-* headers and a GET that returns
the app's JSON report (proxy headers, WSGI and ASGI); PROXY protocol headers written by
hand; nginx and HAProxy started by the tests (the ``edge`` fixture) with the configs
docs/deployment.md shows (:func:`docs_config`)."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import httpx
import pytest

from _support import wait_until

#: Every X-Forwarded-* header, as a proxy chain ending at 198.51.100.7 would send them.
FULL = {
    "X-Forwarded-For": "203.0.113.9, 198.51.100.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "shop.example",
    "X-Forwarded-Port": "8443",
    "X-Forwarded-Prefix": "/store",
}


def get(url: str, headers=None, **client_kw) -> dict:
    """GET ``url``; it must answer 200; return the JSON body."""
    with httpx.Client(timeout=10, **client_kw) as client:
        resp = client.get(url, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


# --- PROXY protocol headers, written by hand ----------------------------------------------
#: The version 2 signature.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(client: tuple[str, int], server: tuple[str, int] = ("127.0.0.1", 80)) -> bytes:
    """A PROXY protocol v1 line for a TCP connection from ``client`` to ``server``."""
    family = "TCP6" if ":" in client[0] else "TCP4"
    return f"PROXY {family} {client[0]} {server[0]} {client[1]} {server[1]}\r\n".encode()


def proxy_v2(
    client: tuple[str, int] | None,
    server: tuple[str, int] = ("127.0.0.1", 80),
    local: bool = False,
    tlvs: bytes = b"",
) -> bytes:
    """A PROXY protocol v2 header: the PROXY command with ``client``'s address (IPv4 or
    IPv6; ``None`` for an unspecified family), or LOCAL; ``tlvs`` are appended as is."""
    if client is None:
        family, addresses = 0x00, b""
    elif ":" in client[0]:
        family = 0x21  # AF_INET6, STREAM
        addresses = (
            socket.inet_pton(socket.AF_INET6, client[0])
            + socket.inet_pton(socket.AF_INET6, server[0] if ":" in server[0] else "::1")
            + struct.pack("!HH", client[1], server[1])
        )
    else:
        family = 0x11  # AF_INET, STREAM
        addresses = (
            socket.inet_aton(client[0])
            + socket.inet_aton(server[0])
            + struct.pack("!HH", client[1], server[1])
        )
    body = addresses + tlvs
    command = 0x20 if local else 0x21
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(body)) + body


def client_of(report: dict) -> tuple[str, int] | None:
    """The client address in a ``proxy_app`` report (WSGI environ or ASGI scope)."""
    if "client" in report:
        return tuple(report["client"]) if report["client"] else None
    if report.get("REMOTE_ADDR") is None:
        return None
    return report["REMOTE_ADDR"], int(report["REMOTE_PORT"])


# --- nginx and HAProxy, started by the tests ----------------------------------------------
#: docs/deployment.md: the configs it shows are the ones the edge tests run (see
#: :func:`docs_config`).
DEPLOYMENT_DOC = Path(__file__).resolve().parent.parent / "docs" / "deployment.md"

NGINX = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")
HAPROXY = shutil.which("haproxy") or (os.path.exists("/usr/sbin/haproxy") and "/usr/sbin/haproxy")


def docs_config(name: str, replace: dict[str, str] | None = None) -> str:
    """The fenced block of docs/deployment.md that follows ``<!-- edge-config: NAME -->``,
    with each key of ``replace`` (which must occur in it) replaced: the tests run the
    configs the documentation shows, with only addresses and file paths changed."""
    text = DEPLOYMENT_DOC.read_text()
    marker = f"<!-- edge-config: {name} -->"
    assert marker in text, f"{marker} is missing from {DEPLOYMENT_DOC}"
    after = text.split(marker, 1)[1].lstrip("\n")
    assert after.startswith("```"), f"no fenced block right after {marker}"
    block = after.split("\n", 1)[1].split("\n```", 1)[0] + "\n"
    for old, new in (replace or {}).items():
        assert old in block, f"{old!r} is not in the {name} config of {DEPLOYMENT_DOC}"
        block = block.replace(old, new)
    return block


#: What the tests put around the nginx site config of the docs: a main config that
#: keeps every file in the test's folder.
NGINX_MAIN = """
{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{site}
}}
"""

#: What the tests put before a HAProxy config of the docs (which has no `global`).
HAPROXY_GLOBAL = """
global
    maxconn 512
"""


class EdgeProxies:
    """Start nginx and HAProxy processes (each in a folder of its own under ``root``),
    wait until they listen, and stop them all at :meth:`close`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen] = []

    def _start(self, name: str, cmd: list[str], ports: list[int], folder: Path) -> None:
        out_path = folder / "out.log"
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)

        def listening() -> bool:
            if proc.poll() is not None:
                logs = "".join(p.read_text() for p in folder.glob("*.log"))
                raise AssertionError(f"{name} exited ({proc.returncode}): {logs}")
            for port in ports:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except OSError:
                    return False
            return True

        wait_until(listening, 15, message=f"{name} to listen")

    def _folder(self, name: str) -> Path:
        folder = self.root / f"{name}-{len(self.procs)}"
        folder.mkdir()
        return folder

    def nginx(self, site: str, ports: list[int]) -> Path:
        """Run nginx with ``site`` (server and upstream blocks) until :meth:`close`;
        return its folder (``error.log`` is there)."""
        if not NGINX:
            pytest.skip("nginx is not installed (Debian package `nginx`; .ci/run installs it)")
        folder = self._folder("nginx")
        conf = folder / "nginx.conf"
        # As root, nginx's workers would run as `nobody`, who cannot enter pytest's
        # private tmp_path.
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(NGINX_MAIN.format(user=user, dir=folder, site=site))
        cmd = [NGINX, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(conf)]
        self._start("nginx", [*cmd, "-g", "daemon off;"], ports, folder)
        return folder

    def haproxy(self, config: str, ports: list[int]) -> Path:
        """Run HAProxy (in the foreground) with ``config`` until :meth:`close`."""
        if not HAPROXY:
            pytest.skip("haproxy is not installed (Debian package `haproxy`)")
        folder = self._folder("haproxy")
        conf = folder / "haproxy.cfg"
        conf.write_text(HAPROXY_GLOBAL + config)
        check = subprocess.run(
            [HAPROXY, "-c", "-f", str(conf)], capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stdout + check.stderr
        self._start("haproxy", [HAPROXY, "-db", "-f", str(conf)], ports, folder)
        return folder

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
