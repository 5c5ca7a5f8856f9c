"""The catch-up after a break in a node's NATS link (mqttd/cluster/catchup.py), against a
fake messages stream: what it replays, in which order, and when live messages go on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from mqttd.cluster.catchup import CatchUp


@dataclass
class FakeMsg:
    data: bytes
    metadata: Any


@dataclass
class FakeMeta:
    num_pending: int


class FakeSub:
    """A pull consumer over the list of a subject's stored messages."""

    def __init__(self, stored: list[bytes]) -> None:
        self.stored = stored
        self.pos = 0
        self.closed = False

    async def fetch(self, batch: int, timeout: float) -> list[FakeMsg]:
        await asyncio.sleep(0)
        if self.pos >= len(self.stored):
            await asyncio.sleep(timeout)
            raise TimeoutError
        out = []
        for data in self.stored[self.pos : self.pos + batch]:
            self.pos += 1
            out.append(FakeMsg(data, FakeMeta(len(self.stored) - self.pos)))
        return out

    async def unsubscribe(self) -> None:
        self.closed = True


@dataclass
class FakeLog:
    """The messages stream by subject."""

    stored: dict[str, list[bytes]]
    message_prefix: str = "m"
    message_long: str = "m-long"
    opened: list[tuple[str, float]] = field(default_factory=list)
    subs: list[FakeSub] = field(default_factory=list)

    async def replay_from(self, subject: str, since: float) -> tuple[FakeSub, int]:
        self.opened.append((subject, since))
        sub = FakeSub(self.stored.setdefault(subject, []))
        self.subs.append(sub)
        return sub, len(sub.stored)


class FakeHost:
    """Routes each id once, and records what reached the core, in order."""

    def __init__(self, subjects: list[str]) -> None:
        self.subjects = subjects
        self.routed: list[bytes] = []
        self.held: list[bytes] | None = None

    def catch_up_subjects(self, prefix: str, long: str) -> list[str]:
        return [*self.subjects, long]

    def route(self, data: bytes) -> bool:
        if data in self.routed:
            return False
        self.routed.append(data)
        return True

    def live(self, data: bytes) -> None:
        if self.held is not None:
            self.held.append(data)
        else:
            self.route(data)

    def hold(self) -> None:
        if self.held is None:
            self.held = []

    def release(self) -> None:
        held, self.held = self.held, None
        for data in held or ():
            self.route(data)

    async def flush(self) -> None:
        await asyncio.sleep(0)


def catch_up(log: FakeLog, host: FakeHost) -> CatchUp:
    return CatchUp(log, host, hold_for=2.0, tail=0.6)  # type: ignore[arg-type]


async def wait_for(predicate: Any, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def test_lost_messages_go_first_then_the_held_live_ones_each_once() -> None:
    async def scenario() -> None:
        log = FakeLog({"m.a": [b"1", b"2", b"3", b"4"], "m.a.>": [b"2", b"x"]})
        host = FakeHost(["m.a", "m.a.>"])
        host.route(b"1")  # came live before the break
        replay = catch_up(log, host)
        replay.gap(100.0)
        # Held at once: a live message that comes now waits for the replay.
        host.live(b"5")
        assert host.routed == [b"1"]
        await wait_for(lambda: host.held is None)
        assert host.routed == [b"1", b"2", b"3", b"4", b"x", b"5"]
        assert replay.recovered == 4
        assert all(since == 100.0 for _, since in log.opened)
        # In the tail, a copy stored late is still routed; a duplicate is not.
        log.stored["m.a"] += [b"6", b"3"]
        await wait_for(lambda: b"6" in host.routed)
        await wait_for(lambda: not replay.running)
        assert host.routed.count(b"3") == 1
        assert all(sub.closed for sub in log.subs)

    asyncio.run(scenario())


def test_a_new_reconnection_starts_again_from_the_earlier_point_and_keeps_holding() -> None:
    async def scenario() -> None:
        log = FakeLog({"m.a": [b"1"]})
        host = FakeHost(["m.a"])
        replay = catch_up(log, host)
        replay.gap(100.0)
        await wait_for(lambda: host.held is None)  # first catch-up in its tail
        replay.gap(150.0)  # broken again
        assert host.held == []
        await wait_for(lambda: len(log.opened) >= 4)
        assert log.opened[-1][1] == 100.0  # from the earlier of the two
        await wait_for(lambda: not replay.running)
        assert replay.runs == 2
        assert host.held is None

    asyncio.run(scenario())


def test_messages_dropped_during_a_catch_up_extend_it_rather_than_restart_it() -> None:
    async def scenario() -> None:
        log = FakeLog({"m.a": [b"1"]})
        host = FakeHost(["m.a"])
        replay = catch_up(log, host)
        replay.gap(100.0)
        await wait_for(lambda: host.held is None)
        replay.gap(120.0, reconnected=False)
        assert host.held is None and replay.runs == 1
        log.stored["m.a"].append(b"dropped")
        await wait_for(lambda: b"dropped" in host.routed)
        await replay.close()
        assert replay.runs == 1

    asyncio.run(scenario())
