"""Real ``mqttd --db`` processes: acknowledged messages survive kill -9, restarts keep state.

Each test starts ``python -m mqttd --db PATH -p 0 --host 127.0.0.1`` (the conftest
helper waits for ``mqttd ready`` and reads the port from the ``listening on`` line),
kills it with SIGKILL or stops it with SIGTERM, and starts a new one on the same file.

The random-kill test uses the small asyncio client below rather than paho: it needs to
know exactly when each acknowledgement arrived (PUBACK for QoS 1, PUBREC for QoS 2: the
moment the broker promised to keep the message) and to keep its own QoS 2 receiving
state across broker restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from integration.paho_client import V5, V311, PahoClient
from mqtt_raw import (
    CONNACK,
    PUBACK,
    PUBLISH,
    SUBACK,
    RawClient,
    gen_connect,
    gen_puback,
    gen_pubcomp,
    gen_publish,
    gen_pubrec,
    gen_pubrel,
    gen_subscribe,
)
from paho.mqtt.enums import MQTTProtocolVersion
from support.files import damage_index, read_only

if TYPE_CHECKING:
    from conftest import MqttdFactory, MqttdProcess

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.timeout(150),
    pytest.mark.skipif(bool(os.environ.get("MQTTD_TEST_BROKER")), reason="mqttd's own persistence"),
]


@pytest.fixture
def brokers(mqttd_factory: MqttdFactory, tmp_path: Path) -> Callable[[Path], MqttdProcess]:
    """Start mqttd on a database file, each run in a fresh folder; all stopped at teardown."""
    runs = iter(range(1_000_000))

    def start(db: Path) -> MqttdProcess:
        cwd = tmp_path / f"run-{next(runs)}"
        cwd.mkdir()
        return mqttd_factory(["--db", str(db)], cwd=cwd)

    return start


# -- (a) a persistent subscriber gets every acknowledged message after kill -9 --------------


@pytest.mark.parametrize("protocol", [V311, V5], ids=["3.1.1-clean-session-0", "5.0-expiry"])
def test_queued_qos1_and_qos2_messages_survive_kill_9(
    brokers: Callable[[Path], MqttdProcess], tmp_path: Path, protocol: MQTTProtocolVersion
) -> None:
    db = tmp_path / "state" / "mqttd.db"
    server = brokers(db)
    expiry = 3600 if protocol == V5 else None
    with PahoClient(
        server.host, server.port, "keeper", protocol=protocol, clean=False, session_expiry=expiry
    ) as sub:
        sub.connect()
        assert sub.subscribe("keep/one", 1) == [1]
        assert sub.subscribe("keep/two", 2) == [2]
        sub.disconnect()
    with PahoClient(server.host, server.port, "sender", protocol=protocol) as pub:
        pub.connect()
        for i in range(25):
            pub.publish("keep/one", f"one-{i}".encode(), 1)  # returns once PUBACKed
            pub.publish("keep/two", f"two-{i}".encode(), 2)  # ... once PUBCOMPed
    server.kill()  # SIGKILL right after the last acknowledgement

    server = brokers(db)
    assert "loaded 0 retained messages and 1 persistent sessions" in server.stderr
    with PahoClient(
        server.host, server.port, "keeper", protocol=protocol, clean=False, session_expiry=expiry
    ) as sub:
        assert sub.connect().session_present
        got = sub.expect_messages(50, timeout=10)
        sub.expect_no_message(0.5)
    ones = [m.payload for m in got if m.topic == "keep/one"]
    twos = [m.payload for m in got if m.topic == "keep/two"]
    assert set(ones) == {f"one-{i}".encode() for i in range(25)}
    assert twos == [f"two-{i}".encode() for i in range(25)]  # each once, in order


# -- (b) a PUBACK released by the receiver's PUBACK, before the commit --------------------------


def test_puback_follows_the_persistent_receivers_puback_before_the_commit(
    mqttd_factory: MqttdFactory, tmp_path: Path
) -> None:
    # Commits every 2 s at most, and a batch only such PUBACKs wait for stays open for
    # up to 20 s: a PUBACK within a second of the receiver's can only come from it.
    config = "[persistence]\ncommit_interval_ms = 2000\n"
    db = tmp_path / "state" / "mqttd.db"
    server = mqttd_factory(["--db", str(db)], config)
    with RawClient(server.host, server.port) as sub:
        sub.send(gen_connect("keeper", clean_session=False))
        sub.expect_type(CONNACK)
        sub.send(gen_subscribe(1, "t", 1))
        sub.expect_type(SUBACK)
        time.sleep(2.3)  # the session and its subscription are committed
        with RawClient(server.host, server.port) as pub:
            pub.send(gen_connect("sender"))
            pub.expect_type(CONNACK)
            pub.send(gen_publish("t", qos=1, mid=7, payload=b"once"))
            delivery = sub.expect_type(PUBLISH)
            assert delivery.publish().payload == b"once"
            with pytest.raises(TimeoutError):
                pub.read_packet(0.3)  # recorded for "keeper", which has not acknowledged
            sub.send(gen_puback(delivery.mid()))
            acked = time.monotonic()
            assert pub.expect_type(PUBACK, timeout=5).mid() == 7
            assert time.monotonic() - acked < 0.9
    server.kill()  # right after the PUBACK, before any commit of the message
    server = mqttd_factory(["--db", str(db)], config, cwd=server.cwd)
    with RawClient(server.host, server.port) as sub:
        sub.send(gen_connect("keeper", clean_session=False))
        assert sub.expect_type(CONNACK).raw == bytes((0x20, 2, 1, 0))  # session present
        with pytest.raises(TimeoutError):
            sub.read_packet(0.5)  # acknowledged end to end: nothing to redeliver


# -- (c) retained messages and subscriptions survive a restart --------------------------------


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_retained_messages_and_subscriptions_survive_a_restart(
    brokers: Callable[[Path], MqttdProcess], tmp_path: Path, stop: str
) -> None:
    db = tmp_path / "mqttd.db"
    server = brokers(db)
    with PahoClient(server.host, server.port, "watcher", clean=False) as sub:
        sub.connect()
        assert sub.subscribe("plant/+/alarm", 1) == [1]
        sub.disconnect()
    with PahoClient(server.host, server.port, "sensor") as pub:
        pub.connect()
        pub.publish("plant/a/temp", b"21.5", 1, retain=True)
        pub.publish("plant/b/temp", b"old", 1, retain=True)
        pub.publish("plant/b/temp", b"19.0", 1, retain=True)  # replaces
        pub.publish("plant/c/temp", b"x", 1, retain=True)
        pub.publish("plant/c/temp", b"", 1, retain=True)  # clears
    if stop == "SIGTERM":
        assert server.stop() == 0
        assert "mqttd stopped" in server.stderr
    else:
        server.kill()

    server = brokers(db)
    with PahoClient(server.host, server.port, "reader") as reader:
        reader.connect()
        reader.subscribe("plant/+/temp", 1)
        retained = reader.expect_messages(2)
        reader.expect_no_message(0.3)
    assert sorted((m.topic, m.payload, m.retain) for m in retained) == [
        ("plant/a/temp", b"21.5", True),
        ("plant/b/temp", b"19.0", True),
    ]
    with PahoClient(server.host, server.port, "watcher", clean=False) as sub:
        assert sub.connect().session_present
        # No SUBSCRIBE: the subscription came back from the file.
        with PahoClient(server.host, server.port, "sensor") as pub:
            pub.connect()
            pub.publish("plant/a/alarm", b"hot", 1)
        assert sub.expect_message().payload == b"hot"


# -- (b) kill -9 at random moments while traffic flows -----------------------------------------


@dataclass(eq=False)
class _Client:
    """A minimal MQTT 3.1.1 client on asyncio streams (see the module docstring).

    As publisher it counts a message as acknowledged at PUBACK (QoS 1) or PUBREC (QoS 2).
    As subscriber it stores a QoS 2 message at PUBLISH and delivers it at PUBREL (the
    spec's method B; a PUBLISH with a packet id already waiting replaces the stored one,
    as paho does), or delivers it at PUBLISH and ignores later PUBLISH packets with that
    id until PUBREL (method A). Its QoS 2 state outlives connections, as a persistent
    session's must.
    """

    client_id: str
    clean: bool
    #: Seconds a subscriber waits before PUBREC: the broker's record of the PUBLISH has
    #: been committed by then, so its later record (PUBREL sent) is the one at risk.
    pubrec_delay: float = 0.0
    #: QoS 2 receiving, method A (4.3.3): deliver at PUBLISH and keep the packet id until
    #: PUBREL, instead of method B: store at PUBLISH, deliver at PUBREL.
    deliver_at_publish: bool = False
    acknowledged: set[bytes] = field(default_factory=set)
    received_qos1: set[bytes] = field(default_factory=set)
    delivered_qos2: list[bytes] = field(default_factory=list)
    waiting_qos2: dict[int, bytes] = field(default_factory=dict)  # packet id -> payload
    _sent: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    _writer: asyncio.StreamWriter | None = None
    _reader_task: asyncio.Task[None] | None = None
    _connack: asyncio.Future[bool] | None = None
    _suback: asyncio.Future[bytes] | None = None
    _room: asyncio.Condition = field(default_factory=asyncio.Condition)
    _next_pid: int = 1
    last_activity: float = 0.0

    @property
    def connected(self) -> bool:
        return self._reader_task is not None and not self._reader_task.done()

    async def connect(self, host: str, port: int) -> bool:
        reader, writer = await asyncio.open_connection(host, port)
        self._writer = writer
        self._sent.clear()  # a clean-session publisher starts over; unknown outcomes stay so
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        self._reader_task = asyncio.create_task(self._read(reader))
        writer.write(gen_connect(self.client_id, clean_session=self.clean, keepalive=0))
        return await asyncio.wait_for(self._connack, 5)

    async def subscribe(self, topic_filter: str, qos: int) -> bytes:
        assert self._writer is not None
        self._suback = asyncio.get_running_loop().create_future()
        self._writer.write(gen_subscribe(1, topic_filter, qos))
        return await asyncio.wait_for(self._suback, 5)

    async def publish(self, topic: str, payload: bytes, qos: int, window: int = 20) -> bool:
        """Send one PUBLISH when fewer than `window` are unacknowledged; False if offline."""
        async with self._room:
            await self._room.wait_for(lambda: len(self._sent) < window or not self.connected)
        if not self.connected or self._writer is None:
            return False
        pid = self._next_pid
        self._next_pid = pid % 65535 + 1
        self._sent[pid] = (qos, payload)
        self._writer.write(gen_publish(topic, qos=qos, payload=payload, mid=pid))
        return True

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                first = (await reader.readexactly(1))[0]
                length, shift = 0, 0
                while True:
                    byte = (await reader.readexactly(1))[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                self._handle(first, await reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            async with self._room:
                self._room.notify_all()

    def _handle(self, first: int, body: bytes) -> None:
        kind = first >> 4
        writer = self._writer
        assert writer is not None
        self.last_activity = time.monotonic()
        if kind == 2:  # CONNACK
            assert body[1] == 0, f"refused: {body[1]}"
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(bool(body[0] & 1))
        elif kind == 9:  # SUBACK
            if self._suback is not None and not self._suback.done():
                self._suback.set_result(body[2:])
        elif kind == 3:  # PUBLISH
            qos = (first >> 1) & 3
            (n,) = struct.unpack_from("!H", body)
            (pid,) = struct.unpack_from("!H", body, 2 + n)
            payload = body[4 + n :]
            if qos == 1:
                self.received_qos1.add(payload)
                writer.write(gen_puback(pid))
            elif qos == 2:
                if self.deliver_at_publish and pid not in self.waiting_qos2:
                    self.delivered_qos2.append(payload)
                self.waiting_qos2[pid] = payload
                if self.pubrec_delay:
                    asyncio.get_running_loop().call_later(
                        self.pubrec_delay, _write_if_open, writer, gen_pubrec(pid)
                    )
                else:
                    writer.write(gen_pubrec(pid))
        elif kind == 6:  # PUBREL: deliver a stored QoS 2 message
            (pid,) = struct.unpack_from("!H", body)
            stored = self.waiting_qos2.pop(pid, None)
            if stored is not None and not self.deliver_at_publish:
                self.delivered_qos2.append(stored)
            writer.write(gen_pubcomp(pid))
        elif kind in (4, 5, 7):  # PUBACK, PUBREC, PUBCOMP for what we published
            (pid,) = struct.unpack_from("!H", body)
            sent = self._sent.get(pid)
            if sent is None:
                return
            qos, payload = sent
            if kind == 4 or kind == 5:
                self.acknowledged.add(payload)  # the broker promised to keep it
            if kind == 5:
                writer.write(gen_pubrel(pid))
                return
            del self._sent[pid]
            asyncio.get_running_loop().create_task(self._notify_room())

    async def _notify_room(self) -> None:
        async with self._room:
            self._room.notify_all()


def _write_if_open(writer: asyncio.StreamWriter, data: bytes) -> None:
    if not writer.is_closing():
        writer.write(data)


@pytest.mark.slow
@pytest.mark.parametrize("receiver", ["deliver-at-pubrel", "deliver-at-publish"])
def test_no_acknowledged_message_is_lost_across_random_kill_9(
    brokers: Callable[[Path], MqttdProcess], tmp_path: Path, receiver: str
) -> None:
    subscriber = _Client(
        "kill-sub",
        clean=False,
        pubrec_delay=0.02,
        deliver_at_publish=receiver == "deliver-at-publish",
    )
    db = tmp_path / "mqttd.db"
    asyncio.run(_random_kills(brokers, db, subscriber, kills=20, budget=40.0))


async def _random_kills(
    brokers: Callable[[Path], MqttdProcess],
    db: Path,
    subscriber: _Client,
    kills: int,
    budget: float,
) -> None:
    rng = random.Random(os.environ.get("MQTTD_KILL_SEED", "7"))
    publisher = _Client("kill-pub", clean=True)
    started = time.monotonic()
    counter = 0
    loop = asyncio.get_running_loop()
    done_kills = 0
    while done_kills < kills:
        server = await loop.run_in_executor(None, brokers, db)
        try:
            present = await subscriber.connect(server.host, server.port)
            if done_kills == 0:
                assert not present
                assert await subscriber.subscribe("load/#", 2) == b"\x02"
            else:
                assert present, "the persistent session was lost"
            await publisher.connect(server.host, server.port)
            # Kill at a random moment while both directions are busy.
            deadline = time.monotonic() + rng.uniform(0.05, 0.8)
            while time.monotonic() < deadline:
                counter += 1
                qos = 1 + counter % 2
                if not await publisher.publish(f"load/{qos}", b"m%d-q%d" % (counter, qos), qos):
                    break
        finally:
            await loop.run_in_executor(None, server.kill)
        done_kills += 1
        await publisher.close()
        await subscriber.close()
        assert time.monotonic() - started < budget, f"only {done_kills} kills within {budget}s"

    # One last start: the subscriber drains what the file kept for it.
    server = await loop.run_in_executor(None, brokers, db)
    try:
        assert await subscriber.connect(server.host, server.port)
        subscriber.last_activity = time.monotonic()
        while time.monotonic() - subscriber.last_activity < 1.0:
            await asyncio.sleep(0.1)
        await subscriber.close()
    finally:
        await loop.run_in_executor(None, server.stop)

    delivered = subscriber.received_qos1 | set(subscriber.delivered_qos2)
    print(
        f"{kills} kills in {time.monotonic() - started:.1f}s: {counter} published, "
        f"{len(publisher.acknowledged)} acknowledged, {len(subscriber.received_qos1)} QoS 1 "
        f"and {len(subscriber.delivered_qos2)} QoS 2 received"
    )
    lost = sorted(publisher.acknowledged - delivered)
    assert len(publisher.acknowledged) > 200, "too little traffic to prove anything"
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:5]}"
    twice = sorted(
        p for p in set(subscriber.delivered_qos2) if subscriber.delivered_qos2.count(p) > 1
    )
    assert not twice, f"QoS 2 messages delivered more than once: {twice[:5]}"


# -- (d) bad conditions at start-up: one clear line, exit status 1, never "ready" -------------


def _refused(db: Path, cwd: Path) -> str:
    cwd.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "mqttd", "--db", str(db), "-p", "0", "--host", "127.0.0.1"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        start_new_session=True,
    )
    assert done.returncode == 1, done.stderr
    assert "mqttd ready" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert str(db) in line
    return line


def test_a_second_mqttd_on_the_same_file_refuses_to_start(
    brokers: Callable[[Path], MqttdProcess], tmp_path: Path
) -> None:
    db = tmp_path / "mqttd.db"
    first = brokers(db)
    line = _refused(db, tmp_path / "second")
    assert "in use by another process" in line
    assert first.proc.poll() is None  # the first one is untouched


def test_a_corrupt_file_refuses_to_start(tmp_path: Path) -> None:
    db = tmp_path / "mqttd.db"
    db.write_bytes(b"\x00garbage, not SQLite\x00" * 500)
    line = _refused(db, tmp_path / "run")
    assert "damaged or is not a SQLite database" in line
    assert db.read_bytes().startswith(b"\x00garbage")  # left as it was, for inspection


def test_a_file_failing_the_integrity_check_refuses_to_start(tmp_path: Path) -> None:
    # It opens and loads (the damaged index is not read at start), so the refusal comes
    # from the `quick_check` that runs beside the load: still before any listener.
    from mqttd.store import StoredMessage
    from mqttd.store.sqlite import SqliteStore

    db = tmp_path / "mqttd.db"

    async def fill() -> None:
        store = SqliteStore(db)
        await store.open()
        for i in range(300):
            store.save_retained(StoredMessage(f"site/{i}", b"x" * 50, 1, True))
        await store.close()

    asyncio.run(fill())
    damage_index(db)
    line = _refused(db, tmp_path / "run")
    assert "integrity check failed" in line and "damaged" in line


def test_a_database_from_a_newer_mqttd_refuses_to_start(
    brokers: Callable[[Path], MqttdProcess], tmp_path: Path
) -> None:
    db = tmp_path / "mqttd.db"
    brokers(db).stop()
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 999")
    con.commit()
    con.close()
    assert "newer mqttd (schema version 999" in _refused(db, tmp_path / "run")


def test_a_read_only_directory_refuses_to_start(
    brokers: Callable[[Path], MqttdProcess], tmp_path: Path
) -> None:
    folder = tmp_path / "ro"
    db = folder / "mqttd.db"
    brokers(db).stop()
    with read_only(folder):
        line = _refused(db, tmp_path / "run")
    assert "read-only" in line
