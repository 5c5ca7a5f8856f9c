"""Garbage in: the reader may only ever raise MQTTError subclasses, whatever it is fed.

Random bytes rarely get past the fixed header, so most cases start from a valid packet
and mutate it (flip, insert, delete, truncate, overwrite), which reaches the body
decoders and the property parser. Whatever decodes must also re-encode or raise
ValueError (a decoded Topic Alias 0, say): never anything else.
"""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqttd.protocol import MQTTError, Packet, PacketReader, encode

from .strategies import packets

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

reader_levels = st.sampled_from([None, 3, 4, 5])


def feed_and_check(data: bytes, level: int | None) -> None:
    reader = PacketReader(protocol_level=level, max_packet_size=4096)
    try:
        decoded = reader.feed(data)
    except MQTTError as exc:
        # The reader's last-resort net turns an IndexError into MalformedPacket; if it
        # ever fires, a bounds check is missing somewhere.
        assert not isinstance(exc.__cause__, IndexError), exc
        return
    for packet in decoded:
        _reencode(packet, reader.protocol_level or 4)


def _reencode(packet: Packet, level: int) -> None:
    # ValueError is fine: e.g. a Topic Alias 0 we accepted but would never send.
    with contextlib.suppress(ValueError):
        encode(packet, level)


@SETTINGS
@given(data=st.binary(max_size=200), level=reader_levels)
def test_random_bytes_raise_only_mqtt_errors(data: bytes, level: int | None) -> None:
    feed_and_check(data, level)


@st.composite
def mutated_packets(draw: st.DrawFn) -> tuple[bytes, int]:
    level = draw(st.sampled_from([4, 5]))
    data = bytearray(encode(draw(packets(level)), level))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        index = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif action == "set" and data:
            data[index] = draw(st.integers(0, 255))
        elif action == "insert":
            data[index:index] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete" and data:
            del data[index]
        elif action == "truncate":
            del data[index:]
    return bytes(data), level


@SETTINGS
@given(case=mutated_packets())
def test_mutated_packets_raise_only_mqtt_errors(case: tuple[bytes, int]) -> None:
    data, level = case
    feed_and_check(data, level)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated_packets(), cuts=st.lists(st.integers(0, 400), max_size=5))
def test_mutated_stream_in_pieces_raises_only_mqtt_errors(
    case: tuple[bytes, int], cuts: list[int]
) -> None:
    data, level = case
    reader = PacketReader(protocol_level=level)
    start = 0
    try:
        for cut in [*sorted(c for c in cuts if c < len(data)), len(data)]:
            reader.feed(data[start:cut])
            start = cut
    except MQTTError:
        pass
