"""The cluster's bound on packets (limits.py) against the bytes its NATS copies take.

For any PUBLISH whose packet is within `packet_limit(max_payload, node)` and whose
publisher's client id is within `CLIENT_ID_ROOM`, every NATS copy the node makes fits
`max_payload`: the envelope on core NATS, the envelope with its `Nats-Msg-Id` header in
the messages stream, the session record that carries it with its header, and
`fits` says so. A will record (nodes.WillRecord) of a CONNECT within the bound fits too.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mqttd.cluster.envelope import Envelope, encode_envelope
from mqttd.cluster.limits import CLIENT_ID_ROOM, copy_overhead, fits, header_size, packet_limit
from mqttd.cluster.nodes import WillRecord
from mqttd.cluster.records import ADD_OUTBOUND, encode_record
from mqttd.protocol import Connect, Properties, Publish, Will
from mqttd.protocol.encoder import encode
from mqttd.store.base import StoredMessage

MAX_PAYLOAD = 4096
NODE = "node-with-a-long-name-0123456789"

texts = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00+#"), max_size=40
)
# Client ids of exactly CLIENT_ID_ROOM bytes: the tightest case the limit allows for.
client_ids = (
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=64)
    .filter(lambda c: len(c.encode()) <= CLIENT_ID_ROOM)
    .map(lambda c: c + "c" * (CLIENT_ID_ROOM - len(c.encode())))
)


def properties(user: list[tuple[str, str]], content_type: str | None) -> Properties | None:
    if not user and content_type is None:
        return None
    return Properties(
        user_property=tuple(user), content_type=content_type, message_expiry_interval=60
    )


@settings(max_examples=200, deadline=None)
@given(
    topic=texts.filter(bool),
    client_id=client_ids,
    qos=st.integers(0, 2),
    level=st.sampled_from([4, 5]),
    user=st.lists(st.tuples(texts, texts), max_size=3),
    content_type=st.none() | texts,
    sub_ids=st.lists(st.integers(1, 268_435_455), max_size=30),
)
def test_every_copy_of_a_message_within_the_limit_fits_nats(
    topic: str,
    client_id: str,
    qos: int,
    level: int,
    user: list[tuple[str, str]],
    content_type: str | None,
    sub_ids: list[int],
) -> None:
    limit = packet_limit(MAX_PAYLOAD, NODE)
    props = properties(user, content_type) if level == 5 else None
    packet_id = 65535 if qos else None

    def packet(n: int) -> bytes:
        return encode(Publish(topic, b"p" * n, qos, False, False, packet_id, props), level)

    empty = len(packet(0))
    if empty > limit:
        return
    n = limit - empty
    while len(packet(n)) > limit:
        n -= 1
    payload = b"p" * n
    envelope = encode_envelope(
        Envelope(topic, payload, qos, True, props, client_id, NODE, 2**63 - 1, 2**64 - 1, 1e12)
    )
    message_id = f"{NODE}.{2**63 - 1}.{2**64 - 1}"
    assert fits(len(envelope), MAX_PAYLOAD, NODE)
    assert len(envelope) + copy_overhead(NODE) <= MAX_PAYLOAD
    assert len(envelope) + header_size(message_id) <= MAX_PAYLOAD  # the messages stream
    message = StoredMessage(topic, payload, qos, True, props, 1e12, client_id)
    record = encode_record(
        ADD_OUTBOUND, [2**64 - 1, qos, True, sub_ids, 65535, 3, message_id], message
    )
    assert len(record) + header_size(f"{NODE}.{2**63 - 1}.{2**64 - 1}") <= MAX_PAYLOAD


@settings(max_examples=100, deadline=None)
@given(client_id=client_ids, topic=texts.filter(bool), level=st.sampled_from([4, 5]))
def test_a_will_of_a_connect_within_the_limit_fits_the_wills_bucket(
    client_id: str, topic: str, level: int
) -> None:
    limit = packet_limit(MAX_PAYLOAD, NODE)

    def connect(n: int) -> bytes:
        props = Properties(will_delay_interval=5) if level == 5 else None
        will = Will(topic, b"w" * n, 1, True, props)
        return encode(Connect(client_id, level, True, 60, will=will), level)

    if len(connect(0)) > limit:
        return
    n = limit - len(connect(0))
    while len(connect(n)) > limit:
        n -= 1
    envelope = encode_envelope(
        Envelope(topic, b"w" * n, 1, True, None, client_id, NODE, 2**63 - 1, 2**64 - 1)
    )
    record = WillRecord(client_id, NODE, "f" * 16, 2**32 - 1, envelope).encode()
    assert len(record) <= MAX_PAYLOAD


def test_a_will_record_reads_back_and_so_does_the_earlier_json_form() -> None:
    record = WillRecord("c\u00e9", "a", "0123456789abcdef", 5, b"\x01\x00{envelope")
    assert WillRecord.decode(record.encode()) == record
    earlier = b'{"client_id": "c", "node": "a", "life": "l", "delay": 0, "envelope": "AQI="}'
    assert WillRecord.decode(earlier) == WillRecord("c", "a", "l", 0, b"\x01\x02")
    for bad in (b"", b"\x00\x00\x00\x09{}", b"\x00\x00\x00\x02{}"):
        try:
            WillRecord.decode(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} decoded")
