"""The bridge bit (Mosquitto's try_private): in the codec, and how mqttd treats such a client.

A CONNECT whose protocol level byte is 0x80 | level says "I am a bridge". Mosquitto
then gives every subscription of that client No Local and Retain As Published (3.x has
no subscription options to ask for them), so a bridge never gets its own messages back
and retained messages keep their flag across it. mqttd does the same.
"""

from __future__ import annotations

import pytest

from mqttd.protocol import (
    Connect,
    UnsupportedProtocolVersion,
    decode_packet,
    encode,
)

from .helpers import Peer, broker_config, started

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    ("name", "level_byte", "level"),
    [("MQIsdp", 0x83, 3), ("MQTT", 0x84, 4), ("MQTT", 0x85, 5)],
)
def test_reader_accepts_the_bridge_bit(name: str, level_byte: int, level: int) -> None:
    body = len(name).to_bytes(2, "big") + name.encode() + bytes((level_byte, 0x02, 0, 60))
    if level == 5:
        body += b"\x00"  # no properties
    body += b"\x00\x02br"
    connect = decode_packet(bytes((0x10, len(body))) + body, level)
    assert isinstance(connect, Connect)
    assert (connect.protocol_level, connect.bridge, connect.client_id) == (level, True, "br")


def test_reader_still_refuses_unknown_levels_with_the_top_bit() -> None:
    body = b"\x00\x04MQTT" + bytes((0x86, 0x02, 0, 60)) + b"\x00\x02br"
    with pytest.raises(UnsupportedProtocolVersion) as refused:
        decode_packet(bytes((0x10, len(body))) + body, 4)
    assert refused.value.protocol_level == 0x86


@pytest.mark.parametrize("level", [3, 4])
def test_encoder_writes_the_bridge_bit_and_reads_it_back(level: int) -> None:
    name = "MQIsdp" if level == 3 else "MQTT"
    packet = Connect("edge", level, False, 60, protocol_name=name, bridge=True)
    data = encode(packet, level)
    assert data[4 + len(name)] == 0x80 | level
    assert decode_packet(data, level) == packet


def test_without_the_bridge_bit_the_level_byte_is_unchanged() -> None:
    data = encode(Connect("edge", 4, True, 60), 4)
    assert data[8] == 4


@pytest.mark.parametrize("level", [3, 4])
async def test_a_3x_bridge_client_never_gets_its_own_messages_back(level: int) -> None:
    async with started(broker_config()) as app:
        bridge = await Peer.connect(app.port, "mosquitto-bridge", level=level, bridge=True)
        plain = await Peer.connect(app.port, "plain", level=level)
        connection = next(c for c in app.broker.connections if c.client_id == "mosquitto-bridge")
        assert connection.bridge and connection.protocol_level == level
        await bridge.subscribe("#", 1)
        await plain.subscribe("#", 1)
        await bridge.publish("from/bridge", b"1", qos=1)
        await plain.publish("from/plain", b"2", qos=1)
        assert [m.topic for m in await plain.expect(2)] == ["from/bridge", "from/plain"]
        # The bridge gets the other client's message only: No Local.
        assert [m.topic for m in await bridge.expect(1)] == ["from/plain"]
        await bridge.expect_none(0.3)
        await bridge.close()
        await plain.close()


async def test_a_3x_bridge_client_gets_the_retain_flag_as_published() -> None:
    async with started(broker_config()) as app:
        bridge = await Peer.connect(app.port, "mosquitto-bridge", bridge=True)
        plain = await Peer.connect(app.port, "plain")
        await bridge.subscribe("#", 1)
        await plain.subscribe("#", 1)
        publisher = await Peer.connect(app.port, "publisher")
        await publisher.publish("status", b"on", qos=1, retain=True)
        [to_bridge] = await bridge.expect(1)
        [to_plain] = await plain.expect(1)
        # [MQTT-3.3.1-9]: a live delivery has retain 0, except for a bridge (Mosquitto).
        assert to_bridge.retain and not to_plain.retain
        for peer in (bridge, plain, publisher):
            await peer.close()
