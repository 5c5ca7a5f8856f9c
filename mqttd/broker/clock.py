"""Time as an object handed to the core, so timers are tested without sleeping.

The broker core never calls `time` itself: keepalive, will delay, session and message
expiry and retries all read a `Clock`. Production uses `MonotonicClock`; tests use
`FakeClock` and move time by hand (the aioquic approach of an injected `now`).
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "MonotonicClock"]


class Clock(Protocol):
    """A source of time: `now` for deadlines, `wall` for what is written to disk."""

    def now(self) -> float:
        """Seconds on a monotonic clock; only differences are meaningful."""
        ...

    def wall(self) -> float:
        """Unix time in seconds, for persisted timestamps (expiry across restarts)."""
        ...


class MonotonicClock:
    """The real clock: `time.monotonic` for deadlines, `time.time` for the wall."""

    __slots__ = ()

    def now(self) -> float:
        """`time.monotonic()`."""
        return time.monotonic()

    def wall(self) -> float:
        """`time.time()`."""
        return time.time()


class FakeClock:
    """A clock that moves only when told to; `now` and `wall` advance together.

    Shipped in the package on purpose, though no production code uses it: whoever embeds
    the core (a plugin author, a test suite, `scripts/profile_core.py`) drives keepalive,
    expiry and retries with it without sleeping, as mqttd's own tests do.
    """

    __slots__ = ("_now", "_wall_offset")

    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0) -> None:
        """Start at monotonic `start`, when the wall clock reads `wall_start`."""
        self._now = start
        self._wall_offset = wall_start - start

    def now(self) -> float:
        """The current fake monotonic time."""
        return self._now

    def wall(self) -> float:
        """The current fake Unix time."""
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` (a monotonic clock never goes back)."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self._now += seconds
