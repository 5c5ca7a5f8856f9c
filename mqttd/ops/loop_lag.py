"""Event-loop lag: how late the loop runs a callback that was due, sampled twice a second.

A broker whose loop is busy (a huge fan-out, a slow admin page, a blocking call) answers
every client late; this is the figure that shows it. The monitor sleeps `INTERVAL` and
measures how much longer the sleep took; `lag` is the last sample, `max_lag` the largest
since the previous `take_max` (so a scrape every 15 s still sees a short spike).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

__all__ = ["INTERVAL", "LoopLagMonitor"]

INTERVAL = 0.5  # seconds between samples


class LoopLagMonitor:
    """Samples the running loop's lag in a task of its own (`start`/`stop`)."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.lag = 0.0  # seconds, last sample
        self.max_lag = 0.0  # seconds, largest since take_max
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin sampling on the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="mqttd-loop-lag")

    async def stop(self) -> None:
        """Stop sampling."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def take_max(self) -> float:
        """The largest lag since the last call, then start over from the current one."""
        peak, self.max_lag = max(self.max_lag, self.lag), self.lag
        return peak

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.lag = max(0.0, time.perf_counter() - before - self.interval)
            self.max_lag = max(self.max_lag, self.lag)
