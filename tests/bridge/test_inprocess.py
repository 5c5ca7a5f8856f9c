"""Two mqttd Apps in one event loop, bridged: what crosses, how, and what never loops.

App A has the `[[bridge]]`; App B is its remote. Both run in the test's event loop, so
these tests are quick and see the live objects (`app.bridges`, the local session).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from support.servers import free_port

from mqttd.protocol import Properties

from .helpers import (
    Peer,
    bridge_table,
    bridge_up,
    bridged,
    broker_config,
    started,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)

BOTH = [{"pattern": "#", "direction": "both", "qos": 2}]


@pytest.mark.parametrize("level", [4, 5])
async def test_messages_cross_both_ways_once_and_never_echo(level: int) -> None:
    async with bridged(BOTH, protocol_version=level) as (a, b):
        on_a = await Peer.connect(a.port, "on-a")
        on_b = await Peer.connect(b.port, "on-b")
        await on_a.subscribe("#", 2)
        await on_b.subscribe("#", 2)
        await on_a.publish("t/from-a", b"1", qos=1)
        await on_b.publish("t/from-b", b"2", qos=1)
        got_a = {(m.topic, m.payload) for m in await on_a.expect(2)}
        got_b = {(m.topic, m.payload) for m in await on_b.expect(2)}
        assert got_a == got_b == {("t/from-a", b"1"), ("t/from-b", b"2")}
        # No echo: neither side sees a message twice.
        await on_a.expect_none(0.5)
        await on_b.expect_none(0.1)
        await on_a.close()
        await on_b.close()


@pytest.mark.parametrize("level", [4, 5])
async def test_qos2_crosses_exactly_once_with_its_qos(level: int) -> None:
    async with bridged(BOTH, protocol_version=level) as (a, b):
        on_a = await Peer.connect(a.port, "on-a")
        on_b = await Peer.connect(b.port, "on-b")
        await on_b.subscribe("q/#", 2)
        await on_a.subscribe("r/#", 2)
        for i in range(20):
            await on_a.publish(f"q/{i}", str(i).encode(), qos=2)
            await on_b.publish(f"r/{i}", str(i).encode(), qos=2)
        at_b = await on_b.expect(20)
        at_a = await on_a.expect(20)
        assert [m.payload for m in at_b] == [str(i).encode() for i in range(20)]
        assert [m.payload for m in at_a] == [str(i).encode() for i in range(20)]
        assert {m.qos for m in at_a + at_b} == {2}
        await on_a.expect_none(0.3)
        await on_b.expect_none(0.1)
        # Every flow finished on both legs: nothing is left in flight.
        bridge_obj = a.bridge_service.bridges["ab"] if a.bridge_service else None
        assert bridge_obj is not None and bridge_obj.queued == 0
        await on_a.close()
        await on_b.close()


async def test_topics_are_remapped_with_prefixes_in_both_directions() -> None:
    topics: list[dict[str, Any]] = [
        {"pattern": "sensors/#", "direction": "out", "qos": 1, "remote_prefix": "site1/"},
        {
            "pattern": "cmd/#",
            "direction": "in",
            "qos": 1,
            "local_prefix": "remote/",
            "remote_prefix": "site1/",
        },
        # Mosquitto's single-topic remap: an empty pattern, both prefixes.
        {"pattern": "", "direction": "out", "local_prefix": "a/b", "remote_prefix": "x/y/z"},
    ]
    async with bridged(topics) as (a, b):
        on_a = await Peer.connect(a.port, "on-a")
        on_b = await Peer.connect(b.port, "on-b")
        await on_b.subscribe("#", 1)
        await on_a.subscribe("#", 1)
        await on_a.publish("sensors/t1", b"21.5", qos=1)
        await on_a.publish("a/b", b"single", qos=1)
        await on_a.publish("other/x", b"stays", qos=1)  # matches no rule
        got = [(m.topic, m.payload) for m in await on_b.expect(2)]
        assert got == [("site1/sensors/t1", b"21.5"), ("x/y/z", b"single")]
        # What A published locally reached A's subscriber, and only that.
        assert [m.topic for m in await on_a.expect(3)] == ["sensors/t1", "a/b", "other/x"]
        await on_b.publish("site1/cmd/reboot", b"now", qos=1)
        await on_b.publish("elsewhere/cmd/reboot", b"no", qos=1)
        [cmd] = await on_a.expect(1)
        assert (cmd.topic, cmd.payload) == ("remote/cmd/reboot", b"now")
        await on_a.expect_none(0.3)
        await on_a.close()
        await on_b.close()


@pytest.mark.parametrize("level", [4, 5])
async def test_retained_messages_cross_with_their_retain_flag(level: int) -> None:
    async with bridged(BOTH, protocol_version=level) as (a, b):
        on_a = await Peer.connect(a.port, "on-a")
        await on_a.publish("status/a", b"up", qos=1, retain=True)
        on_b = await Peer.connect(b.port, "on-b")
        await on_b.publish("status/b", b"up", qos=1, retain=True)
        await wait_for(lambda: len(a.broker.retained) >= 2 and len(b.broker.retained) >= 2)
        late_a = await Peer.connect(a.port, "late-a")
        late_b = await Peer.connect(b.port, "late-b")
        await late_a.subscribe("status/#", 1)
        await late_b.subscribe("status/#", 1)
        for late in (late_a, late_b):
            got = {(m.topic, m.payload, m.retain) for m in await late.expect(2)}
            assert got == {("status/a", b"up", True), ("status/b", b"up", True)}
        for peer in (on_a, on_b, late_a, late_b):
            await peer.close()


async def test_mqtt5_properties_pass_through_both_ways() -> None:
    props = Properties(
        content_type="application/json",
        response_topic="reply/here",
        correlation_data=b"\x01\x02",
        user_property=(("k", "v"), ("k", "w")),
        payload_format_indicator=1,
    )
    async with bridged(BOTH, protocol_version=5) as (a, b):
        on_a = await Peer.connect(a.port, "on-a", level=5)
        on_b = await Peer.connect(b.port, "on-b", level=5)
        await on_a.subscribe("in/#", 1)
        await on_b.subscribe("out/#", 1)
        await on_a.publish("out/x", b"{}", qos=1, properties=props)
        await on_b.publish("in/x", b"{}", qos=1, properties=props)
        for peer in (on_a, on_b):
            [message] = await peer.expect(1)
            assert message.properties is not None
            got = message.properties
            assert got.content_type == "application/json"
            assert got.response_topic == "reply/here"
            assert got.correlation_data == b"\x01\x02"
            assert got.user_property == (("k", "v"), ("k", "w"))
            assert got.payload_format_indicator == 1
        await on_a.close()
        await on_b.close()


async def test_state_is_published_in_sys_and_exposed_on_the_app() -> None:
    port = free_port()
    bridge = bridge_table("cloud", port, [{"pattern": "#"}])
    async with started(broker_config(bridge=[bridge])) as a:
        watcher = await Peer.connect(a.port, "watcher")
        await watcher.subscribe("$SYS/broker/connection/#", 1)
        [first] = await watcher.expect(1)
        assert (first.topic, first.payload, first.retain) == (
            "$SYS/broker/connection/cloud/state",
            b"0",
            True,
        )
        assert a.bridges == {"cloud": 0}
        async with started(broker_config(port)):
            await bridge_up(a, "cloud")
            [up] = await watcher.expect(1)
            assert (up.topic, up.payload) == ("$SYS/broker/connection/cloud/state", b"1")
        [down] = await watcher.expect(1)
        assert down.payload == b"0"
        assert a.bridges == {"cloud": 0}
        await watcher.close()


@pytest.mark.parametrize("level", [4, 5])
async def test_messages_wait_while_the_remote_is_down_and_arrive_in_order(
    level: int, tmp_path: Path
) -> None:
    port = free_port()
    # B keeps its subscriber's session across its restart (SQLite), so whatever the
    # bridge delivers before the subscriber is back waits for it there.
    remote = broker_config(port, persistence={"enabled": True, "path": str(tmp_path / "b.db")})
    bridge = bridge_table("ab", port, [{"pattern": "data/#", "qos": 1}], protocol_version=level)
    async with started(broker_config(bridge=[bridge])) as a:
        publisher = await Peer.connect(a.port, "publisher")
        async with started(remote) as b:
            await bridge_up(a, "ab")
            # A persistent subscriber on B, so B keeps what arrives while it is away.
            sub = await Peer.connect(b.port, "sub", clean=False)
            await sub.subscribe("data/#", 1)
            for i in range(50):
                await publisher.publish("data/x", str(i).encode(), qos=1)
            first = await sub.expect(50)
            await sub.close()
        # B is gone: A keeps accepting, and queues, QoS 1 messages for it.
        await wait_for(lambda: a.bridges["ab"] == 0)
        for i in range(50, 300):
            await publisher.publish("data/x", str(i).encode(), qos=1)
        await publisher.publish("data/x", b"qos0 is dropped", qos=0)
        bridge_obj = a.bridge_service.bridges["ab"] if a.bridge_service else None
        assert bridge_obj is not None
        # The 250 new ones, and possibly some of the first 50 that B had not acknowledged
        # yet when it stopped (it acknowledges after its commit): those are sent again.
        assert 250 <= bridge_obj.queued <= 270
        async with started(remote) as b:
            await bridge_up(a, "ab")
            sub = await Peer.connect(b.port, "sub", clean=False)
            await sub.subscribe("data/#", 1)
            got = [int(m.payload) for m in first]
            while len(set(got)) < 300:
                got += [int(m.payload) for m in await sub.expect(1)]
            await sub.expect_none(0.3)
            await sub.close()
        # Nothing lost, and the order kept: QoS 1 may repeat a message (at least once),
        # but the first time each one arrives is in publishing order.
        first_seen = list(dict.fromkeys(got))
        assert first_seen == list(range(300))
        assert len(got) - 300 <= 20
        await publisher.close()


@pytest.mark.parametrize(("overflow", "kept"), [("drop_new", range(10)), ("drop_oldest", None)])
async def test_queue_limit_and_overflow_policy(overflow: str, kept: range | None) -> None:
    port = free_port()
    bridge = bridge_table(
        "ab",
        port,
        [{"pattern": "data/#", "qos": 1}],
        max_queued_messages=10,
        queue_overflow=overflow,
    )
    config = broker_config(bridge=[bridge], limits={"max_inflight_messages": 5})
    async with started(config) as a:
        publisher = await Peer.connect(a.port, "publisher")
        for i in range(40):
            await publisher.publish("data/x", str(i).encode(), qos=1)
        async with started(broker_config(port)) as b:
            sub = await Peer.connect(b.port, "sub", clean=False)
            await sub.subscribe("data/#", 1)
            await bridge_up(a, "ab")
            # 5 held by the bridge (the inflight window), 10 in the bounded queue.
            got = [int(m.payload) for m in await sub.expect(15)]
            await sub.expect_none(0.3)
            await sub.close()
        if kept is not None:
            assert got == list(range(15))  # drop_new: the first ones stay
        else:
            assert got == list(range(5)) + list(range(30, 40))  # drop_oldest: the last ones
        await publisher.close()


async def test_failover_to_the_next_address() -> None:
    dead = free_port()
    async with started(broker_config()) as b:
        bridge = bridge_table("ab", dead, BOTH)
        bridge["addresses"] = [f"127.0.0.1:{dead}", f"localhost:{b.port}"]
        async with started(broker_config(bridge=[bridge])) as a:
            await bridge_up(a, "ab")
            bridge_obj = a.bridge_service.bridges["ab"] if a.bridge_service else None
            assert bridge_obj is not None
            assert bridge_obj.address == f"localhost:{b.port}"
            assert bridge_obj.stats.connect_failures >= 1


async def test_a_bridge_stop_sends_disconnect_and_keeps_its_remote_session() -> None:
    async with started(broker_config()) as b:
        bridge = bridge_table("ab", b.port, BOTH, protocol_version=5, client_id="site-a")
        async with started(broker_config(bridge=[bridge])) as a:
            await bridge_up(a, "ab")
            assert b.broker.sessions["site-a"].connection is not None
        await wait_for(lambda: b.broker.sessions["site-a"].connection is None)
        session = b.broker.sessions["site-a"]
        assert session.persistent  # session_expiry defaults to "never"
        assert set(session.subscriptions) == {"#"}
        assert session.subscriptions["#"].no_local


@pytest.mark.parametrize("level", [4, 5])
async def test_two_brokers_bridged_both_ways_on_everything_do_not_loop(level: int) -> None:
    """A bridges to B on "#" both ways: a message published on either side arrives once
    on each side, and the brokers route it exactly twice (once each): no echo storm."""
    async with bridged(BOTH, protocol_version=level) as (a, b):
        on_a = await Peer.connect(a.port, "on-a")
        on_b = await Peer.connect(b.port, "on-b")
        await on_a.subscribe("#", 1)
        await on_b.subscribe("#", 1)
        for publisher, topic in ((on_a, "ping/a"), (on_b, "ping/b")):
            routed = a.broker.stats.messages_routed + b.broker.stats.messages_routed
            await publisher.publish(topic, b"1", qos=1)
            assert [m.topic for m in await on_a.expect(1)] == [topic]
            assert [m.topic for m in await on_b.expect(1)] == [topic]
            await asyncio.sleep(1.0)
            await on_a.expect_none(0.1)
            await on_b.expect_none(0.1)
            after = a.broker.stats.messages_routed + b.broker.stats.messages_routed
            assert after - routed == 2
        await on_a.close()
        await on_b.close()


async def test_local_session_queue_is_bounded_by_the_bridge_settings() -> None:
    port = free_port()
    bridge = bridge_table("ab", port, [{"pattern": "#", "qos": 1}], max_queued_messages=3)
    async with started(broker_config(bridge=[bridge])) as a:
        session = a.broker.sessions["$bridge/ab"]
        publisher = await Peer.connect(a.port, "p")
        for i in range(60):
            await publisher.publish("x", str(i).encode(), qos=1)
        assert session.queue_length == 3
        await publisher.close()


async def test_shutdown_with_a_remote_that_never_answers_is_bounded() -> None:
    from .helpers import FakeRemote

    remote = await FakeRemote(lambda connect: None).start()
    try:
        bridge = bridge_table("ab", remote.port, BOTH, connect_timeout=30.0)
        loop = asyncio.get_running_loop()
        async with started(broker_config(bridge=[bridge])) as a:
            await wait_for(lambda: len(remote.connects) == 1)
            assert a.bridges == {"ab": 0}
            begin = loop.time()
        assert loop.time() - begin < 3.0
    finally:
        with contextlib.suppress(Exception):
            await remote.stop()


async def test_a_removed_bridge_has_its_stored_session_ended(tmp_path: Path) -> None:
    store = {"enabled": True, "path": str(tmp_path / "a.db")}
    bridge = bridge_table("old", free_port(), [{"pattern": "#", "qos": 1}])
    async with started(broker_config(persistence=store, bridge=[bridge])) as a:
        publisher = await Peer.connect(a.port, "p")
        await publisher.publish("x", b"waits for a remote that never comes", qos=1)
        await publisher.close()
    async with started(broker_config(persistence=store, bridge=[bridge])) as a:
        # Kept across the restart, with what it queued.
        assert a.bridges == {"old": 0}
        assert a.bridge_service is not None and a.bridge_service.bridges["old"].queued == 1
    async with started(broker_config(persistence=store)) as a:
        assert "$bridge/old" not in a.broker.sessions
        assert a.bridges == {}


async def test_the_local_leg_keeps_alive_when_the_broker_imposes_a_keep_alive() -> None:
    # limits.max_keepalive makes the core tell every 5.0 client a Server Keep Alive, the
    # bridge's own local leg included [MQTT-3.2.2-21]: it must ping to stay connected.
    bridge = bridge_table("ab", free_port(), [{"pattern": "#", "qos": 1}])
    async with started(broker_config(bridge=[bridge], limits={"max_keepalive": 1})) as a:
        connection = a.broker.sessions["$bridge/ab"].connection
        assert connection is not None and connection.keep_alive == 1
        await asyncio.sleep(3.0)
        assert a.broker.sessions["$bridge/ab"].connection is connection


async def test_an_unreadable_tls_file_is_a_config_error_naming_the_bridge(
    tmp_path: Path,
) -> None:
    from mqttd.app import App
    from mqttd.config import ConfigError

    missing = tmp_path / "nope.pem"
    bridge = bridge_table("ab", free_port(), BOTH, tls={"cafile": str(missing)})
    app = App(broker_config(bridge=[bridge]))
    with pytest.raises(ConfigError) as error:
        await app.start()
    [line] = error.value.lines
    assert line.startswith("config error: bridge[0].tls: cannot load")
    assert str(missing) in line


async def test_a_remote_message_too_large_for_this_broker_is_dropped_not_fatal() -> None:
    async with started(broker_config()) as b:
        # 3.1.1: the remote is not told this broker's Maximum Packet Size.
        bridge = bridge_table("ab", b.port, [{"pattern": "in/#", "direction": "in", "qos": 1}])
        config = broker_config(bridge=[bridge], limits={"max_packet_size": 200})
        async with started(config) as a:
            await bridge_up(a, "ab")
            on_a = await Peer.connect(a.port, "on-a")
            await on_a.subscribe("in/#", 1)
            on_b = await Peer.connect(b.port, "on-b")
            await on_b.publish("in/big", b"x" * 1000, qos=1)
            await on_b.publish("in/small", b"ok", qos=1)
            [message] = await on_a.expect(1)
            assert message.topic == "in/small"
            service = a.bridge_service
            assert service is not None
            stats = service.bridges["ab"].stats
            assert (stats.connects, stats.messages_dropped) == (1, 1)
            await on_a.close()
            await on_b.close()
