"""The bytes of one message between nodes: everything MQTT 5 delivery needs survives."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqttd.cluster.envelope import Envelope, EnvelopeError, decode_envelope, encode_envelope
from mqttd.protocol import Properties


def _text(min_size: int = 0, max_size: int = 8) -> st.SearchStrategy[str]:
    """MQTT strings: never U+0000 [MQTT-1.5.4-2], never a lone surrogate."""
    return st.text(
        alphabet=st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]),
        min_size=min_size,
        max_size=max_size,
    )


properties = st.one_of(
    st.none(),
    st.builds(
        Properties,
        payload_format_indicator=st.sampled_from([None, 0, 1]),
        message_expiry_interval=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
        content_type=st.one_of(st.none(), _text(max_size=8)),
        response_topic=st.one_of(st.none(), st.just("reply/to")),
        correlation_data=st.one_of(st.none(), st.binary(max_size=8)),
        user_property=st.lists(st.tuples(st.just("k"), _text(max_size=4)), max_size=3).map(tuple),
    ),
)


@given(
    topic=_text(1, 20),
    payload=st.binary(max_size=64),
    qos=st.integers(0, 2),
    retain=st.booleans(),
    props=properties,
    origin=st.one_of(st.none(), _text(max_size=10)),
    seq=st.integers(0, 2**64 - 1),
    expiry=st.one_of(st.none(), st.floats(1.0, 4e9)),
)
def test_an_envelope_goes_there_and_back(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    props: Properties | None,
    origin: str | None,
    seq: int,
    expiry: float | None,
) -> None:
    envelope = Envelope(topic, payload, qos, retain, props, origin, "node-a", 42, seq, expiry)
    back = decode_envelope(encode_envelope(envelope))
    if props is not None and props.is_empty():
        back.properties = back.properties or Properties()
    assert back == envelope


def test_a_cleared_retained_topic_is_marked() -> None:
    envelope = Envelope("r/1", b"", 0, True, None, None, "b", 7, 0, None, cleared=True)
    assert decode_envelope(encode_envelope(envelope)).cleared


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01\x00", b"\x02" + bytes(25), b"\x01" + bytes(25) + b"\x00\x05ab"],
    ids=["empty", "short", "version", "cut"],
)
def test_bytes_that_are_no_envelope_are_refused(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        decode_envelope(data)
