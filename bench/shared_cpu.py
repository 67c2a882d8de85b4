"""Two bench servers on one CPU at the same time: what a variant costs against its base,
measured in the same seconds.

``run.py`` measures servers one after the other, so a machine whose speed drifts by
±30 % from one second to the next (a shared host) hides a cost of a few percent: the
recycling row's per-round ratio to its base ranged over 0.63-1.35 there. Here both
servers run together, pinned to the same CPU, each in a ``cpu`` cgroup of its own with
equal weight, so the scheduler gives each tree half the CPU whatever else the host does;
each is driven by its own ``wrk`` (run.py's ``plain`` load: ``/``, 64 connections) from
another CPU. A variant that spends x % more CPU per request then serves 1/(1 + x) of its
base's requests, and the drift, common to both, cancels out of the ratio.

Without a writable cgroup hierarchy it falls back to plain per-process fairness and says
so: the variant's extra processes (a starting and a draining worker) then get more than
half the CPU while they run, which flatters it.

Usage (from the repository; servers by their ``run.py`` names, the variant's twin first)::

    BENCH_VENV=/path/to/venv python bench/shared_cpu.py \
        gristmill-wsgi:gristmill-wsgi-recycle gristmill-asgi:gristmill-asgi-recycle \
        --rounds 6 --duration 10

With ``--base-venv OTHER`` the base servers come from another venv (another build of
gristmill), so a code change is measured against the code before it, at the same time:
``--base-venv /path/to/old gristmill-wsgi-recycle:gristmill-wsgi-recycle``.

``--variant-reconnects N`` makes the variant's clients reconnect every N requests (the
request carries ``Connection: close``): what reconnections alone cost, without a worker
replacement (64 of them every 10,000 requests is N = 156).

``--connections N`` drives both servers over N connections instead of 64: a replacement
costs a fixed part plus a part per connection the new worker takes over, and comparing
a few counts tells them apart.

``--profile DIR`` samples CPU 0 with ``perf record -g`` during each round and notes which
processes are the base's: ``bench/profile_report.py DIR`` then tells where the variant
spends more per request (kernel entry points, user-space libraries).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402 - the bench's own server table and helpers

CGROUP_ROOTS = (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup"))
#: The load: `/`, 64 connections, as in run.py's `plain` row.
PLAIN = next(t for t in run.TESTS if t.key == "plain")


def plain(connections: int) -> run.Test:
    """run.py's `plain` load over ``connections`` connections (64 there)."""
    if connections == PLAIN.conns:
        return PLAIN
    return dataclasses.replace(PLAIN, key=f"plain-{connections}", conns=connections)


def reconnecting(every: int, load: run.Test = PLAIN) -> run.Test:
    """``load`` whose every ``every``-th request (per wrk thread) asks for the
    connection to be closed, so the client reconnects."""
    lua = (
        "local n = 0\n"
        "request = function()\n"
        "  n = n + 1\n"
        f"  if n % {every} == 0 then\n"
        '    return wrk.format("GET", "/", {["Connection"] = "close"})\n'
        "  end\n"
        '  return wrk.format("GET", "/")\n'
        "end\n"
    )
    return dataclasses.replace(load, key=f"{load.key}-reconnect-{every}", lua=lua)


def cgroup_dirs(count: int) -> list[Path] | None:
    """``count`` fresh ``cpu`` cgroups of equal weight, or None when none can be made."""
    for root in CGROUP_ROOTS:
        if not (root / "cgroup.procs").exists():
            continue
        # cgroup v1 (`cpu.shares`, 1024 by default) needs nothing more; v2 (`cpu.weight`,
        # 100 by default) needs the controller enabled for the children.
        v2 = root / "cgroup.subtree_control"
        if v2.exists() and "cpu" not in v2.read_text().split():
            continue
        dirs = [root / f"gristmill-shared-cpu-{os.getpid()}-{i}" for i in range(count)]
        try:
            for d in dirs:
                d.mkdir()
        except OSError:
            drop_cgroups(dirs)
            continue
        return dirs
    return None


def drop_cgroups(dirs: list[Path]) -> None:
    for d in dirs:
        for _ in range(50):  # a reaped process leaves its cgroup a moment later
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)


def in_cgroup(srv: run.Server, cgroup: Path | None, role: str = "") -> run.Server:
    """A copy of ``srv`` (named for its ``role``, which names its log) started inside
    ``cgroup``: the shell joins it, then execs the server, so every process the server
    forks is in it."""
    name = f"{srv.name}.{role}" if role else srv.name
    if cgroup is None:
        return dataclasses.replace(srv, name=name)
    join = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'
    return dataclasses.replace(srv, name=name, cmd=["sh", "-c", join, "sh", str(cgroup), *srv.cmd])


def one_round(
    base: run.Server,
    variant: run.Server,
    rnd: int,
    duration: int,
    cgroups,
    logdir: Path,
    variant_load: run.Test = PLAIN,
    profile: Path | None = None,
    base_load: run.Test = PLAIN,
) -> dict[str, dict]:
    """Both servers under load together for ``duration`` seconds; wrk's results by role
    (``base``, ``variant``). With ``profile``, CPU 0 is sampled meanwhile (see
    :func:`start_profile`)."""
    cgs = cgroups or [None, None]
    roles = {
        "base": in_cgroup(base, cgs[0], "base"),
        "variant": in_cgroup(variant, cgs[1], "variant"),
    }
    pair = list(roles.values())
    if rnd % 2:
        pair.reverse()  # which one starts (and is loaded) first alternates
    for srv, port in zip(pair, run.pick_ports(2, 18300), strict=True):
        srv.port = port
        run.start_server(srv, 1, "0", logdir)
    try:
        for srv in pair:
            if not run.wait_ready(srv, 30):
                raise SystemExit(f"{srv.name}: {srv.skipped}")
        time.sleep(1)  # the supervisor's first-fork preparation is done by then
        # Exactly the load of run.py's `plain` row, one wrk thread each, on CPU 1.
        loads = {
            id(srv): subprocess.Popen(
                ["taskset", "-c", "1"]
                + run.load_command(
                    variant_load if srv is roles["variant"] else base_load,
                    srv,
                    duration,
                    1,
                    Path(sys.executable),
                    logdir,
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
            for srv in pair
        }
        perf = None
        if profile is not None:
            perf = start_profile(profile / f"r{rnd}", duration, roles["base"], cgs[0])
        done = {key: run.parse_wrk(p.communicate()[0]) for key, p in loads.items()}
        result = {role: done[id(srv)] for role, srv in roles.items()}
        if perf is not None:
            perf.wait()
            rates = {role: r["rps"] for role, r in result.items()}
            rates["seconds"] = profile_seconds(duration)
            (profile / f"r{rnd}" / "rates.json").write_text(json.dumps(rates))
        return result
    finally:
        for srv in pair:
            run.stop_server(srv)


def start_profile(
    out: Path, duration: int, base: run.Server, cgroup: Path | None
) -> subprocess.Popen:
    """``perf record -g`` of CPU 0 (where both servers run) for the middle of the round,
    into ``out/perf.data``; the base server's processes into ``out/base.pids`` (all its
    processes live for the whole round; the variant's come and go)."""
    out.mkdir(parents=True, exist_ok=True)
    if cgroup is not None:
        pids = (cgroup / "cgroup.procs").read_text().split()
    else:
        pids = [str(base.proc.pid), *_descendants(base.proc.pid)] if base.proc else []
    (out / "base.pids").write_text("\n".join(pids) + "\n")
    seconds = str(profile_seconds(duration))
    return subprocess.Popen(
        ["perf", "record", "-q", "-C", "0", "-e", "cpu-clock", "-F", str(PROFILE_HZ), "-g"]
        + ["-o", str(out / "perf.data"), "--", "sleep", seconds],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


#: Samples per second of ``--profile`` (``bench/profile_report.py`` reads it back).
PROFILE_HZ = 5000


def profile_seconds(duration: int) -> int:
    """How long a round of ``duration`` seconds is sampled: all but its last two seconds
    (wrk's threads start a moment after the servers are loaded)."""
    return max(1, duration - 2)


def _descendants(pid: int) -> list[str]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            out += [child, *_descendants(int(child))]
    return out


def tables(
    venv: Path, base_venv: Path | None
) -> tuple[dict[str, run.Server], dict[str, run.Server]]:
    """The bench's servers by name, 1 worker each: the table the base servers come from
    (``base_venv``'s build when given) and the one the variants come from (``venv``'s)."""
    specs = {s.name: s for s in run.server_specs(venv / "bin" / "python", 1, 1)}
    if base_venv is None:
        return specs, specs
    base_python = base_venv.resolve() / "bin" / "python"
    return {s.name: s for s in run.server_specs(base_python, 1, 1)}, specs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pairs", nargs="+", help="BASE:VARIANT, servers named as in run.py")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--duration", type=int, default=10, help="seconds of load per round")
    ap.add_argument(
        "--base-venv",
        type=Path,
        help="start the base servers from this venv (another build of gristmill): "
        "BASE:VARIANT may then name the same server, to measure a change of code",
    )
    ap.add_argument(
        "--variant-reconnects",
        type=int,
        metavar="N",
        help="the variant's clients reconnect every N requests (Connection: close)",
    )
    ap.add_argument(
        "--connections",
        type=int,
        default=PLAIN.conns,
        metavar="N",
        help=f"each wrk's connections ({PLAIN.conns}, as in run.py's plain row)",
    )
    ap.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample CPU 0 with perf during each round, for bench/profile_report.py",
    )
    args = ap.parse_args()
    venv = Path(os.environ.get("BENCH_VENV") or Path(__file__).parent / ".venv").resolve()
    python_bin = venv / "bin" / "python"
    for tool in ("wrk", "taskset", *(["perf"] if args.profile else [])):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    base_specs, specs = tables(venv, args.base_venv)
    if args.base_venv is not None:
        print(f"base servers from {args.base_venv}, variants from {venv}")
    run.compile_apps(python_bin)
    cgroups = cgroup_dirs(2)
    if cgroups is None:
        print("no writable cpu cgroup: per-process fairness only (flatters the variant)")
    load = plain(args.connections)
    logroot = Path("/tmp") / f"gristmill-shared-cpu-{os.getpid()}"
    try:
        for pair in args.pairs:
            base_name, variant_name = pair.split(":")
            base, variant = base_specs[base_name], specs[variant_name]
            ratios, errors = [], 0
            for rnd in range(args.rounds):
                logdir = logroot / f"{rnd}"
                logdir.mkdir(parents=True, exist_ok=True)
                res = one_round(
                    base,
                    variant,
                    rnd,
                    args.duration,
                    cgroups,
                    logdir,
                    reconnecting(args.variant_reconnects, load)
                    if args.variant_reconnects
                    else load,
                    args.profile / pair.replace(":", "--") if args.profile else None,
                    load,
                )
                b, v = res["base"], res["variant"]
                errors += b["errors"] + v["errors"]
                ratios.append(v["rps"] / b["rps"])
                print(
                    f"  r{rnd} {base.name} {b['rps']:.0f}/s  {variant.name} {v['rps']:.0f}/s"
                    f"  ratio {ratios[-1]:.3f}  p99 {b['p99_ms']} / {v['p99_ms']} ms",
                    flush=True,
                )
            ratios.sort()
            q = len(ratios) // 4
            print(
                f"{variant.name} / {base.name}: median {statistics.median(ratios):.3f} "
                f"(middle half {ratios[q]:.3f}-{ratios[-1 - q]:.3f}, all "
                f"{ratios[0]:.3f}-{ratios[-1]:.3f}); cost "
                f"{100 * (1 - statistics.median(ratios)):.1f} % of req/s; {errors} errors",
                flush=True,
            )
    finally:
        if cgroups is not None:
            drop_cgroups(cgroups)
    return 0


if __name__ == "__main__":
    sys.exit(main())
