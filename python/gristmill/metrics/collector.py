"""Read every metrics segment and turn it into Prometheus metric families.

One scrape is one consistent snapshot: the live workers' segments and the retired one
are read between two reads of the retired segment's sequence number (a seqlock, see
``src/metrics/shm.rs``), so a worker folded into the retired totals during the scrape
is counted once, never twice or not at all. Counters are summed over every segment;
gauges over the live workers only; ``gristmill_worker_resident_memory_bytes`` is read
from ``/proc`` for each live worker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .. import _core
from .._proc import rss_kib

__all__ = ["SegmentCollector", "Snapshot"]

_INTERFACES = {1: "wsgi", 2: "asgi"}
#: Families that carry the worker's interface as a label.
_BY_INTERFACE = {"gristmill_requests"}


@dataclass
class Snapshot:
    """Values read in one scrape: ``(pid, interface, values)`` per live worker, and
    the retired segment's values."""

    live: list[tuple[int, int, list[int]]]
    retired: tuple[int, list[int]] | None


class SegmentCollector(Collector):
    """A ``prometheus_client`` collector over the segments in ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.layout: dict[str, Any] = _core.metrics_layout()

    def snapshot(self) -> Snapshot:
        retired_path = os.path.join(self.directory, "retired")
        snap = Snapshot([], None)
        for _ in range(100):
            try:
                retired = _core.MetricsSegment(retired_path)
            except OSError:
                retired = None
            before = retired.seq if retired is not None else 0
            if before % 2:
                continue  # a fold is under way
            snap = Snapshot([], None)
            for name in sorted(os.listdir(self.directory)):
                if not name.startswith("worker-"):
                    continue
                try:
                    seg = _core.MetricsSegment(os.path.join(self.directory, name))
                except OSError:
                    continue  # being created, or removed after its fold
                if seg.state != "live":
                    continue
                snap.live.append((seg.pid, seg.interface, seg.values()))
            if retired is not None:
                snap.retired = (retired.interface, retired.values())
                if retired.seq != before:
                    continue
            break
        return snap

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        # Every segment with the interface it counts under; gauges only from live ones.
        counted = [(iface, values, True) for _, iface, values in snap.live]
        if snap.retired is not None:
            counted.append((snap.retired[0], snap.retired[1], False))
        counters = set(self.layout["counters"])
        for name, kind, help_, labels, series in self.layout["families"]:
            by_iface = name in _BY_INTERFACE
            family: CounterMetricFamily | GaugeMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(
                    name, help_, labels=(["interface"] if by_iface else []) + list(labels)
                )
            else:
                family = GaugeMetricFamily(name, help_, labels=list(labels))
            for values_, slot in series:
                if by_iface:
                    per: dict[str, int] = {}
                    for iface, values, _live in counted:
                        if values[slot]:
                            key = _INTERFACES.get(iface, "unknown")
                            per[key] = per.get(key, 0) + values[slot]
                    for iface_name, total in sorted(per.items()):
                        family.add_metric([iface_name, *values_], total)
                    continue
                if slot in counters:
                    total = sum(values[slot] for _, values, _ in counted)
                else:
                    total = sum(_signed(values[slot]) for _, values, live in counted if live)
                family.add_metric(list(values_), total)
            yield family
        yield from self._duration(counted)
        yield from self._workers(snap)

    def _duration(self, counted: list[tuple[int, list[int], bool]]) -> Iterator[Metric]:
        bounds, first, sum_slot = self.layout["duration"]
        family = HistogramMetricFamily(
            "gristmill_request_duration_seconds",
            "Time from a request's head to the end of its response, by interface.",
            labels=["interface"],
        )
        per: dict[str, tuple[list[int], int]] = {}
        for iface, values, _ in counted:
            if not iface:
                continue
            buckets, total = per.get(
                _INTERFACES.get(iface, "unknown"), ([0] * (len(bounds) + 1), 0)
            )
            buckets = [b + values[first + i] for i, b in enumerate(buckets)]
            per[_INTERFACES.get(iface, "unknown")] = (buckets, total + values[sum_slot])
        for iface_name, (buckets, sum_us) in sorted(per.items()):
            cumulative, running = [], 0
            for bound, count in zip([*map(_le, bounds), "+Inf"], buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            family.add_metric([iface_name], cumulative, sum_us / 1e6)
        yield family

    def _workers(self, snap: Snapshot) -> Iterator[Metric]:
        rss = GaugeMetricFamily(
            "gristmill_worker_resident_memory_bytes",
            "Resident memory of each worker process (VmRSS), by pid.",
            labels=["pid"],
        )
        alive = 0
        for pid, _, _ in snap.live:
            kib = rss_kib(pid)
            if kib is None:
                continue
            alive += 1
            rss.add_metric([str(pid)], kib * 1024)
        yield rss
        yield GaugeMetricFamily("gristmill_workers", "Worker processes running.", value=alive)


def _signed(v: int) -> int:
    """A gauge's word (wrapping u64) as a signed number."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _le(bound: float) -> str:
    return repr(float(bound))
