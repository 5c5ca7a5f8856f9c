"""Figures a store keeps about its own writing: commit latency and batch sizes.

The SQLite store commits in batches (group commit); how long a commit takes is what a
QoS 1/2 publisher to a persistent session waits for, and how many changes a batch holds
shows whether grouping works. Both are kept as cumulative histograms (Prometheus's
shape: a count per upper bound, plus the sum and count), cheap to update once per
commit. The ops layer turns them into ``mqttd_store_commit_seconds`` and
``mqttd_store_batch_changes`` on /metrics; the admin API shows them in GET /stats.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["BATCH_BUCKETS", "COMMIT_BUCKETS", "Histogram", "StoreStats"]

# Seconds: a commit without fsync takes well under a millisecond, one with fsync a few
# milliseconds on an SSD, tens on a disk or a busy machine.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Changes (rows written or deleted) per transaction, up to commit_batch.
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000)


@dataclass(slots=True)
class Histogram:
    """Observations counted per bucket (`bounds` are upper bounds, +Inf implied)."""

    bounds: Sequence[float]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; +Inf last
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound as Prometheus writes it, observations <= it), "+Inf" last."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip([*self.bounds, float("inf")], self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out


@dataclass(slots=True)
class StoreStats:
    """A store's writing figures (see the module docstring)."""

    commit_seconds: Histogram = field(default_factory=lambda: Histogram(COMMIT_BUCKETS))
    batch_changes: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    commit_failures: int = 0

    def committed(self, seconds: float, changes: int) -> None:
        """One transaction of `changes` changes took `seconds`."""
        self.commit_seconds.observe(seconds)
        self.batch_changes.observe(changes)
