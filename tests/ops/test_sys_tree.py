"""The $SYS tree: Mosquitto's topic names, values after known traffic, updates on change.

Most tests drive the sans-IO core on a FakeClock (`core.Core`), so the figures are
exact and time moves only when told; the last ones run the App over real sockets to
show the tree is wired in and driven by the App's one timer driver.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from mqttd.app import App, ephemeral_config
from mqttd.broker.clock import FakeClock
from mqttd.broker.message import Message
from mqttd.ops.figures import packet_counts
from mqttd.ops.sys_tree import SYS_PREFIX, LoadAverage, SysTree
from mqttd.protocol import Publish

from .core import Core

S = SYS_PREFIX

# Figures that move without any MQTT traffic: time and the process's memory.
CLOCK_AND_MEMORY = {S + "uptime", S + "heap/current", S + "heap/maximum"}


async def test_figures_after_known_traffic() -> None:
    core = await Core().start()
    a = core.client(4)
    a.connect("a")
    s = core.client(4)
    s.connect("s")
    s.subscribe("t/#", qos=1)
    b = core.client(5)
    b.connect("b", expiry=3600)
    b.subscribe("t/#", qos=1)
    b.disconnect()  # an offline session that outlives its connection

    for _ in range(3):
        a.publish("t/1", b"zero")
    a.publish("t/r", b"kept", retain=True)
    a.publish("t/q", b"one", qos=1, packet_id=1)
    a.publish("t/q", b"one", qos=1, packet_id=2)
    assert len(s.publishes()) == 6  # s never acknowledges: its 2 QoS 1 stay inflight

    tree = SysTree(core.broker, 10)
    tree.start()
    values = tree.current
    assert values[S + "version"] == "mqttd version 0.1.0"
    assert values[S + "uptime"] == "0 seconds"
    assert values[S + "clients/connected"] == "2"  # a and s
    assert values[S + "clients/disconnected"] == "1"  # b
    assert values[S + "clients/total"] == "3"
    assert values[S + "clients/maximum"] == "2"
    assert values[S + "clients/expired"] == "0"
    assert values[S + "publish/messages/received"] == "6"
    assert values[S + "publish/messages/sent"] == "6"  # to s; b was offline
    assert values[S + "publish/messages/dropped"] == "0"
    assert values[S + "bytes/received"] == str(core.bytes_fed)
    assert values[S + "bytes/sent"] == str(core.bytes_written)
    assert values[S + "retained messages/count"] == "1"
    assert values[S + "subscriptions/count"] == "2"
    # retained t/r + 2 inflight for s + 2 queued for b (QoS 0 is not kept offline)
    assert values[S + "store/messages/count"] == "5"
    assert values[S + "messages/stored"] == "5"
    assert int(values[S + "heap/maximum"]) > 1_000_000
    if packet_counts(core.broker.stats) is None:
        assert S + "messages/received" not in values  # unknown, so not made up
    else:
        assert values[S + "messages/received"] == str(core.packets_fed)

    # b's session expires after 3600 s: the next update says so.
    core.advance(3600)
    core.advance(10)
    values = tree.current
    assert values[S + "uptime"] == "3610 seconds"
    assert values[S + "clients/expired"] == "1"
    assert values[S + "clients/total"] == "2"
    assert values[S + "clients/disconnected"] == "0"
    assert values[S + "subscriptions/count"] == "1"


async def test_every_update_publishes_only_what_changed() -> None:
    core = await Core().start()
    a = core.client(4)
    a.connect("a")
    tree = SysTree(core.broker, 10)
    tree.start()
    core.advance(10)
    core.advance(10)
    # The retained $SYS values are not counted as retained messages of clients.
    assert tree.current[S + "retained messages/count"] == "0"
    assert int(tree.current[S + "heap/maximum"]) >= int(tree.current[S + "heap/current"])

    def tick() -> set[str]:
        before = tree.current
        routed = core.broker.stats.messages_routed
        core.advance(10)
        after = tree.current
        changed = {topic for topic, text in after.items() if before.get(topic) != text}
        # The broker's own $SYS publishes are not client traffic: routed stays put.
        assert changed and core.broker.stats.messages_routed == routed
        return changed

    changed = tick()
    assert S + "uptime" in changed
    assert changed <= CLOCK_AND_MEMORY

    a.publish("nobody/listens", b"x")
    changed = tick() - CLOCK_AND_MEMORY
    expected = {
        S + "publish/messages/received",
        S + "bytes/received",
        *(
            S + f"load/{series}/{w}"
            for series in ("publish/received", "bytes/received")
            for w in ("1min", "5min", "15min")
        ),
    }
    if packet_counts(core.broker.stats) is not None:
        expected |= {S + "messages/received"}
        expected |= {S + f"load/messages/received/{w}" for w in ("1min", "5min", "15min")}
    assert changed == expected


async def test_sys_subscribers_get_retained_values_and_hash_never_matches_sys() -> None:
    core = await Core().start()
    tree = SysTree(core.broker, 10)
    tree.start()
    watcher = core.client(4)
    watcher.connect("watcher")
    got = watcher.subscribe("$SYS/broker/#")
    received = {p.topic: p for p in got if isinstance(p, Publish)}
    assert len(received) == len(got) and set(received) == set(tree.current)
    assert all(p.retain and p.qos == 0 for p in received.values())
    assert received[S + "version"].payload == b"mqttd version 0.1.0"

    everything = core.client(4)
    everything.connect("everything")
    assert everything.subscribe("#") == []  # [MQTT-4.7.2-1]
    core.advance(10)
    assert everything.publishes() == []
    assert {p.topic for p in watcher.publishes()} >= {S + "uptime"}


async def test_load_averages_follow_mosquittos_formula() -> None:
    core = await Core().start()
    a = core.client(4)
    a.connect("a")
    tree = SysTree(core.broker, 60)
    tree.start()
    for _ in range(120):
        a.publish("t", b"x")
    core.advance(60)
    # rate 120/min; load = rate + exp(-60/window) * (0 - rate)
    values = tree.current
    assert values[S + "load/publish/received/1min"] == "75.85"
    assert values[S + "load/publish/received/5min"] == "21.75"
    assert values[S + "load/publish/received/15min"] == "7.74"
    assert values[S + "load/connections/1min"] == "0.00"  # a connected before the start
    core.advance(60)  # no traffic: the averages decay
    assert tree.current[S + "load/publish/received/1min"] == "27.91"


def test_load_average_uses_the_elapsed_time_not_the_nominal_interval() -> None:
    load = LoadAverage(0)
    load.update(30, 30.0)  # 60/min over half a minute
    assert load.values[0] == pytest.approx(60 * (1 - math.exp(-0.5)))
    load.update(30, 0.0)  # no time passed: nothing to fold in
    assert load.values[0] == pytest.approx(60 * (1 - math.exp(-0.5)))


async def test_start_clears_stale_sys_topics_and_keeps_other_retained() -> None:
    core = await Core().start()
    core.broker.publish(Message(S + "from/an/older/version", b"1", 0, True))
    core.broker.publish(Message(S + "clients/connected", b"57", 0, True))
    core.broker.publish(Message("plant/temperature", b"21", 0, True))
    SysTree(core.broker, 10).start()
    retained = dict(core.broker.retained.match("#")) | dict(core.broker.retained.match("$SYS/#"))
    assert S + "from/an/older/version" not in retained
    assert retained[S + "clients/connected"].payload == b"0"
    assert retained["plant/temperature"].payload == b"21"


async def test_the_tree_is_one_timer_of_the_broker_scheduler() -> None:
    core = await Core().start()
    scheduler = core.broker.scheduler
    timers = len(scheduler)
    tree = SysTree(core.broker, 10)
    tree.start()
    assert len(scheduler) == timers + 1 and tree.running
    assert core.advance(9.9) == 0
    assert core.advance(0.1) == 1
    tree.set_interval(30)
    assert core.advance(10) == 0
    assert core.advance(20) == 1
    tree.set_interval(0)
    assert not tree.running and len(scheduler) == timers
    tree.set_interval(5)
    tree.stop()
    assert not tree.running and len(scheduler) == timers


# -- wired into the App ------------------------------------------------------------------


async def _connect_and_subscribe(
    host: str, port: int, topic: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x00\x00\x03sys")  # CONNECT "sys"
    body = b"\x00\x01" + len(topic).to_bytes(2, "big") + topic + b"\x00"
    writer.write(bytes([0x82, len(body)]) + body)
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"\x20\x02\x00\x00"
    assert await asyncio.wait_for(reader.readexactly(5), 5) == b"\x90\x03\x00\x01\x00"
    return reader, writer


async def _read_publish(reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
    first, length = await asyncio.wait_for(reader.readexactly(2), 5)
    assert length < 128
    body = await reader.readexactly(length)
    n = int.from_bytes(body[:2], "big")
    return first, body[2 : 2 + n].decode(), body[2 + n :]


async def test_the_app_publishes_sys_from_its_timer_driver() -> None:
    config = ephemeral_config()
    config.sys.interval = 5
    clock = FakeClock()
    app = App(config, clock=clock)
    await app.start()
    try:
        assert app.sys_tree is not None
        reader, writer = await _connect_and_subscribe(
            app.host, app.port, b"$SYS/broker/clients/connected"
        )
        # The retained value from the start, retain flag set.
        assert await _read_publish(reader) == (0x31, S + "clients/connected", b"0")
        clock.advance(5)  # the driver wakes within TIMER_MAX_SLEEP and runs the update
        assert await _read_publish(reader) == (0x30, S + "clients/connected", b"1")
        writer.close()
    finally:
        await app.stop()


async def test_interval_zero_means_no_sys_tree() -> None:
    config = ephemeral_config()
    config.sys.interval = 0
    app = App(config)
    await app.start()
    try:
        assert app.sys_tree is None
        assert app.broker.retained.match("$SYS/#") == []
    finally:
        await app.stop()


async def test_sys_deliveries_are_not_counted_as_client_traffic() -> None:
    core = await Core().start()
    dashboard = core.client(4)
    dashboard.connect("dashboard")
    dashboard.subscribe("$SYS/#")
    tree = SysTree(core.broker, 10)
    tree.start()
    core.advance(10)
    stats = core.broker.stats
    received = dashboard.publishes()
    assert len(received) > 10  # the dashboard did receive the figures
    assert stats.publish_sent == 0 and stats.messages_routed == 0
    assert stats.sys_publish_sent == len(received)
