"""A node's JetStream requests run concurrently across client ids and retained topics
and in order within one (cluster/requests.py), driven through the NATS backplane's own
claim, release and retained code with a fake KV bucket in place of JetStream."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats import errors as nats_errors
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

import mqttd.cluster.backplane as backplane_module
from mqttd.broker.clock import MonotonicClock
from mqttd.broker.message import Message
from mqttd.cluster.backplane import NatsBackplane, _kv_key
from mqttd.cluster.envelope import decode_envelope
from mqttd.cluster.requests import KeyedRequests
from mqttd.config import ClusterConfig
from mqttd.store.base import StoredState


@dataclass
class Entry:
    value: bytes
    revision: int


class FakeKV:
    """A KV bucket with JetStream's compare-and-set rules. Each call first passes
    `pause(key)` (a few event-loop turns, or a gate the test holds), and is logged per
    key as "op:outcome"."""

    def __init__(self, pause: Callable[[str], int] | None = None) -> None:
        self.entries: dict[str, Entry] = {}
        self.revision = 0
        self.log: dict[str, list[str]] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.failures: dict[str, int] = {}  # key -> calls still to fail (NATS away)
        self.running = 0
        self._turns = pause

    async def _enter(self, key: str, op: str) -> None:
        self.running += 1
        try:
            gate = self.gates.get(key)
            if gate is not None:
                await gate.wait()
            turns = self._turns(key) if self._turns is not None else 0
            for _ in range(turns):
                await asyncio.sleep(0)
        finally:
            self.running -= 1
        left = self.failures.get(key, 0)
        if left:
            self.failures[key] = left - 1
            self._note(key, f"{op}:unreachable")
            raise nats_errors.TimeoutError

    def _note(self, key: str, what: str) -> None:
        self.log.setdefault(key, []).append(what)

    def _write(self, key: str, value: bytes) -> int:
        self.revision += 1
        self.entries[key] = Entry(value, self.revision)
        return self.revision

    async def get(self, key: str) -> Entry:
        await self._enter(key, "get")
        entry = self.entries.get(key)
        self._note(key, "get:" + ("found" if entry else "missing"))
        if entry is None:
            raise KeyNotFoundError
        return entry

    async def create(self, key: str, value: bytes) -> int:
        await self._enter(key, "create")
        if key in self.entries:
            self._note(key, "create:conflict")
            raise KeyWrongLastSequenceError
        self._note(key, "create:ok")
        return self._write(key, value)

    async def update(self, key: str, value: bytes, last: int) -> int:
        await self._enter(key, "update")
        entry = self.entries.get(key)
        if entry is None or entry.revision != last:
            self._note(key, "update:conflict")
            raise KeyWrongLastSequenceError
        self._note(key, "update:ok")
        return self._write(key, value)

    async def delete(self, key: str, last: int) -> None:
        await self._enter(key, "delete")
        entry = self.entries.get(key)
        if entry is None or entry.revision != last:
            self._note(key, "delete:conflict")
            raise KeyWrongLastSequenceError
        self._note(key, "delete:ok")
        del self.entries[key]

    async def put(self, key: str, value: bytes) -> int:
        await self._enter(key, "put")
        self._note(key, "put:" + decode_envelope(value).payload.decode())
        return self._write(key, value)


class FakeMover:
    """The takeover handshake: `hand_over` waits while the test holds the old node."""

    def __init__(self) -> None:
        self.stuck: dict[str, asyncio.Event] = {}
        self.asked: list[str] = []
        self.log = None

    async def hand_over(self, owner: str, client_id: str, token: int) -> None:
        self.asked.append(client_id)
        gate = self.stuck.get(client_id)
        if gate is not None:
            await gate.wait()

    async def bring_over(
        self, client_id: str, clean_start: bool
    ) -> tuple[StoredState | None, list[bytes]]:
        return None, []


class FakeHost:
    def __init__(self) -> None:
        self.taken: list[str] = []

    def client_id_taken_elsewhere(self, client_id: str) -> None:
        self.taken.append(client_id)


def node(kv: FakeKV, limit: int = 64) -> tuple[NatsBackplane, FakeMover]:
    """A NATS backplane on `kv` (as clients and retained bucket), running requests."""
    backplane = NatsBackplane(ClusterConfig(enabled=True, name="t", node="a"), MonotonicClock())
    mover = FakeMover()
    backplane._clients = kv  # type: ignore[assignment]
    backplane._retained = kv  # type: ignore[assignment]
    backplane.mover = mover  # type: ignore[assignment]
    backplane.bind(FakeHost())  # type: ignore[arg-type]
    backplane.requests = KeyedRequests(limit)
    backplane.requests.start()
    return backplane, mover


async def until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.001)


def held_by(node_name: str) -> bytes:
    return json.dumps({"node": node_name, "boot": 1, "life": "x"}).encode()


async def test_a_slow_takeover_holds_up_its_own_client_id_only() -> None:
    kv = FakeKV()
    backplane, mover = node(kv)
    kv.entries[_kv_key("slow")] = Entry(held_by("b"), 1)
    kv.revision = 1
    mover.stuck["slow"] = asyncio.Event()  # node b does not let "slow" go
    answered: dict[str, list[int]] = {}

    def claim(client_id: str) -> None:
        backplane.claim_client_id(client_id, True, answered.setdefault(client_id, []).append)

    claim("slow")
    backplane.release_client_id("slow")
    claim("slow")
    others = [f"c{i}" for i in range(50)]
    for client_id in others:
        claim(client_id)
    await until(lambda: all(answered.get(c) == [0] for c in others))
    assert answered["slow"] == []
    assert backplane.requests.max_running > 1
    # The release and the second claim of "slow" wait for its first claim.
    assert kv.log[_kv_key("slow")] == ["get:found", "update:ok"]
    mover.stuck["slow"].set()
    await until(lambda: answered["slow"] == [0, 0])
    assert kv.log[_kv_key("slow")] == [
        "get:found",
        "update:ok",
        "delete:ok",
        "get:missing",
        "create:ok",
    ]
    assert backplane.claims.token("slow") == kv.entries[_kv_key("slow")].revision
    await until(lambda: not backplane.requests.busy)


async def test_a_request_that_meets_no_nats_is_tried_again_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backplane_module, "_RETRY_FOR", 1.0)
    kv = FakeKV()
    backplane, _ = node(kv)
    away, fine, gone = _kv_key("away"), _kv_key("fine"), _kv_key("gone")
    kv.failures[away] = 2  # JetStream back after two tries
    kv.failures[gone] = 1000  # never back
    answered: list[tuple[str, int]] = []

    def answer(client_id: str) -> Callable[[int], None]:
        return lambda code: answered.append((client_id, code))

    for client_id in ("away", "gone", "fine"):
        backplane.claim_client_id(client_id, True, answer(client_id))
    backplane.release_client_id("away")
    await until(lambda: len(answered) == 3)
    # "fine" does not wait for the others' retries; "away" is answered once back, and
    # its release comes after its claim; "gone" is given up, served unfenced.
    assert [c for c, _ in answered] == ["fine", "away", "gone"]
    assert all(code == 0 for _, code in answered)
    assert kv.log[away][:2] == ["get:unreachable", "get:unreachable"]
    await until(lambda: not backplane.requests.busy)
    assert kv.log[away][2:] == ["get:missing", "create:ok", "delete:ok"]
    assert backplane.claims.token("gone") == 0 and gone not in kv.entries
    assert kv.log[fine] == ["get:missing", "create:ok"]


Op = tuple[str, int]  # ("claim" | "release" | "retain" | "wait", index)

ops = st.lists(
    st.tuples(st.sampled_from(["claim", "release", "retain", "wait"]), st.integers(0, 3)),
    min_size=1,
    max_size=60,
)


def retained_message(topic: str, n: int) -> Message:
    return Message(topic, str(n).encode(), 0, True, None, None, None)


async def run_ops(program: list[Op], limit: int, seed: int | None) -> dict[str, object]:
    """Run `program` on a node; what each key saw, in the order it saw it."""
    rng = random.Random(seed)
    kv = FakeKV(None if seed is None else lambda _key: rng.choice([0, 0, 1, 2, 5, 20]))
    backplane, _ = node(kv, limit)
    answered: dict[str, list[tuple[int, int]]] = {}
    put: dict[str, list[str]] = {}

    def answer(client_id: str, n: int) -> Callable[[int], None]:
        return lambda code: answered[client_id].append((n, code))

    for n, (op, i) in enumerate(program):
        client_id, topic = f"client-{i}", f"t/{i}"
        if op == "claim":
            answered.setdefault(client_id, [])
            backplane.claim_client_id(client_id, i % 2 == 0, answer(client_id, n))
        elif op == "release":
            backplane.release_client_id(client_id)
        elif op == "retain":
            backplane.retained_set(retained_message(topic, n))
            put.setdefault(topic, []).append(str(n))
        else:
            for _ in range(i * 3):  # let some requests run before the next ones come
                await asyncio.sleep(0)
    await until(lambda: not backplane.requests.busy)
    assert backplane.requests.max_running <= limit
    claimed = {c: backplane.claims.token(c) is not None for c in answered}
    return {
        "log": kv.log,
        "answered": answered,
        "put": put,
        "claimed": claimed,
        "entries": sorted(kv.entries),
        "host": backplane.host.taken,  # type: ignore[attr-defined]
    }


@settings(max_examples=60, deadline=None)
@given(program=ops, limit=st.sampled_from([1, 2, 3, 64]), seed=st.integers(0, 2**32))
def test_each_key_sees_its_requests_in_order_whatever_the_interleaving(
    program: list[Op], limit: int, seed: int
) -> None:
    # One at a time, no delays: the order each key must see.
    expected = asyncio.run(run_ops(program, 1, None))
    got = asyncio.run(run_ops(program, limit, seed))
    assert got == expected
    # And that order is the submission order: claims answered in it, the last retained
    # write of a topic is the last one made.
    answered = got["answered"]
    assert isinstance(answered, dict)
    for order in answered.values():
        assert order == sorted(order) and all(code == 0 for _, code in order)
    log, put = got["log"], got["put"]
    assert isinstance(log, dict) and isinstance(put, dict)
    for topic, values in put.items():
        assert [x.split(":", 1)[1] for x in log[_kv_key(topic)]] == values


async def test_requests_of_different_keys_run_at_once_up_to_the_limit() -> None:
    requests = KeyedRequests(limit=4)
    gate = asyncio.Event()
    started: list[str] = []

    def request(name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            started.append(name)
            await gate.wait()

        return run

    for i in range(10):
        requests.submit(f"k{i}", request(f"k{i}"))
    requests.submit("k0", request("k0-again"))
    await asyncio.sleep(0.01)
    assert started == []  # nothing before start
    requests.start()
    await until(lambda: len(started) == 4)
    await asyncio.sleep(0.01)
    assert started == ["k0", "k1", "k2", "k3"] and requests.running == 4
    gate.set()
    await until(lambda: not requests.busy)
    assert started.index("k0-again") > started.index("k0")
    assert sorted(started) == sorted([f"k{i}" for i in range(10)] + ["k0-again"])
    assert requests.max_running == 4


async def test_close_cancels_what_runs_and_drops_what_waits() -> None:
    requests = KeyedRequests(limit=2)
    requests.start()
    cancelled: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append("x")
            raise

    for key in ("a", "b", "c"):
        requests.submit(key, forever)
    await until(lambda: requests.running == 2)
    await asyncio.wait_for(requests.close(1.0), 2.0)
    assert cancelled == ["x", "x"] and not requests.busy
    requests.submit("d", forever)  # closed: dropped
    assert not requests.busy
