"""The timer heap and the clocks: order, cancel, postpone, re-entrancy, isolation."""

from __future__ import annotations

import functools
import logging
import time

import pytest

from mqttd.broker.clock import Clock, FakeClock, MonotonicClock
from mqttd.broker.scheduler import Scheduler, Timer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sched(clock: FakeClock) -> Scheduler:
    return Scheduler(clock)


def entries(sched: Scheduler) -> int:
    """Heap entries plus lane entries, live or garbage: what the scheduler holds."""
    return len(sched._heap) + sum(len(lane) for lane in sched._lanes.values())


# --- clocks ---------------------------------------------------------------------------


def test_fake_clock_moves_now_and_wall_together() -> None:
    clock = FakeClock(start=5.0, wall_start=1_000_000.0)
    assert (clock.now(), clock.wall()) == (5.0, 1_000_000.0)
    clock.advance(2.5)
    assert (clock.now(), clock.wall()) == (7.5, 1_000_002.5)
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert FakeClock().now() == 1000.0


def test_monotonic_clock_reads_the_system_clocks() -> None:
    clock: Clock = MonotonicClock()
    a = clock.now()
    assert clock.now() >= a
    assert abs(clock.wall() - time.time()) < 5


# --- ordering -------------------------------------------------------------------------


def test_runs_only_due_timers_in_deadline_order(clock: FakeClock, sched: Scheduler) -> None:
    log: list[str] = []
    sched.call_later(3, lambda: log.append("c"))
    sched.call_later(1, lambda: log.append("a"))
    sched.call_later(2, lambda: log.append("b"))
    sched.call_at(clock.now() + 10, lambda: log.append("late"))
    assert len(sched) == 4
    assert sched.next_deadline() == clock.now() + 1
    assert sched.run_due() == 0
    clock.advance(3)
    assert sched.run_due() == 3
    assert log == ["a", "b", "c"]
    assert len(sched) == 1
    assert sched.next_deadline() == 1010.0
    clock.advance(7)
    assert sched.run_due() == 1
    assert log[-1] == "late"
    assert sched.next_deadline() is None
    assert len(sched) == 0


def test_equal_deadlines_run_in_scheduling_order(clock: FakeClock, sched: Scheduler) -> None:
    log: list[int] = []
    for i in range(20):
        sched.call_at(1005.0, functools.partial(log.append, i))
    clock.advance(5)
    sched.run_due()
    assert log == list(range(20))


# --- cancel ---------------------------------------------------------------------------


def test_cancel_is_idempotent_and_stops_the_callback(clock: FakeClock, sched: Scheduler) -> None:
    log: list[str] = []
    t = sched.call_later(1, lambda: log.append("x"))
    keep = sched.call_later(1, lambda: log.append("kept"))
    assert t.pending and not t.cancelled
    t.cancel()
    t.cancel()
    assert t.cancelled and not t.pending
    assert len(sched) == 1
    clock.advance(1)
    assert sched.run_due() == 1
    assert log == ["kept"]
    # Cancelling after the run changes nothing.
    keep.cancel()
    assert not keep.cancelled and not keep.pending
    assert len(sched) == 0


def test_next_deadline_skips_cancelled_timers(clock: FakeClock, sched: Scheduler) -> None:
    first = sched.call_later(1, lambda: None)
    sched.call_later(4, lambda: None)
    first.cancel()
    assert sched.next_deadline() == 1004.0


def test_heap_is_compacted_when_most_timers_are_cancelled(sched: Scheduler) -> None:
    timers = [sched.call_later(i, lambda: None) for i in range(1000)]
    for t in timers[:900]:
        t.cancel()
    assert len(sched) == 100
    assert entries(sched) <= 2 * len(sched)
    # Cancelling everything leaves a small heap, not 1000 dead entries.
    for t in timers[900:]:
        t.cancel()
    assert entries(sched) <= 64
    assert sched.next_deadline() is None


def test_a_connection_storm_keeps_few_cancelled_connect_timeouts(sched: Scheduler) -> None:
    # Each connection: a connect timeout, cancelled by its CONNECT, then a keepalive.
    # The cancelled ones (a Timer each, about 150 bytes) must not wait in their lane
    # until their deadline: at most half as many as the live timers stay.
    for _ in range(10_000):
        connect = sched.call_later(10, lambda: None)
        connect.cancel()
        sched.call_later(90, lambda: None)
    assert len(sched) == 10_000
    assert entries(sched) <= 1.5 * len(sched)


# --- postpone / reschedule ------------------------------------------------------------


def test_postpone_moves_the_deadline_without_heap_pushes(
    clock: FakeClock, sched: Scheduler
) -> None:
    log: list[float] = []
    keepalive = sched.call_later(15, lambda: log.append(clock.now()))
    for _ in range(1000):  # a packet every 10 ms re-arms the keepalive
        clock.advance(0.01)
        keepalive.postpone(clock.now() + 15)
        assert entries(sched) == 1
    deadline = keepalive.when
    assert deadline == pytest.approx(1025.0)
    clock.advance(14.99)  # past the first deadline (1015), before the current one
    assert sched.run_due() == 0
    assert log == []
    assert sched.next_deadline() == deadline
    clock.advance(0.01)
    assert sched.run_due() == 1
    assert log == [clock.now()]


def test_postpone_ignores_an_earlier_deadline(clock: FakeClock, sched: Scheduler) -> None:
    t = sched.call_later(10, lambda: None)
    t.postpone(clock.now() + 5)
    assert t.when == 1010.0
    clock.advance(5)
    assert sched.run_due() == 0


def test_postponed_timer_runs_after_timers_already_at_that_deadline(
    clock: FakeClock, sched: Scheduler
) -> None:
    log: list[str] = []
    a = sched.call_at(1005.0, lambda: log.append("a"))
    sched.call_at(1010.0, lambda: log.append("b"))
    a.postpone(1010.0)
    clock.advance(10)
    assert sched.run_due() == 2
    assert log == ["b", "a"]


def test_reschedule_moves_earlier_or_later(clock: FakeClock, sched: Scheduler) -> None:
    log: list[str] = []
    early = sched.call_later(10, lambda: log.append("early"))
    late = sched.call_later(2, lambda: log.append("late"))
    early.reschedule(1001.0)
    late.reschedule(1020.0)
    assert sched.next_deadline() == 1001.0
    clock.advance(1)
    assert sched.run_due() == 1
    assert log == ["early"]
    clock.advance(10)
    assert sched.run_due() == 0
    clock.advance(9)
    assert sched.run_due() == 1
    assert log == ["early", "late"]
    assert len(sched) == 0


def test_moving_a_finished_timer_does_nothing(clock: FakeClock, sched: Scheduler) -> None:
    log: list[str] = []
    t = sched.call_later(1, lambda: log.append("x"))
    clock.advance(1)
    sched.run_due()
    t.postpone(2000.0)
    t.reschedule(1001.5)
    assert len(sched) == 0
    clock.advance(1)
    assert sched.run_due() == 0
    assert log == ["x"]


# --- re-entrancy and errors -----------------------------------------------------------


def test_callbacks_may_schedule_and_cancel_during_run_due(
    clock: FakeClock, sched: Scheduler
) -> None:
    log: list[str] = []
    victim: list[Timer] = []

    def first() -> None:
        log.append("first")
        sched.call_at(clock.now(), lambda: log.append("due now"))
        sched.call_later(5, lambda: log.append("future"))
        victim[0].cancel()

    sched.call_later(1, first)
    victim.append(sched.call_later(1, lambda: log.append("victim")))
    sched.call_later(1, lambda: log.append("third"))
    clock.advance(1)
    assert sched.run_due() == 3
    assert log == ["first", "third", "due now"]
    assert len(sched) == 1
    clock.advance(5)
    assert sched.run_due() == 1
    assert log[-1] == "future"


def test_a_failing_callback_is_logged_and_does_not_stop_others(
    clock: FakeClock, sched: Scheduler, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    sched.call_later(1, lambda: log.append("before"))
    sched.call_later(1, boom)
    sched.call_later(1, lambda: log.append("after"))
    clock.advance(1)
    with caplog.at_level(logging.ERROR, logger="mqttd.scheduler"):
        assert sched.run_due() == 3
    assert log == ["before", "after"]
    [record] = caplog.records
    assert record.name == "mqttd.scheduler"
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert len(sched) == 0


def test_on_earliest_reports_new_earliest_deadlines(clock: FakeClock, sched: Scheduler) -> None:
    seen: list[float] = []
    sched.on_earliest = seen.append
    sched.call_at(1010.0, lambda: None)
    sched.call_at(1020.0, lambda: None)  # not earlier: no report
    t = sched.call_at(1005.0, lambda: None)
    t.postpone(1030.0)  # later: no report
    t.reschedule(1001.0)
    assert seen == [1010.0, 1005.0, 1001.0]


# --- lanes: timers with one delay wait in a FIFO, not the heap -------------------------


def test_same_delay_timers_use_a_lane_and_run_in_order_with_heap_timers(
    clock: FakeClock, sched: Scheduler
) -> None:
    log: list[str] = []
    for i in range(5):
        sched.call_later(10, functools.partial(log.append, f"lane{i}"))
        clock.advance(1)
    sched.call_at(clock.now() + 5.5, functools.partial(log.append, "heap"))  # due at 1010.5
    assert len(sched._heap) == 1 and len(sched) == 6
    assert sched.next_deadline() == 1010.0
    clock.advance(100)
    assert sched.run_due() == 6
    assert log == ["lane0", "heap", "lane1", "lane2", "lane3", "lane4"]


def test_cancelled_lane_timer_lets_go_of_its_callback_and_is_skipped(
    clock: FakeClock, sched: Scheduler
) -> None:
    class Owner:
        def fire(self) -> None:
            raise AssertionError("cancelled timer ran")

    owner = Owner()
    timer = sched.call_later(30, owner.fire)
    later = sched.call_later(30, lambda: None)
    timer.cancel()
    assert timer.callback is not owner.fire  # the bound method (and its owner) is freed
    assert sched.next_deadline() == later.when
    clock.advance(30)
    assert sched.run_due() == 1


def test_postponed_lane_head_moves_to_the_tail_and_an_earlier_reschedule_to_the_heap(
    clock: FakeClock, sched: Scheduler
) -> None:
    log: list[str] = []
    a = sched.call_later(10, functools.partial(log.append, "a"))
    clock.advance(1)
    b = sched.call_later(10, functools.partial(log.append, "b"))  # due 1011
    a.postpone(clock.now() + 10)  # 1011, after b in time order of filing
    b.reschedule(clock.now() + 2)  # 1003: earlier than its lane entry, goes to the heap
    assert sched.next_deadline() == 1003.0
    clock.advance(2)
    assert sched.run_due() == 1 and log == ["b"]
    clock.advance(7)  # 1010: a's first deadline has passed, its current one has not
    assert sched.run_due() == 0
    clock.advance(1)
    assert sched.run_due() == 1 and log == ["b", "a"]


def test_a_new_lane_timer_that_becomes_the_earliest_wakes_the_driver(
    clock: FakeClock, sched: Scheduler
) -> None:
    woken: list[float] = []
    sched.on_earliest = woken.append
    sched.call_at(1050.0, lambda: None)
    sched.call_later(10, lambda: None)
    sched.call_later(10, lambda: None)  # not the earliest: the lane's head is
    assert woken == [1050.0, 1010.0]


def test_lanes_and_heap_together_run_each_timer_once_on_time_and_never_when_cancelled(
    clock: FakeClock, sched: Scheduler
) -> None:
    """Random call_later / call_at / cancel / postpone / reschedule against a plain model."""
    import random

    rng = random.Random(7)
    expected: dict[int, float] = {}  # timer number -> current deadline, while pending
    ran: list[int] = []
    timers: dict[int, Timer] = {}

    def fire(n: int) -> None:
        assert clock.now() >= expected[n]
        ran.append(n)
        del expected[n]

    for n in range(20_000):
        op = rng.random()
        if op < 0.35:
            delay = rng.choice([10.0, 30.0, 45.0, 7.5])
            t = sched.call_later(delay, functools.partial(fire, n))
        elif op < 0.4:
            t = sched.call_at(clock.now() + rng.random() * 40, functools.partial(fire, n))
        else:
            t = None
        if t is not None:
            timers[n], expected[n] = t, t.when
            continue
        pending = [k for k in expected if k in timers]
        if op < 0.55 and pending:
            k = rng.choice(pending)
            timers[k].cancel()
            del expected[k]
        elif op < 0.7 and pending:
            k = rng.choice(pending)
            timers[k].postpone(clock.now() + rng.choice([10.0, 30.0]))
            expected[k] = timers[k].when
        elif op < 0.75 and pending:
            k = rng.choice(pending)
            timers[k].reschedule(clock.now() + rng.random() * 20)
            expected[k] = timers[k].when
        elif op < 0.9:
            clock.advance(rng.random())
            sched.run_due()
            assert all(when > clock.now() for when in expected.values())
        else:
            nxt = sched.next_deadline()
            assert nxt == (min(expected.values()) if expected else None)
        assert len(sched) == len(expected)
    clock.advance(1000)
    sched.run_due()
    assert not expected and len(ran) == len(set(ran))
