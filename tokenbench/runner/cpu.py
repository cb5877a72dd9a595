"""How busy this machine's CPUs were over a stretch of time, from /proc/stat (Linux; None elsewhere).

A run whose workers share a saturated machine measures part of its own delay as the server's, so
`run` reports the share (``local_cpu`` in the result) and its table warns when it is high.
"""

from __future__ import annotations

from pathlib import Path

_PROC_STAT = Path("/proc/stat")


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies over all CPUs since boot."""
    try:
        fields = [int(v) for v in _PROC_STAT.read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


class CpuSampler:
    """Started at construction; ``busy_share()`` is the share of all CPU time spent busy since then."""

    def __init__(self) -> None:
        self._start = _cpu_times()

    def busy_share(self) -> float | None:
        end = _cpu_times()
        if self._start is None or end is None or end[1] <= self._start[1]:
            return None
        return round((end[0] - self._start[0]) / (end[1] - self._start[1]), 3)
