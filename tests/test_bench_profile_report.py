"""``bench/profile_report.py``: samples of ``perf script`` sorted by side and by what
they were doing, turned into CPU per 10,000 requests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import profile_report  # noqa: E402

SCRIPT = """\
gristmill 100/100
\tffffffff81001000 clear_page_erms+0x10 ([kernel.kallsyms])
\tffffffff81002000 do_anonymous_page+0x20 ([kernel.kallsyms])
\tffffffff81003000 exc_page_fault+0x30 ([kernel.kallsyms])
\tffffffff81004000 asm_exc_page_fault+0x26 ([kernel.kallsyms])
\t7f0000001000 _PyEval_EvalFrameDefault+0x5 (/usr/lib/libpython3.12.so.1.0)

gristmill 200/201
\t7f0000002000 hyper::proto::h1::conn::Conn::poll_read+0x9 (/venv/gristmill/_core.abi3.so)

gristmill 200/200
\tffffffff81005000 tcp_recvmsg+0x1 ([kernel.kallsyms])
\tffffffff81006000 __x64_sys_recvfrom+0x2 ([kernel.kallsyms])
\tffffffff81007000 do_syscall_64+0x3 ([kernel.kallsyms])
\tffffffff81008000 entry_SYSCALL_64_after_hwframe+0x4 ([kernel.kallsyms])
\t7f0000003000 recv+0x5 (/usr/lib/libc.so.6)

wrk 300/300
\t7f0000004000 main+0x1 (/usr/bin/wrk)
"""


def test_samples_are_sorted_by_what_they_did():
    got = list(profile_report.samples(SCRIPT))
    assert got == [
        (100, "kernel exc_page_fault"),
        (200, "user _core.abi3.so"),
        (200, "kernel __x64_sys_recvfrom"),
    ]  # the load generator's sample is not a server's


def test_sides_and_rates():
    counts = profile_report.tally(profile_report.samples(SCRIPT), base_pids={200})
    assert counts["base"] == {"user _core.abi3.so": 1, "kernel __x64_sys_recvfrom": 1}
    assert counts["variant"] == {"kernel exc_page_fault": 1}
    # One sample is 1/PROFILE_HZ s of CPU; 10,000 requests at 1,000/s over 10 s.
    ms = profile_report.per_requests(counts["variant"], rps=1000, seconds=10)
    assert ms["kernel exc_page_fault"] == 1000 / profile_report.PROFILE_HZ
