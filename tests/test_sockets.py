"""Sockets: Unix sockets with permissions, inherited fds (`--fd`), systemd socket
activation (`LISTEN_FDS`/`LISTEN_PID`), several `--bind` addresses, `--reuse-port`."""

from __future__ import annotations

import os
import socket
import stat
import sys

import httpx
import pytest

from _support import child_pids

APP = "http_app:application"

# Sets up what systemd passes (the socket as fd 3, LISTEN_PID = this pid, which exec
# keeps) and execs gristmill with the arguments that follow.
SYSTEMD_LAUNCHER = [
    sys.executable,
    "-c",
    "import os, sys\n"
    "fd = int(os.environ.pop('GM_TEST_FD'))\n"
    "os.dup2(fd, 3)\n"
    "os.environ['LISTEN_FDS'] = '1'\n"
    "os.environ['LISTEN_FDNAMES'] = 'web'\n"
    "os.environ['LISTEN_PID'] = str(os.getpid())\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'gristmill', *sys.argv[1:]])\n",
]


def uds_get(path: str, url_path: str = "/path?x") -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=10) as c:
        return c.get(f"http://localhost{url_path}")


def listening_socket(family=socket.AF_INET, addr=("127.0.0.1", 0)) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind(addr)
    s.listen(16)
    return s


def test_uds_permissions_and_stale_file(server, tmp_path):
    path = str(tmp_path / "app.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # a socket file nobody listens on: left behind by a crash
    stale.close()
    srv = server("--uds", path, "--uds-permissions", "660", APP, expect_ready=False)
    srv.wait_for_line(rf"Listening on unix:{path} \(1 worker\)")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    assert uds_get(path).text == "/path?x"
    assert srv.stop() == 0
    assert not os.path.exists(path)


def test_bad_uds_permissions_is_config_error(gristmill_exit, tmp_path):
    code, out = gristmill_exit(["--uds", str(tmp_path / "s"), "--uds-permissions", "999", APP])
    assert code == 2 and "uds_permissions must be an octal file mode" in out


def test_inherited_fd(server):
    sock = listening_socket()
    port = sock.getsockname()[1]
    try:
        srv = server("--fd", str(sock.fileno()), APP, pass_fds=(sock.fileno(),))
    finally:
        sock.close()  # gristmill has its own copy now
    assert srv.port == port
    assert srv.get("/path?fd").text == "/path?fd"


def test_inherited_unix_fd(server, tmp_path):
    path = str(tmp_path / "inherited.sock")
    sock = listening_socket(socket.AF_UNIX, path)
    srv = server(
        "--bind", f"fd://{sock.fileno()}", APP, pass_fds=(sock.fileno(),), expect_ready=False
    )
    sock.close()
    srv.wait_for_line(rf"Listening on unix:{path} \(1 worker\)")
    assert uds_get(path).text == "/path?x"


def test_systemd_socket_activation(server):
    sock = listening_socket()
    port = sock.getsockname()[1]
    env = {"GM_TEST_FD": str(sock.fileno())}
    try:
        srv = server(
            "--workers", "2", APP, env=env, pass_fds=(sock.fileno(),), launcher=SYSTEMD_LAUNCHER
        )
    finally:
        sock.close()
    assert srv.port == port  # the socket systemd passed, not --port 0
    pids = {srv.get("/pid").text for _ in range(20)}
    assert pids <= {str(p) for p in srv.worker_pids()}
    # The application does not see the activation variables.
    r = srv.get("/path?a")
    assert r.status_code == 200
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        assert srv.get(f"/osenv?{name}").text == "None"


def test_systemd_variables_for_another_process_are_ignored(server):
    srv = server(APP, env={"LISTEN_PID": "1", "LISTEN_FDS": "1"})
    assert srv.get("/path?y").text == "/path?y"


def test_multiple_binds(server, tmp_path):
    path = str(tmp_path / "multi.sock")
    binds = ["--bind", "127.0.0.1:0", "--bind", f"unix:{path}"]
    ipv6 = socket.has_ipv6
    if ipv6:
        try:
            listening_socket(socket.AF_INET6, ("::1", 0)).close()
        except OSError:
            ipv6 = False
    if ipv6:
        binds += ["--bind", "[::1]:0"]
    srv = server(*binds, APP)
    addrs = srv.ready_line.split("Listening on ", 1)[1].rsplit(" (", 1)[0].split(", ")
    assert addrs[0] == srv.url
    assert f"unix:{path}" in addrs
    assert srv.get("/path?v4").text == "/path?v4"
    assert uds_get(path, "/path?uds").text == "/path?uds"
    if ipv6:
        v6 = next(a for a in addrs if a.startswith("http://[::1]:"))
        with httpx.Client(timeout=10) as c:
            assert c.get(v6 + "/path?v6").text == "/path?v6"


def test_bad_bind_address_is_config_error(gristmill_exit):
    for bad in ("nohostport", "::1:80", "unix:", "fd://x", "host:99999"):
        code, out = gristmill_exit(["--bind", bad, APP])
        assert code == 2, (bad, out)
        assert "invalid bind address" in out


def _listeners_on(port: int) -> int:
    """LISTEN sockets on this TCP port, from /proc/net/tcp (state 0A)."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
                n += 1
    return n


def test_reuse_port_gives_each_worker_its_own_socket(server):
    srv = server("--workers", "2", "--reuse-port", APP)
    assert _listeners_on(srv.port) == 2
    seen = {srv.get("/pid").text for _ in range(60)}
    assert seen == {str(p) for p in child_pids(srv.pid)}


def test_without_reuse_port_workers_share_one_socket(server):
    srv = server("--workers", "2", APP)
    assert _listeners_on(srv.port) == 1


def test_tls_on_a_unix_socket(server, certs, tmp_path):
    path = str(tmp_path / "tls.sock")
    srv = server("--uds", path, *certs.server_args(), "h2_app:application", expect_ready=False)
    srv.wait_for_line(rf"Listening on unix:{path}")
    import ssl

    ctx = ssl.create_default_context()
    certs.ca.configure_trust(ctx)
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(path)
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET /env HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    assert b'"wsgi.url_scheme": "https"' in data


@pytest.mark.parametrize("flag", ["--bind", "--fd"])
def test_unusable_fd_is_a_clear_error(gristmill_exit, flag):
    value = "fd://1000" if flag == "--bind" else "1000"
    code, out = gristmill_exit([flag, value, APP])
    assert code == 1 and "cannot use" in out, out
