"""Keepalive lanes: deadline order without a timer per connection (keepalive.py)."""

from __future__ import annotations

from support.core import Harness

from mqttd.broker.clock import FakeClock
from mqttd.broker.keepalive import KeepaliveLane, KeepaliveLanes, Keeper
from mqttd.broker.scheduler import Scheduler
from mqttd.protocol import PingReq


class FakeConn:
    """A Keeper that records when it was told it expired, and closes then."""

    def __init__(self, name: str, expired: list[tuple[str, float]]) -> None:
        self.name = name
        self.keepalive_lane: KeepaliveLane | None = None
        self.keepalive_deadline = 0.0
        self.keepalive_prev: Keeper | None = None
        self.keepalive_next: Keeper | None = None
        self.expired = expired
        self.held = False

    def keepalive_expired(self, now: float) -> None:
        self.expired.append((self.name, now))
        assert self.keepalive_lane is not None
        if self.held:
            self.keepalive_lane.touch(self, now)
        else:
            self.keepalive_lane.remove(self)


def order(lane: KeepaliveLane) -> list[str]:
    names, conn = [], lane.head
    while conn is not None:
        assert isinstance(conn, FakeConn)
        names.append(conn.name)
        conn = conn.keepalive_next
    return names


def setup() -> tuple[FakeClock, Scheduler, KeepaliveLanes, list[tuple[str, float]]]:
    clock = FakeClock(start=0.0)
    scheduler = Scheduler(clock)
    return clock, scheduler, KeepaliveLanes(scheduler), []


def run(clock: FakeClock, scheduler: Scheduler, seconds: float) -> None:
    clock.advance(seconds)
    scheduler.run_due()


def test_each_connection_expires_at_its_own_deadline_with_one_timer_per_lane() -> None:
    clock, scheduler, lanes, expired = setup()
    a, b, c = (FakeConn(n, expired) for n in "abc")
    lanes.join(a, 10)  # due at 15
    run(clock, scheduler, 1.0)
    lanes.join(b, 10)  # due at 16
    run(clock, scheduler, 1.0)
    lanes.join(c, 10)  # due at 17
    assert len(lanes) == 1 and len(scheduler) == 1  # one lane, one timer
    run(clock, scheduler, 10.0)  # t = 12: a is touched, so due at 27 and last
    lane = a.keepalive_lane
    assert lane is not None
    lane.touch(a, clock.now())
    assert order(lane) == ["b", "c", "a"]
    run(clock, scheduler, 3.0)  # t = 15: a's old deadline, nobody is due
    assert expired == []
    run(clock, scheduler, 0.999)
    assert expired == []
    run(clock, scheduler, 0.001)  # t = 16
    assert expired == [("b", 16.0)]
    run(clock, scheduler, 1.0)  # t = 17
    assert expired == [("b", 16.0), ("c", 17.0)]
    run(clock, scheduler, 9.9)
    assert [name for name, _ in expired] == ["b", "c"]
    run(clock, scheduler, 0.1)  # t = 27
    assert [name for name, _ in expired] == ["b", "c", "a"]
    assert len(lanes) == 0 and len(scheduler) == 0  # the empty lane and its timer are gone


def test_touching_keeps_the_lane_in_deadline_order() -> None:
    clock, scheduler, lanes, expired = setup()
    conns = [FakeConn(str(i), expired) for i in range(6)]
    for conn in conns:
        lanes.join(conn, 4)
        run(clock, scheduler, 0.5)
    lane = conns[0].keepalive_lane
    assert lane is not None
    for i in (3, 0, 5, 3):  # the middle, the head, the tail, the same one again
        lane.touch(conns[i], clock.now())
        run(clock, scheduler, 0.1)
    assert order(lane) == ["1", "2", "4", "0", "5", "3"]
    deadlines = []
    walk: Keeper | None = lane.head
    while walk is not None:
        deadlines.append(walk.keepalive_deadline)
        walk = walk.keepalive_next
    assert deadlines == sorted(deadlines)
    assert lane.tail is conns[3] and len(lane) == 6


def test_removing_the_head_middle_and_tail_keeps_the_links() -> None:
    clock, scheduler, lanes, expired = setup()
    conns = [FakeConn(str(i), expired) for i in range(5)]
    for conn in conns:
        lanes.join(conn, 60)
    lane = conns[0].keepalive_lane
    assert lane is not None
    for i in (2, 0, 4):
        lane.remove(conns[i])
        assert conns[i].keepalive_lane is None
    assert order(lane) == ["1", "3"] and lane.tail is conns[3]
    lane.remove(conns[1])
    lane.remove(conns[3])
    assert lane.head is None and len(lanes) == 0 and len(scheduler) == 0
    run(clock, scheduler, 1000.0)
    assert expired == []


def test_a_connection_not_read_is_touched_again_and_stays() -> None:
    clock, scheduler, lanes, expired = setup()
    held = FakeConn("held", expired)
    held.held = True
    lanes.join(held, 2)  # due at 3, then every 3 s while held
    for _ in range(4):
        run(clock, scheduler, 3.0)
    assert expired == [("held", 3.0), ("held", 6.0), ("held", 9.0), ("held", 12.0)]
    assert held.keepalive_lane is not None and held.keepalive_deadline == 15.0
    held.held = False
    run(clock, scheduler, 3.0)
    assert held.keepalive_lane is None


def test_different_keep_alives_use_different_lanes() -> None:
    clock, scheduler, lanes, expired = setup()
    long, short = FakeConn("long", expired), FakeConn("short", expired)
    lanes.join(long, 100)
    lanes.join(short, 1)
    assert len(lanes) == 2
    run(clock, scheduler, 1.5)
    assert expired == [("short", 1.5)]
    run(clock, scheduler, 148.5)
    assert expired == [("short", 1.5), ("long", 150.0)]


def test_a_broker_keeps_no_timer_per_connection(harness: Harness) -> None:
    scheduler = harness.broker.scheduler
    harness.advance(0.0)
    before = len(scheduler)
    clients = [harness.connected(f"c{i}", keep_alive=30) for i in range(50)]
    harness.advance(0.0)
    # One lane timer for the fifty keepalives (connect timeouts are cancelled).
    assert len(scheduler) == before + 1
    assert len(harness.broker.keepalive) == 1
    harness.advance(40.0)
    clients[7].send(PingReq())
    harness.advance(5.1)  # 45.1 s: all but c7 were silent for 1.5 x 30 s
    assert [c.closed for c in clients] == [i != 7 for i in range(50)]
    assert harness.broker.stats.keepalive_timeouts == 49
    clients[7].disconnect()
    assert len(harness.broker.keepalive) == 0
