"""Property tests: every valid packet survives encode then decode unchanged.

Packets come from `strategies.py`, which draws only what a sender may legally send at
each level, with every property in every place the spec allows it. Example counts are
kept moderate so the whole protocol suite stays well under a minute on a loaded machine.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqttd.protocol import Connect, Packet, PacketReader, decode_packet, encode

from .strategies import packet_strategies

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CASES = [(level, name) for level in (3, 4, 5) for name in packet_strategies(level)]


@pytest.mark.parametrize(("level", "name"), CASES, ids=[f"v{lv}-{n}" for lv, n in CASES])
@SETTINGS
@given(data=st.data())
def test_decode_of_encode_is_identity_and_encoding_is_canonical(
    level: int, name: str, data: st.DataObject
) -> None:
    packet = data.draw(packet_strategies(level)[name])
    encoded = encode(packet, level)
    decoded = decode_packet(encoded, level)
    assert decoded == packet
    assert encode(decoded, level) == encoded


@SETTINGS
@given(connect=packet_strategies(5)["CONNECT"] | packet_strategies(4)["CONNECT"])
def test_server_reader_decodes_connect_at_its_own_level(connect: Packet) -> None:
    assert isinstance(connect, Connect)
    reader = PacketReader()
    assert reader.feed(encode(connect, connect.protocol_level)) == [connect]
    assert reader.protocol_level == connect.protocol_level
