"""Interpreter settings for a long-running broker process (called once by `app.run`).

The cyclic garbage collector. CPython starts a young-generation collection every 700
net allocations of container objects. A broker allocates several per message (the
decoded packet, the `Message`, one `Outbound` per QoS 1/2 receiver, acknowledgements),
and queued messages live just long enough to survive a few collections, so each is
scanned again as it is promoted to the older generations. Measured with
`scripts/profile_ab.py` on fan-in QoS 1 (4 publishers -> 1 subscriber, 64-byte payloads),
raising the thresholds to (10000, 10, 10) made the broker deliver 38 % more messages
per CPU-second, and it took 15 % less CPU per new connection; (50000, 50, 100) did no
better. Reference cycles (a closed connection and its session, timers' callbacks) are
still collected, only in larger batches: a few megabytes of garbage at most.

Tests that run the broker in-process keep the interpreter's defaults: only the `mqttd`
command calls `tune_gc`.
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLDS", "tune_gc"]

#: Collector thresholds for generations 0, 1 and 2 (CPython's defaults: 700, 10, 10).
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    """Set the garbage collector's thresholds for a broker process (see the module doc)."""
    gc.set_threshold(*GC_THRESHOLDS)
