"""Reading a process's state from ``/proc``: the one place the supervisor
(``--worker-max-rss``) and the metrics process (the per-worker RSS gauge) read it."""

from __future__ import annotations


def rss_kib(pid: int) -> int | None:
    """A process's resident set size in KiB (``VmRSS`` in ``/proc/PID/status``), or
    ``None`` when it cannot be read (the process is gone, or no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None
