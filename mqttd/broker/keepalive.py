"""Keep Alive deadlines without a timer per connection [MQTT-3.1.2-24].

Theory of operation. A connected client silent for 1.5 x its Keep Alive is disconnected.
Every client with the same Keep Alive has the same grace `g`, and its deadline is always
"last packet + g". So if every packet moves its connection to the tail of one list per
grace (a `KeepaliveLane`), the list stays in deadline order by itself: the head is the
client silent longest, the next to expire. The list is intrusive (each `Connection`
holds its neighbours, `keepalive_prev` and `keepalive_next`): moving a connection to
the tail is a few attribute writes, nothing allocated, and a connection in a lane costs
two slots and its deadline (a float) instead of a `Timer`, its deadline and order, its
lane slot in the scheduler and a bound method (about 250 bytes an idle connection).

Each lane keeps one `Timer` in the broker's `Scheduler`, at (or before) its head's
deadline. When it runs, every head whose deadline has passed is told
(`keepalive_expired`), and the timer is set again for the new head. A head only gets
later (touched heads leave for the tail, new ones join at the tail with the latest
deadline), so the timer never needs to move earlier.

Deadlines are only ever set to "now + g" (`touch`), never further: a connection whose
reading the broker holds (throttle, back-pressure) is touched again when its deadline
passes, and when reading resumes, so the order holds and the pause is not counted as
the client's silence. Time comes from the scheduler's clock (FakeClock in the tests).
"""

from __future__ import annotations

from typing import Protocol

from .scheduler import Scheduler, Timer

__all__ = ["KeepaliveLane", "KeepaliveLanes", "Keeper"]


class Keeper(Protocol):
    """What a lane needs of a connection: its place and deadline, and what to tell it."""

    keepalive_lane: KeepaliveLane | None
    keepalive_deadline: float
    keepalive_prev: Keeper | None
    keepalive_next: Keeper | None

    def keepalive_expired(self, now: float) -> None:
        """The deadline passed: disconnect (leaving the lane), or `touch` to wait on."""
        ...


class KeepaliveLane:
    """The connections of one grace (1.5 x Keep Alive), least recently heard first."""

    __slots__ = ("_lanes", "grace", "head", "tail", "timer")

    def __init__(self, lanes: KeepaliveLanes, grace: float) -> None:
        self._lanes = lanes
        self.grace = grace
        self.head: Keeper | None = None
        self.tail: Keeper | None = None
        self.timer: Timer | None = None  # at or before the head's deadline

    def __len__(self) -> int:
        """The connections in the lane (walks it: for tests and introspection)."""
        count, conn = 0, self.head
        while conn is not None:
            count += 1
            conn = conn.keepalive_next
        return count

    def touch(self, conn: Keeper, now: float) -> None:
        """The client was heard at `now`: its deadline is now + grace, it goes last."""
        conn.keepalive_deadline = now + self.grace
        nxt = conn.keepalive_next
        if nxt is None:
            return  # already the tail
        prev = conn.keepalive_prev
        if prev is None:
            self.head = nxt
        else:
            prev.keepalive_next = nxt
        nxt.keepalive_prev = prev
        tail = self.tail
        assert tail is not None
        tail.keepalive_next = conn
        conn.keepalive_prev = tail
        conn.keepalive_next = None
        self.tail = conn

    def add(self, conn: Keeper, now: float) -> None:
        """Put a connection not in any lane at the tail, due at now + grace."""
        conn.keepalive_lane = self
        conn.keepalive_deadline = deadline = now + self.grace
        tail = self.tail
        conn.keepalive_prev = tail
        conn.keepalive_next = None
        if tail is None:
            self.head = conn
        else:
            tail.keepalive_next = conn
        self.tail = conn
        if self.timer is None:
            self.timer = self._lanes.scheduler.call_at(deadline, self._due)

    def remove(self, conn: Keeper) -> None:
        """Take a connection out of the lane (it closed); an empty lane is dropped."""
        prev, nxt = conn.keepalive_prev, conn.keepalive_next
        if prev is None:
            self.head = nxt
        else:
            prev.keepalive_next = nxt
        if nxt is None:
            self.tail = prev
        else:
            nxt.keepalive_prev = prev
        conn.keepalive_prev = conn.keepalive_next = None
        conn.keepalive_lane = None
        if self.head is None:
            self._drop()

    def _drop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._lanes.forget(self)

    def _due(self) -> None:
        self.timer = None
        now = self._lanes.scheduler.clock.now()
        conn = self.head
        while conn is not None and conn.keepalive_deadline <= now:
            conn.keepalive_expired(now)
            if self.head is conn and conn.keepalive_deadline <= now:
                self.remove(conn)  # neither closed nor touched: never loop on it
            conn = self.head
        if conn is not None:
            if self.timer is None:
                self.timer = self._lanes.scheduler.call_at(conn.keepalive_deadline, self._due)
        elif self._lanes.get(self.grace) is self:
            self._drop()


class KeepaliveLanes:
    """Every lane of the broker, by grace; `join` puts a connection in its lane."""

    __slots__ = ("_lanes", "scheduler")

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self._lanes: dict[float, KeepaliveLane] = {}

    def __len__(self) -> int:
        """The number of lanes (distinct Keep Alive values with a connection)."""
        return len(self._lanes)

    def get(self, grace: float) -> KeepaliveLane | None:
        """The lane of `grace`, if a connection is in it."""
        return self._lanes.get(grace)

    def join(self, conn: Keeper, keep_alive: int) -> None:
        """Start `conn`'s keepalive: disconnected after 1.5 x `keep_alive` s of silence."""
        grace = keep_alive * 1.5
        lane = self._lanes.get(grace)
        if lane is None:
            lane = self._lanes[grace] = KeepaliveLane(self, grace)
        lane.add(conn, self.scheduler.clock.now())

    def forget(self, lane: KeepaliveLane) -> None:
        """Drop an empty lane (it makes a new one when a connection joins again)."""
        if self._lanes.get(lane.grace) is lane:
            del self._lanes[lane.grace]
