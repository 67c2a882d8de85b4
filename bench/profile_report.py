"""Where a variant spends more CPU per request than its base: the report of
``bench/shared_cpu.py --profile DIR``.

Each profiled round left ``perf.data`` (CPU 0, where both servers ran, sampled with call
chains), ``base.pids`` (the base server's processes) and ``rates.json`` (each server's
requests per second). Every sample of a server's process is put under what it was
doing: the kernel's entry point for a sample in the kernel (a system call such as
``__x64_sys_accept4``, ``exc_page_fault``, ``do_group_exit`` when a process ends,
``handle_softirqs`` for the network stack) or the library for one in user space
(``libpython3.12.so``, ``_core.abi3.so``). Samples count as CPU time and are turned into
milliseconds per 10,000 requests for each side, so the difference is what the variant
costs per 10,000 requests, by kind: with ``--max-requests 10000``, per replacement.

Usage::

    python bench/profile_report.py DIR [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_cpu import PROFILE_HZ  # noqa: E402

#: Kernel functions that tell what a sample in the kernel was there for, outermost first
#: in the call chain.
ENTRY = re.compile(
    r"(__x64_sys_\w+|__do_sys_\w+|do_writev|do_readv|exc_page_fault|do_group_exit|"
    r"handle_softirqs|asm_sysvec_\w+|ret_from_fork\w*)$"
)
#: Server processes are these (the load generators run on another CPU).
COMMANDS = ("gristmill", "python", "granian", "uvicorn", "gunicorn", "hypercorn", "ceiling")
PER = 10_000


def samples(perf_script: str) -> Iterable[tuple[int, str]]:
    """(pid, kind) of each sample of a server process in ``perf script`` output (fields
    ``comm,pid,tid,ip,sym,dso``, with call chains)."""
    for block in perf_script.split("\n\n"):
        lines = [line for line in block.strip().splitlines() if line.strip()]
        if len(lines) < 2:
            continue
        head = lines[0].split()
        if not head[0].startswith(COMMANDS):
            continue
        yield int(head[1].split("/")[0]), kind(lines[1:])


def kind(frames: list[str]) -> str:
    """What one sample was doing, from its call chain (innermost frame first)."""
    if "[kernel.kallsyms]" not in frames[0]:
        dso = re.search(r"\(([^)]*)\)\s*$", frames[0])
        return "user " + (Path(dso.group(1)).name if dso else "?")
    kernel = [f.split()[1].split("+")[0] for f in frames if "[kernel.kallsyms]" in f]
    for fn in reversed(kernel):
        if ENTRY.match(fn):
            return "kernel " + fn
    return "kernel " + kernel[-1]


def tally(
    pairs: Iterable[tuple[int, str]], base_pids: set[int]
) -> dict[str, collections.Counter[str]]:
    """Samples by side (``base``, ``variant``) and kind."""
    out = {"base": collections.Counter(), "variant": collections.Counter()}
    for pid, what in pairs:
        out["base" if pid in base_pids else "variant"][what] += 1
    return out


def per_requests(counts: collections.Counter[str], rps: float, seconds: float) -> dict[str, float]:
    """Milliseconds of CPU per :data:`PER` requests, by kind."""
    ms_per_sample = 1000 / PROFILE_HZ
    requests = rps * seconds
    return {k: n * ms_per_sample * PER / requests for k, n in counts.items()}


def report_round(round_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    script = subprocess.run(
        ["perf", "script", "-i", str(round_dir / "perf.data"), "-F", "comm,pid,tid,ip,sym,dso"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    base_pids = {int(p) for p in (round_dir / "base.pids").read_text().split()}
    rates = json.loads((round_dir / "rates.json").read_text())
    seconds = rates["seconds"]
    counts = tally(samples(script), base_pids)
    return (
        per_requests(counts["base"], rates["base"], seconds),
        per_requests(counts["variant"], rates["variant"], seconds),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, help="the --profile DIR of bench/shared_cpu.py")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    for pair in sorted(p for p in args.dir.iterdir() if p.is_dir()):
        rounds = sorted(r for r in pair.iterdir() if (r / "rates.json").exists())
        if not rounds:
            continue
        base: collections.Counter[str] = collections.Counter()
        variant: collections.Counter[str] = collections.Counter()
        for r in rounds:
            b, v = report_round(r)
            base.update({k: x / len(rounds) for k, x in b.items()})
            variant.update({k: x / len(rounds) for k, x in v.items()})
        total_b, total_v = sum(base.values()), sum(variant.values())
        print(f"{pair.name.replace('--', ' vs ')} ({len(rounds)} rounds): ms of CPU per")
        print(f"{PER} requests, base {total_b:.1f}, variant {total_v:.1f}, ", end="")
        print(f"difference {total_v - total_b:+.2f}")
        rows = sorted(set(base) | set(variant), key=lambda k: base[k] - variant[k])
        print(f"{'difference':>10} {'base':>8} {'variant':>8}  kind")
        for k in rows[: args.top]:
            print(f"{variant[k] - base[k]:+10.2f} {base[k]:8.2f} {variant[k]:8.2f}  {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
