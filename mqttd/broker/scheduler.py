"""One timer heap for the whole broker: connect timeouts, will delay, session expiry, ...

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
passes half the live entries the heap is rebuilt, so cancelled timers cannot pile up.

Moving a deadline later is a common case (a throttled publisher's pause grows with
every packet of a read). `Timer.postpone` only writes two fields. The heap entry stays
where it was; when it reaches the top early, the scheduler sees the timer's deadline
has moved and pushes it again at its current deadline instead of running it. So a
timer costs at most one heap push per delay, however often it is postponed.
(Keepalives have no timer each: keepalive.py keeps one per lane of connections.)

Lanes: most timers are set with one of a few fixed delays (every connection's connect
timeout, every retry of one kind). Timers made by `call_later` with the same
delay come due in the order they were made, so they need no heap: they wait in a FIFO
*lane* per delay (a deque of timers, no tuple per entry), and the scheduler looks only
at each lane's head. That makes the connect timeout of a connection storm one append
and one lazy pop instead of a heap push and a heap entry kept until compaction, and an
idle connection's timers cost no heap tuples. A lane's head that was postponed goes to
the lane's tail when its new deadline keeps the lane in order (a timer postponed by
its own delay always does), else to the heap; `reschedule` to an earlier time moves a
timer to the heap. Delays beyond the first `_MAX_LANES` distinct ones use the heap.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable

from .clock import Clock

__all__ = ["Scheduler", "Timer"]

logger = logging.getLogger("mqttd.scheduler")

# Below this heap size compaction is not worth a rebuild.
_COMPACT_MIN = 64

# Distinct `call_later` delays that get a FIFO lane; later ones use the heap.
_MAX_LANES = 16


class Lane(deque["Timer"]):
    """Timers made with one delay, in the order of their entry deadlines.

    Entries whose timer was cancelled, ran, or moved to the heap stay until they reach
    the head (or a compaction); such a timer's `_entry_when` may describe its heap entry
    by then, so the lane keeps the deadline of its last append itself (`last`) for the
    order check of the next one.
    """

    __slots__ = ("last",)

    def __init__(self) -> None:
        super().__init__()
        self.last = float("-inf")

    def add(self, timer: Timer) -> None:
        """Append a timer whose entry deadline is not before `last`."""
        self.append(timer)
        self.last = timer._entry_when


def _noop() -> None:
    """The callback of a timer that has run or was cancelled: it holds nothing alive."""


class Timer:
    """A callback due at `when` (seconds on the scheduler's clock).

    Read `when` and `cancelled`, never assign them: move a timer with `postpone` or
    `reschedule`, stop it with `cancel`.
    """

    __slots__ = (
        "_entry_order",
        "_entry_when",
        "_lane",
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
        self._entry_when = when  # the live heap or lane entry
        self._entry_order = order
        self._lane: Lane | None = None  # the lane holding the live entry, if any

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
        # A cancelled timer may wait in a lane until its deadline: drop what its
        # callback holds (a bound method keeps its connection alive) now.
        self.callback = _noop
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
            self._lane = None  # its lane entry, if any, becomes garbage
            scheduler._push(self)
            scheduler._maybe_compact()


class Scheduler:
    """Every timer of the broker in one heap, run by `run_due` against `clock.now()`."""

    __slots__ = ("_clock", "_counter", "_heap", "_lane_entries", "_lanes", "_live", "on_earliest")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        self._counter = itertools.count()
        self._lanes: dict[float, Lane] = {}
        self._lane_entries = 0  # entries in all lanes, live or garbage
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
        when = self._clock.now() + delay
        lane = self._lanes.get(delay)
        if lane is None:
            if len(self._lanes) >= _MAX_LANES:
                return self.call_at(when, callback)
            lane = self._lanes[delay] = Lane()
        # Only a lane without live entries can get a new earliest deadline. (Settling
        # the head first also lets a postponed head move to the tail before `last` is
        # compared.)
        notify = self.on_earliest is not None and self._settle_lane(lane) is None
        if lane.last > when:  # a head filed later than this deadline: keep the order
            return self.call_at(when, callback)
        timer = Timer(self, when, next(self._counter), callback)
        self._live += 1
        timer._lane = lane
        lane.add(timer)
        self._lane_entries += 1
        if notify and self.on_earliest is not None and when <= self._earliest_other(lane):
            self.on_earliest(when)
        return timer

    def _earliest_other(self, skip: Lane) -> float:
        """The earliest heap entry or live lane head outside `skip` (heap garbage included:
        a lower bound, which at worst wakes the I/O layer early)."""
        best = self._heap[0][0] if self._heap else float("inf")
        for lane in self._lanes.values():
            if lane is not skip:
                head = self._settle_lane(lane)
                if head is not None and head._entry_when < best:
                    best = head._entry_when
        return best

    def _settle_lane(self, lane: Lane) -> Timer | None:
        """Drop garbage and re-file postponed timers at a lane's head; return the head."""
        while lane:
            timer = lane[0]
            if timer._scheduler is None or timer._lane is not lane:
                lane.popleft()
                self._lane_entries -= 1
            elif timer.when != timer._entry_when:  # postponed since it was filed
                lane.popleft()
                if lane.last > timer.when:
                    self._lane_entries -= 1
                    timer._lane = None
                    self._push(timer)
                else:
                    timer._entry_when = timer.when
                    timer._entry_order = timer._order
                    lane.add(timer)
            else:
                return timer
        return None

    def next_deadline(self) -> float | None:
        """The earliest pending deadline, or None when no timer is pending.

        Drops garbage and re-files postponed timers found at the top, so the answer is
        exact and the I/O layer never wakes up for a deadline that moved.
        """
        best: float | None = None
        for lane in self._lanes.values():
            head = self._settle_lane(lane)
            if head is not None and (best is None or head.when < best):
                best = head.when
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
                return when if best is None or when < best else best
        return best

    def _due_from_lanes(self, now: float) -> None:
        """Move every lane timer due at `now` into the heap, where `run_due` runs it in
        deadline order with the rest."""
        for lane in self._lanes.values():
            while True:
                head = self._settle_lane(lane)
                if head is None or head.when > now:
                    break
                lane.popleft()
                self._lane_entries -= 1
                head._lane = None
                self._push(head, notify=False)

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
        if self._lanes:
            self._due_from_lanes(now)
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
            callback, timer.callback = timer.callback, _noop
            try:
                callback()
            except Exception:
                logger.exception("timer callback %r raised", callback)
            if self._lanes and heap is self._heap:
                # A callback may have made lane timers that are due already.
                self._due_from_lanes(now)
        return ran

    def _push(self, timer: Timer, notify: bool = True) -> None:
        heap = self._heap
        entry = (timer.when, timer._order, timer)
        timer._entry_when = timer.when
        timer._entry_order = timer._order
        heapq.heappush(heap, entry)
        if notify and self.on_earliest is not None and heap[0] is entry:
            self.on_earliest(timer.when)

    def _maybe_compact(self) -> None:
        # Rebuild when garbage passes half the live entries: amortised O(1) per cancel
        # (each rebuild follows at least live/2 cancels), and the heap and lanes never
        # hold more than about 1.5 times the pending timers. Half rather than all: in a
        # connection storm every connection leaves a cancelled connect timeout in its
        # lane, a Timer of about 150 bytes per idle connection until its deadline.
        heap = self._heap
        held = len(heap) + self._lane_entries
        if held <= _COMPACT_MIN or 2 * held <= 3 * self._live:
            return
        self._lane_entries = 0
        for lane in self._lanes.values():
            if lane:
                kept = [t for t in lane if t._scheduler is not None and t._lane is lane]
                lane.clear()  # in place: timers know their lane by identity
                lane.extend(kept)  # `last` stays: the order check needs no more
                self._lane_entries += len(kept)
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
