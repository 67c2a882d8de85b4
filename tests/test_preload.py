"""--preload: the application is imported once, in the supervisor; the workers share its
memory; a failing import stops gristmill before any worker; SIGHUP does not re-import."""

from __future__ import annotations

import signal

import pytest

from _support import wait_until

MIB = 1 << 20


def _shared_kib(pid: int) -> int:
    """Resident memory of ``pid`` that other processes map too (from smaps_rollup)."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Shared_Clean:", "Shared_Dirty:")):
                total += int(line.split()[1])
    return total


def _imports(tmp_path) -> list[int]:
    path = tmp_path / "imports"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize("target", ["preload_app:application", "preload_app:app"])
@pytest.mark.parametrize("preload", [True, False])
def test_preload_imports_once_and_workers_share_it(server, tmp_path, target, preload):
    args = [target, "--workers", "2"] + (["--preload"] if preload else [])
    srv = server(*args, env={"PRELOAD_DIR": str(tmp_path)})
    workers = srv.worker_pids()
    assert srv.get("/").status_code == 200
    if preload:
        assert _imports(tmp_path) == [srv.pid]
        assert any("Preloaded preload_app:" in line for line in srv.lines())
        # The 64 MiB written before the fork are still shared by both workers.
        for pid in workers:
            assert _shared_kib(pid) >= 60 * 1024, (pid, _shared_kib(pid))
    else:
        assert sorted(_imports(tmp_path)) == sorted(workers)
        for pid in workers:
            assert _shared_kib(pid) < 60 * 1024


def test_sighup_with_preload_reuses_the_import(server, tmp_path):
    srv = server(
        "preload_app:application", "--workers", "2", "--preload", env={"PRELOAD_DIR": str(tmp_path)}
    )
    old = srv.worker_pids()
    mark = srv.mark()
    srv.send_signal(signal.SIGHUP)
    srv.wait_for_line("Reload complete", start=mark, timeout=20)
    wait_until(lambda: not (srv.worker_pids() & old), 20, message="the old workers gone")
    assert _imports(tmp_path) == [srv.pid]
    assert srv.get("/").status_code == 200


def test_preload_failure_stops_before_any_worker(gristmill_exit, tmp_path):
    code, out = gristmill_exit(["raising_import:application", "--preload", "--workers", "2"])
    assert code == 3, out
    assert "Listening on" not in out
    assert "Started worker" not in out


def test_preload_with_reload_is_a_config_error(gristmill_exit):
    code, out = gristmill_exit(["http_app:application", "--preload", "--reload"])
    assert code == 2, out
    assert "--preload and --reload cannot be combined" in out
