"""The compact record a retained message is kept as (broker/retained_record.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mqttd.broker.message import Message
from mqttd.broker.retained import RetainedTree
from mqttd.broker.retained_record import message_of, pack, pack_fields
from mqttd.protocol.properties import Properties

# Client ids up to the 65,535 UTF-8 bytes of an MQTT string, any code point but surrogates.
origins = st.none() | st.text(st.characters(exclude_categories=["Cs"]), max_size=300)


def _fields(m: Message) -> tuple[object, ...]:
    return (m.topic, m.payload, m.qos, m.retain, m.properties, m.expiry_at, m.origin)


@given(
    topic=st.text(min_size=1, max_size=50),
    payload=st.binary(min_size=1, max_size=300),
    qos=st.integers(0, 2),
    retain=st.booleans(),
    origin=origins,
)
def test_a_message_without_properties_or_expiry_round_trips_through_one_bytes_record(
    topic: str, payload: bytes, qos: int, retain: bool, origin: str | None
) -> None:
    message = Message(topic, payload, qos, retain, None, None, origin)
    record = pack(message)
    assert type(record) is bytes
    assert _fields(message_of(topic, record)) == _fields(message)


def test_a_long_client_id_keeps_its_length_in_three_7_bit_groups() -> None:
    origin = "é" * 30_000  # 60,000 bytes of UTF-8
    record = pack_fields(1, True, origin, b"\x00payload")
    back = message_of("t", record)
    assert back.origin == origin and back.payload == b"\x00payload" and back.qos == 1


@given(expiry=st.none() | st.floats(0, 1e9), user=st.booleans())
def test_a_message_with_properties_or_expiry_is_kept_whole_and_read_as_a_copy(
    expiry: float | None, user: bool
) -> None:
    properties = Properties(user_property=(("k", "v"),)) if user else None
    message = Message("a/b", b"x", 1, True, properties, expiry, "pub")
    record = pack(message)
    if properties is None and expiry is None:
        assert type(record) is bytes
    else:
        assert record is message
    read = message_of("a/b", record)
    assert read is not message
    assert _fields(read) == _fields(message)


def test_every_read_of_a_retained_message_is_a_new_message() -> None:
    # A delivery sets store_id and caches encodings on its Message: the next reader
    # must not see them.
    tree: RetainedTree[Message] = RetainedTree(pack, message_of)
    tree.set("a/b", Message("a/b", b"1", 1, True, None, None, "pub"))
    first = tree.get("a/b")
    assert first is not None
    first.store_id = 7
    second = tree.get("a/b")
    assert second is not None and second is not first and second.store_id is None
    assert [(t, m.payload, m.origin) for t, m in tree.iter_match("#")] == [("a/b", b"1", "pub")]
    assert [(t, m.qos) for t, m in tree.match("a/+")] == [("a/b", 1)]
    assert [t for t, _ in tree.iter_sorted("#")] == ["a/b"]


def test_loaded_records_read_back_as_messages() -> None:
    tree: RetainedTree[Message] = RetainedTree(pack, message_of)
    tree.load([("x/y", pack_fields(0, True, None, b"p"))])
    got = tree.get("x/y")
    assert got is not None and (got.payload, got.origin, got.retain) == (b"p", None, True)
