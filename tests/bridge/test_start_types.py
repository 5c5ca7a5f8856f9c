"""Mosquitto's bridge options in mqttd: start_type once/lazy, round_robin, notifications.

Two (or three) mqttd Apps in the test's event loop, as in test_inprocess.py.
"""

from __future__ import annotations

import asyncio

import pytest
from support.servers import free_port

from .helpers import Peer, bridge_table, bridge_up, broker_config, started, wait_for

pytestmark = pytest.mark.timeout(60)

OUT = [{"pattern": "t/#", "direction": "out", "qos": 1}]


@pytest.mark.parametrize(("start_type", "reconnects"), [("automatic", True), ("once", False)])
async def test_start_type_once_never_reconnects(start_type: str, reconnects: bool) -> None:
    port = free_port()
    bridge = bridge_table("b", port, OUT, start_type=start_type)
    async with started(broker_config(port)) as remote, started(broker_config(bridge=[bridge])) as a:
        await bridge_up(a, "b")
        await remote.stop()
        await wait_for(lambda: a.bridges.get("b") == 0)
        async with started(broker_config(port)):
            if reconnects:
                await bridge_up(a, "b")
            else:
                await asyncio.sleep(0.6)  # 12 times reconnect_delay_max of the fixture
                assert a.bridges.get("b") == 0


async def test_start_type_lazy_connects_at_the_threshold_and_stops_when_idle() -> None:
    async with started(broker_config()) as remote:
        bridge = bridge_table(
            "lz", remote.port, OUT, start_type="lazy", threshold=3, idle_timeout=0.3
        )
        async with started(broker_config(bridge=[bridge])) as a:
            watcher = await Peer.connect(remote.port, "watcher")
            await watcher.subscribe("t/#", 1)
            publisher = await Peer.connect(a.port, "pub")
            await asyncio.sleep(0.3)
            assert a.bridges.get("lz") == 0  # nothing waits: not connected
            await publisher.publish("t/1", b"1", qos=1)
            await publisher.publish("t/2", b"2", qos=1)
            await asyncio.sleep(0.3)
            assert a.bridges.get("lz") == 0  # 2 < threshold
            await publisher.publish("t/3", b"3", qos=1)
            await bridge_up(a, "lz")
            assert [m.payload for m in await watcher.expect(3)] == [b"1", b"2", b"3"]
            await wait_for(lambda: a.bridges.get("lz") == 0, 3)  # idle_timeout: stopped
            await publisher.publish("t/4", b"4", qos=1)  # waits for the threshold again
            await watcher.expect_none(0.3)
            for i in (5, 6):
                await publisher.publish(f"t/{i}", str(i).encode(), qos=1)
            assert [m.payload for m in await watcher.expect(3)] == [b"4", b"5", b"6"]
            await publisher.close()
            await watcher.close()


@pytest.mark.parametrize(("round_robin", "next_index"), [(False, 0), (True, 1)])
async def test_round_robin_moves_on_to_the_next_address(round_robin: bool, next_index: int) -> None:
    async with started(broker_config()) as r0, started(broker_config()) as r1:
        ports = [r0.port, r1.port]
        bridge = bridge_table("rr", r0.port, OUT, round_robin=round_robin, client_id="rr-bridge")
        bridge["addresses"] = [f"127.0.0.1:{p}" for p in ports]
        async with started(broker_config(bridge=[bridge])) as a:
            await bridge_up(a, "rr")
            service = a.bridge_service
            assert service is not None
            live = service.bridges["rr"]
            assert live.address == f"127.0.0.1:{ports[0]}"
            # Take the bridge's client id over on the first remote: the connection is lost
            # although that remote is still up.
            thief = await Peer.connect(ports[0], "rr-bridge")
            await wait_for(lambda: live.address is None or live.stats.connects >= 2)
            await thief.close()
            await wait_for(lambda: live.stats.connects >= 2 and live.address is not None)
            assert live.address == f"127.0.0.1:{ports[next_index]}"


async def test_notifications_local_and_remote() -> None:
    async with started(broker_config()) as remote:
        bridge = bridge_table(
            "nt", remote.port, OUT, notification_topic="bridges/nt", notifications_local_only=False
        )
        on_remote = await Peer.connect(remote.port, "on-remote")
        await on_remote.subscribe("bridges/#", 1)
        app = started(broker_config(bridge=[bridge]))
        a = await app.__aenter__()
        try:
            await bridge_up(a, "nt")
            on_local = await Peer.connect(a.port, "on-local")
            await on_local.subscribe("bridges/#", 1)
            (local,) = await on_local.expect(1)
            assert (local.topic, local.payload, local.retain) == ("bridges/nt", b"1", True)
            got = [(m.topic, m.payload) for m in await on_remote.expect(1)]
            assert got == [("bridges/nt", b"1")]
            await on_local.close()
        finally:
            await app.__aexit__(None, None, None)
        # A clean stop says "0" on the remote (a DISCONNECT discards the will).
        assert [(m.topic, m.payload) for m in await on_remote.expect(1)] == [("bridges/nt", b"0")]
        await on_remote.close()


async def test_notifications_off_publishes_no_state() -> None:
    async with started(broker_config()) as remote:
        bridge = bridge_table("quiet", remote.port, OUT, notifications=False)
        async with started(broker_config(bridge=[bridge])) as a:
            await bridge_up(a, "quiet")
            on_local = await Peer.connect(a.port, "on-local")
            await on_local.subscribe("$SYS/broker/connection/#", 1)
            await on_local.expect_none(0.3)
            await on_local.close()
