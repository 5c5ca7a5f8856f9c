"""Figures $SYS and /metrics both report that `BrokerStats` does not hold itself.

Process memory comes from the kernel, cheaply: `/proc/self/statm` (one small read) for
the resident set size now, `getrusage` for its peak. Python has no allocator figure as
cheap as Mosquitto's own heap accounting (tracemalloc slows every allocation), so the
resident set size stands in for "heap".

MQTT packets of every type (`$SYS/broker/messages/received|sent`) are counted by the
core when `BrokerStats` has `packets_received` and `packets_sent`; until it does they
are reported as unknown (None) rather than as a wrong number.
"""

from __future__ import annotations

import os
import resource
import sys

from ..broker.stats import BrokerStats

__all__ = [
    "open_file_descriptors",
    "packet_counts",
    "peak_resident_memory_bytes",
    "process_figures",
    "resident_memory_bytes",
]

try:
    _PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):  # not a POSIX system
    _PAGE_SIZE = 0


def resident_memory_bytes() -> int | None:
    """The process's resident set size in bytes, or None where /proc is missing."""
    if not _PAGE_SIZE:
        return None
    try:
        with open("/proc/self/statm", "rb") as f:
            fields = f.read().split()
    except OSError:
        return None
    # statm: size resident shared text lib data dt, in pages.
    return int(fields[1]) * _PAGE_SIZE


def peak_resident_memory_bytes() -> int:
    """The largest resident set size the process has had, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kibibytes, macOS bytes.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def packet_counts(stats: BrokerStats) -> tuple[int, int] | None:
    """(received, sent) MQTT packets of every type, or None when the core does not count them."""
    received = getattr(stats, "packets_received", None)
    sent = getattr(stats, "packets_sent", None)
    if isinstance(received, int) and isinstance(sent, int):
        return received, sent
    return None


def open_file_descriptors() -> int | None:
    """How many file descriptors the process has open (sockets included), or None."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def process_figures(loop_lag: float | None = None) -> dict[str, float | int | None]:
    """CPU seconds, resident memory now and at peak, open fds, event-loop lag (seconds)."""
    times = os.times()
    rss = resident_memory_bytes()
    peak = peak_resident_memory_bytes()
    return {
        "cpu_seconds": round(times.user + times.system, 3),
        "resident_memory_bytes": rss,
        "peak_resident_memory_bytes": max(peak, rss or 0),
        "open_fds": open_file_descriptors(),
        "event_loop_lag_seconds": loop_lag,
    }
