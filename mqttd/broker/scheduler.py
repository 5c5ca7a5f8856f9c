"""One timer heap for the whole broker: keepalive, will delay, session expiry, retries.

Theory of operation. The core is free of I/O, so it cannot own an event loop timer per
connection. Instead every deadline lives in one `Scheduler`; the I/O layer asks
`next_deadline()`, sleeps until then (or until a packet arrives) and calls `run_due()`.
`on_earliest` lets the I/O layer hear when a newly scheduled timer becomes the earliest
one, so it can wake up sooner.

The heap holds entries ``(deadline, order, timer)``. `order` comes from one counter, so
timers with equal deadlines run in the order they were (re)scheduled, and tuples never
compare timers. Each pending timer owns exactly one *live* entry (the one whose order is
``timer._entry_order``); every other entry is garbage left behind by cancellation
or rescheduling and is dropped when it reaches the top (lazy deletion). When garbage
outnumbers live entries the heap is rebuilt, so cancelled timers cannot pile up.

Moving a deadline later is the hot case: a keepalive timer is re-armed by every packet
the client sends. `Timer.postpone` only writes two fields. The heap entry stays where it
was; when it reaches the top early, the scheduler sees the timer's deadline has moved
and pushes it again at its current deadline instead of running it. So a connection
costs at most one heap push per keepalive period, however many packets it sends.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable

from .clock import Clock

__all__ = ["Scheduler", "Timer"]

logger = logging.getLogger("mqttd.scheduler")

# Below this heap size compaction is not worth a rebuild.
_COMPACT_MIN = 64


class Timer:
    """A callback due at `when` (seconds on the scheduler's clock).

    Read `when` and `cancelled`, never assign them: move a timer with `postpone` or
    `reschedule`, stop it with `cancel`.
    """

    __slots__ = (
        "_entry_order",
        "_entry_when",
        "_order",
        "_scheduler",
        "callback",
        "cancelled",
        "when",
    )

    def __init__(
        self, scheduler: Scheduler, when: float, order: int, callback: Callable[[], None]
    ) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        # None once the timer has run or been cancelled.
        self._scheduler: Scheduler | None = scheduler
        self._order = order  # tie-break of the current deadline
        self._entry_when = when  # the live heap entry
        self._entry_order = order

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else "pending" if self.pending else "done"
        return f"<Timer when={self.when:.3f} {state} {self.callback!r}>"

    @property
    def pending(self) -> bool:
        """True until the timer has run or been cancelled."""
        return self._scheduler is not None

    def cancel(self) -> None:
        """Stop the timer. Idempotent; a no-op once the callback has run."""
        scheduler = self._scheduler
        if scheduler is None:
            return
        self.cancelled = True
        self._scheduler = None
        scheduler._live -= 1
        scheduler._maybe_compact()

    def postpone(self, when: float) -> None:
        """Move the deadline to `when` if that is later; O(1), no heap operation.

        An earlier or equal `when` is ignored (use `reschedule` to move a timer earlier).
        No-op once the timer has run or been cancelled.
        """
        if when > self.when and self._scheduler is not None:
            self.when = when
            self._order = next(self._scheduler._counter)

    def reschedule(self, when: float) -> None:
        """Move the deadline to `when`, earlier or later.

        Lazy (no heap push) when `when` is not before the timer's heap entry; otherwise
        a new entry is pushed and the old one becomes garbage. No-op once the timer has
        run or been cancelled.
        """
        scheduler = self._scheduler
        if scheduler is None:
            return
        order = next(scheduler._counter)
        self.when = when
        self._order = order
        if when < self._entry_when:
            scheduler._push(self)
            scheduler._maybe_compact()


class Scheduler:
    """Every timer of the broker in one heap, run by `run_due` against `clock.now()`."""

    __slots__ = ("_clock", "_counter", "_heap", "_live", "on_earliest")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        self._counter = itertools.count()
        self._live = 0
        #: Called with the deadline when a newly pushed timer becomes the earliest,
        #: so the I/O layer can re-arm its single wake-up. Not called by `postpone`
        #: (a later deadline never needs an earlier wake-up).
        self.on_earliest: Callable[[float], None] | None = None

    def __len__(self) -> int:
        """The number of pending timers (neither run nor cancelled)."""
        return self._live

    @property
    def clock(self) -> Clock:
        """The clock the deadlines are measured on."""
        return self._clock

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run `callback()` once `clock.now() >= when`."""
        timer = Timer(self, when, next(self._counter), callback)
        self._live += 1
        self._push(timer)
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run `callback()` `delay` seconds from now."""
        return self.call_at(self._clock.now() + delay, callback)

    def next_deadline(self) -> float | None:
        """The earliest pending deadline, or None when no timer is pending.

        Drops garbage and re-files postponed timers found at the top, so the answer is
        exact and the I/O layer never wakes up for a deadline that moved.
        """
        heap = self._heap
        while heap:
            when, order, timer = heap[0]
            if timer._scheduler is None or order != timer._entry_order:
                heapq.heappop(heap)
            elif timer._order != order:  # postponed: file it at its current deadline
                heapq.heapreplace(heap, (timer.when, timer._order, timer))
                timer._entry_when = timer.when
                timer._entry_order = timer._order
            else:
                return when
        return None

    def run_due(self) -> int:
        """Run every timer due at `clock.now()`, earliest first; return how many ran.

        Callbacks may schedule, move or cancel timers. A timer a callback schedules at
        or before the time this call started runs in this same call, so a callback that
        keeps re-scheduling itself with no delay never lets it return. An exception in a
        callback is logged and the remaining timers still run.
        """
        now = self._clock.now()
        heap = self._heap
        ran = 0
        while heap and heap[0][0] <= now:
            _, order, timer = heap[0]
            if timer._scheduler is None or order != timer._entry_order:
                heapq.heappop(heap)  # garbage
                continue
            if timer._order != order:
                # Postponed since this entry was pushed: file it again, don't run it.
                heapq.heapreplace(heap, (timer.when, timer._order, timer))
                timer._entry_when = timer.when
                timer._entry_order = timer._order
                continue
            heapq.heappop(heap)
            timer._scheduler = None
            self._live -= 1
            ran += 1
            try:
                timer.callback()
            except Exception:
                logger.exception("timer callback %r raised", timer.callback)
        return ran

    def _push(self, timer: Timer) -> None:
        heap = self._heap
        entry = (timer.when, timer._order, timer)
        timer._entry_when = timer.when
        timer._entry_order = timer._order
        heapq.heappush(heap, entry)
        if self.on_earliest is not None and heap[0] is entry:
            self.on_earliest(timer.when)

    def _maybe_compact(self) -> None:
        # Rebuild when garbage outnumbers live entries: amortised O(1) per cancel, and
        # the heap never holds more than about twice the pending timers.
        heap = self._heap
        if len(heap) <= _COMPACT_MIN or len(heap) <= 2 * self._live:
            return
        live = [
            (t.when, t._order, t)
            for _, order, t in heap
            if t._scheduler is not None and order == t._entry_order
        ]
        for _, _, t in live:
            t._entry_when = t.when
            t._entry_order = t._order
        # In place: run_due holds a reference to this list.
        heap[:] = live
        heapq.heapify(heap)
