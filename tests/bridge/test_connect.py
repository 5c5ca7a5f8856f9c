"""How a bridge connects: its CONNECT, the bridge bit and its fallback, keep alive, retries.

The remote here is `FakeRemote`, a server that records every CONNECT and answers as
the test says, so what the bridge sends can be checked field by field.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from mqttd.protocol import Connack, Connect, Properties
from mqttd.protocol.reason_codes import ReasonCode

from .helpers import FakeRemote, bridge_table, broker_config, started, wait_for

pytestmark = pytest.mark.timeout(60)

TOPICS = [{"pattern": "#", "direction": "both", "qos": 1}]


async def test_connect_fields_of_a_3_1_1_bridge() -> None:
    remote = await FakeRemote(lambda c: Connack(False, 0)).start()
    try:
        bridge = bridge_table(
            "site",
            remote.port,
            TOPICS,
            username="u",
            password="p",
            keepalive=17,
        )
        async with started(broker_config(bridge=[bridge])) as a:
            await wait_for(lambda: a.bridges["site"] == 1)
        [connect] = remote.connects[:1]
        assert connect.protocol_level == 4
        assert connect.bridge  # try_private defaults to true
        assert connect.client_id == f"mqttd-bridge-site-{socket.gethostname()}"
        assert not connect.clean_start  # Mosquitto's cleansession false
        assert (connect.username, connect.password, connect.keep_alive) == ("u", b"p", 17)
        assert connect.will is None
    finally:
        await remote.stop()


async def test_connect_fields_of_a_5_0_bridge() -> None:
    remote = await FakeRemote(lambda c: Connack(False, 0, Properties())).start()
    try:
        bridge = bridge_table(
            "site",
            remote.port,
            TOPICS,
            protocol_version=5,
            client_id="edge-7",
            clean_start=True,
            session_expiry=3600,
        )
        config = broker_config(bridge=[bridge], limits={"max_packet_size": 100_000})
        async with started(config) as a:
            await wait_for(lambda: a.bridges["site"] == 1)
        connect = remote.connects[0]
        assert connect.protocol_level == 5
        assert not connect.bridge  # 5.0 has No Local instead of the bridge bit
        assert connect.client_id == "edge-7"
        assert connect.clean_start
        assert connect.properties is not None
        assert connect.properties.session_expiry_interval == 3600
        # Nothing larger than this broker takes may be sent for it to pass on.
        assert connect.properties.maximum_packet_size == 100_000
    finally:
        await remote.stop()


async def test_a_refused_bridge_bit_falls_back_to_plain_3_1_1() -> None:
    def answer(connect: Connect) -> Connack:
        # Like a broker that knows nothing of try_private: 0x01, unacceptable version.
        return Connack(False, 1 if connect.bridge else 0)

    remote = await FakeRemote(answer).start()
    try:
        async with started(broker_config(bridge=[bridge_table("b", remote.port, TOPICS)])) as a:
            await wait_for(lambda: a.bridges["b"] == 1)
        assert [c.bridge for c in remote.connects[:2]] == [True, False]
        assert {c.protocol_level for c in remote.connects} == {4}
    finally:
        await remote.stop()


async def test_try_private_false_never_sends_the_bridge_bit() -> None:
    remote = await FakeRemote(lambda c: Connack(False, 0)).start()
    try:
        bridge = bridge_table("b", remote.port, TOPICS, try_private=False)
        async with started(broker_config(bridge=[bridge])) as a:
            await wait_for(lambda: a.bridges["b"] == 1)
        assert not remote.connects[0].bridge
    finally:
        await remote.stop()


async def test_a_refusing_remote_is_retried_with_backoff() -> None:
    remote = await FakeRemote(lambda c: Connack(False, ReasonCode.NOT_AUTHORIZED)).start()
    try:
        bridge = bridge_table("b", remote.port, TOPICS, protocol_version=5)
        async with started(broker_config(bridge=[bridge])) as a:
            await wait_for(lambda: len(remote.connects) >= 3)
            service = a.bridge_service
            assert service is not None
            bridge_obj = service.bridges["b"]
            # The remote counts a CONNECT before the bridge has read its refusal.
            await wait_for(lambda: bridge_obj.stats.connect_failures >= 3)
            assert a.bridges == {"b": 0}
            assert "0x87" in bridge_obj.last_error
    finally:
        await remote.stop()


async def test_a_remote_that_stops_answering_is_dropped_after_the_keep_alive() -> None:
    remote = await FakeRemote(lambda c: Connack(False, 0)).start()
    remote.pingresp = False
    try:
        bridge = bridge_table("b", remote.port, TOPICS, keepalive=1)
        async with started(broker_config(bridge=[bridge])) as a:
            await wait_for(lambda: a.bridges["b"] == 1)
            # No PINGRESP within a keep alive of the PINGREQ: the bridge reconnects.
            await wait_for(lambda: len(remote.connects) >= 2, timeout=6)
    finally:
        await remote.stop()


async def test_a_remote_that_answers_pings_stays_connected() -> None:
    remote = await FakeRemote(lambda c: Connack(False, 0)).start()
    try:
        bridge = bridge_table("b", remote.port, TOPICS, keepalive=1)
        async with started(broker_config(bridge=[bridge])) as a:
            await wait_for(lambda: a.bridges["b"] == 1)
            await asyncio.sleep(3)
            assert len(remote.connects) == 1
            assert a.bridges["b"] == 1
    finally:
        await remote.stop()
