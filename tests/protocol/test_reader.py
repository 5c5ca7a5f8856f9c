"""PacketReader as a stream decoder: chunking, buffering, size limits, levels, errors."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqttd.protocol import (
    Connect,
    MalformedPacket,
    Packet,
    PacketReader,
    PacketTooLarge,
    PingReq,
    Properties,
    Publish,
    ReasonCode,
    decode_packet,
    encode,
)

from .strategies import packet_strategies

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def feed_all(reader: PacketReader, data: bytes) -> list[Packet]:
    """`feed`, going on after a CONNECT (the reader stops there, as a server wants)."""
    out = reader.feed(data)
    if reader.stopped:
        out += reader.feed(b"")
    return out


def feed_in_pieces(reader: PacketReader, data: bytes, cuts: list[int]) -> list[Packet]:
    out: list[Packet] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        out += feed_all(reader, data[start:cut])
        start = cut
    return out


@st.composite
def streams(draw: st.DrawFn) -> tuple[int, list[Packet], bytes]:
    """A client's stream: CONNECT at some level, then packets at that level."""
    level = draw(st.sampled_from([4, 5]))
    by_type = packet_strategies(level)
    connect = draw(by_type.pop("CONNECT"))
    rest = draw(st.lists(st.one_of(list(by_type.values())), max_size=6))
    sequence = [connect, *rest]
    return level, sequence, b"".join(encode(p, level) for p in sequence)


@SETTINGS
@given(stream=streams(), data=st.data())
def test_any_split_of_the_stream_gives_the_same_packets(
    stream: tuple[int, list[Packet], bytes], data: st.DataObject
) -> None:
    _, sequence, encoded = stream
    assert feed_all(PacketReader(), encoded) == sequence
    cuts = data.draw(st.lists(st.integers(0, len(encoded)), max_size=8))
    assert feed_in_pieces(PacketReader(), encoded, cuts) == sequence


@SETTINGS
@given(stream=streams())
def test_one_byte_at_a_time_gives_the_same_packets(
    stream: tuple[int, list[Packet], bytes],
) -> None:
    _, sequence, encoded = stream
    assert feed_in_pieces(PacketReader(), encoded, list(range(len(encoded)))) == sequence


def test_accepts_bytearray_and_memoryview() -> None:
    data = encode(Publish("a", b"x"), 4) + encode(PingReq(), 4)
    assert PacketReader().feed(bytearray(data)) == [Publish("a", b"x"), PingReq()]
    assert PacketReader().feed(memoryview(data)) == [Publish("a", b"x"), PingReq()]


def test_incomplete_tail_waits_and_is_counted_as_buffered() -> None:
    data = encode(Publish("a/b", b"0123456789", 1, packet_id=3), 4)
    reader = PacketReader(protocol_level=4)
    assert reader.feed(data[:1]) == []
    assert reader.buffered == 1
    assert reader.feed(data[1:7]) == []
    assert reader.buffered == 7
    assert reader.feed(data[7:] + data[:3]) == [Publish("a/b", b"0123456789", 1, packet_id=3)]
    assert reader.buffered == 3


def test_large_packet_in_many_chunks() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: four-byte... three-byte Remaining Length
    data = encode(Publish("big", payload, 2, packet_id=9), 5)
    reader = PacketReader(protocol_level=5)
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    received: list[Packet] = []
    for chunk in chunks:
        received += reader.feed(chunk)
    assert received == [Publish("big", payload, 2, packet_id=9)]
    assert reader.buffered == 0


def test_connect_sets_the_level_for_packets_after_it_in_the_same_call() -> None:
    connect = Connect("c", 5)
    publish = Publish("t", b"p", properties=Properties(user_property=(("k", "v"),)))
    reader = PacketReader()
    assert feed_all(reader, encode(connect, 5) + encode(publish, 5)) == [connect, publish]
    assert reader.protocol_level == 5


def test_before_connect_packets_decode_as_3_1_1() -> None:
    # 5.0 bytes of a QoS 0 PUBLISH with an empty property block: at 3.1.1 the 00 is payload.
    [publish] = PacketReader().feed(bytes.fromhex("30 06 00 01 74 00 68 69"))
    assert publish == Publish("t", b"\x00hi")


def test_protocol_level_may_be_changed_between_calls() -> None:
    reader = PacketReader(protocol_level=4)
    data = bytes.fromhex("30 06 00 01 74 00 68 69")
    assert reader.feed(data) == [Publish("t", b"\x00hi")]
    reader.protocol_level = 5
    assert reader.feed(data) == [Publish("t", b"hi")]


# ---- Maximum packet size: checked from the fixed header, before the body arrives -------


def test_packet_too_large_is_refused_from_the_fixed_header_alone() -> None:
    reader = PacketReader(max_packet_size=100, protocol_level=4)
    # PUBLISH, Remaining Length 200 (C8 01): 203 bytes in all; no body sent.
    with pytest.raises(PacketTooLarge) as caught:
        reader.feed(bytes.fromhex("30 C8 01"))
    assert caught.value.reason_code == ReasonCode.PACKET_TOO_LARGE


def test_packet_too_large_waits_for_the_whole_remaining_length() -> None:
    reader = PacketReader(max_packet_size=100, protocol_level=4)
    assert reader.feed(bytes.fromhex("30 C8")) == []
    with pytest.raises(PacketTooLarge):
        reader.feed(bytes.fromhex("01"))


def test_packet_of_exactly_the_maximum_size_is_accepted() -> None:
    data = encode(Publish("t", b"x" * 95), 4)  # 2 + 3 + 95 = 100 bytes
    assert len(data) == 100
    assert PacketReader(max_packet_size=100).feed(data) == [Publish("t", b"x" * 95)]
    with pytest.raises(PacketTooLarge):
        PacketReader(max_packet_size=99).feed(data)


def test_max_packet_size_counts_the_fixed_header() -> None:
    # Remaining Length 0x4000 needs three bytes: 1 + 3 + 16384 = 16388 bytes.
    header = bytes.fromhex("30 80 80 01")
    with pytest.raises(PacketTooLarge):
        PacketReader(max_packet_size=16387).feed(header)
    assert PacketReader(max_packet_size=16388).feed(header) == []


def test_max_packet_size_may_be_lowered_between_calls() -> None:
    reader = PacketReader(protocol_level=4)
    data = encode(Publish("t", b"x" * 50), 4)
    assert reader.feed(data) == [Publish("t", b"x" * 50)]
    reader.max_packet_size = 20
    with pytest.raises(PacketTooLarge):
        reader.feed(data)


# ---- Errors -----------------------------------------------------------------------------


def test_reader_is_dead_after_an_error() -> None:
    reader = PacketReader(protocol_level=4)
    with pytest.raises(MalformedPacket) as first:
        reader.feed(bytes.fromhex("36 05 00 03 61 2F 62"))  # QoS 3
    with pytest.raises(MalformedPacket) as again:
        reader.feed(encode(PingReq(), 4))
    assert again.value is first.value


def test_garbage_first_byte_is_refused_before_its_body_arrives() -> None:
    """'GET ' from an HTTP client: type 4 (PUBACK) with flags 7, length 0x45."""
    with pytest.raises(MalformedPacket):
        PacketReader().feed(b"GET ")


def test_decode_packet_wants_exactly_one_whole_packet() -> None:
    data = encode(PingReq(), 4)
    assert decode_packet(data, 4) == PingReq()
    with pytest.raises(MalformedPacket):
        decode_packet(data + data, 4)
    with pytest.raises(MalformedPacket):
        decode_packet(encode(Publish("a", b"b"), 4)[:-1], 4)
    with pytest.raises(MalformedPacket):
        decode_packet(b"", 4)


def test_a_connect_ends_the_feed_so_the_server_can_set_the_next_limit() -> None:
    connect = encode(Connect("c", 4, True, 0), 4)
    big = encode(Publish("t", b"x" * 5000, 0), 4)
    reader = PacketReader(max_packet_size=1000)
    got = reader.feed(connect + big[:100])
    assert [type(p) for p in got] == [Connect] and reader.stopped
    reader.max_packet_size = 10_000  # the CONNECT was accepted
    assert reader.feed(b"") == [] and not reader.stopped
    (publish,) = reader.feed(big[100:])
    assert isinstance(publish, Publish) and len(publish.payload) == 5000


def test_the_connect_limit_applies_to_what_follows_until_lifted() -> None:
    connect = encode(Connect("c", 4, True, 0), 4)
    big = encode(Publish("t", b"x" * 5000, 0), 4)
    reader = PacketReader(max_packet_size=1000)
    assert [type(p) for p in reader.feed(connect + big)] == [Connect]
    with pytest.raises(PacketTooLarge):
        reader.feed(b"")  # not accepted (yet): the small limit still holds
