"""Every limit against hostile or runaway clients, one test each, on the sans-IO core.

The defaults are in mqttd/broker/settings.py and SECURITY.md; here each limit is set
low and shown to hold, and to say why in the way MQTT allows (5.0 reason codes; 3.x
return codes or a closed socket).
"""

from __future__ import annotations

from support.core import Harness, settings

from mqttd.auth.limits import AddressRateLimiter, TokenBucket, address_of
from mqttd.protocol import Connack, Disconnect, Properties, Publish
from mqttd.protocol.reason_codes import ReasonCode


def harness(**overrides: object) -> Harness:
    return Harness(settings(**overrides))


# -- the building blocks ----------------------------------------------------------------------


def test_a_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(0.0) == 0.1  # one into debt: a tenth of a second to pay it back
    assert bucket.take(0.0) == 0.2
    assert bucket.take(1.0) == 0.0  # ten tokens later the debt is paid
    assert not bucket.full(1.0)
    assert bucket.full(2.0)


def test_an_address_limiter_counts_each_address_alone() -> None:
    limiter = AddressRateLimiter(rate=1, burst=2)
    assert limiter.allow("10.0.0.1", 0.0) and limiter.allow("10.0.0.1", 0.0)
    assert not limiter.allow("10.0.0.1", 0.0)
    assert limiter.allow("10.0.0.2", 0.0)
    assert limiter.allow("10.0.0.1", 1.0)


def test_an_address_limiter_stays_bounded_under_a_scan() -> None:
    limiter = AddressRateLimiter(rate=1000, burst=1)
    for i in range(30_000):
        limiter.allow(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", i / 1000)
    assert len(limiter) <= 10_000


def test_address_of_peers() -> None:
    assert address_of("10.0.0.1:1883") == "10.0.0.1"
    assert address_of("[::1]:1883") == "::1"
    assert address_of("?") == "?"


# -- connections -----------------------------------------------------------------------------------


def test_max_connections_closes_sockets_beyond_it() -> None:
    h = harness(max_connections=2)
    first, second = h.client(), h.client()
    third = h.client()
    assert third.closed and not first.closed and not second.closed
    assert h.broker.stats.connections_refused == 1
    first.lose()
    assert not h.client().closed  # room again


def test_connect_timeout_closes_a_socket_that_never_sends_connect() -> None:
    h = harness(connect_timeout=5.0)
    client = h.client()
    client.send_bytes(b"\x10\x7f")  # a CONNECT header whose body never comes
    h.advance(4.9)
    assert not client.closed
    h.advance(0.2)
    assert client.closed


def test_connection_rate_refuses_an_address_over_it() -> None:
    h = harness(connection_rate=1.0, connection_burst=2)
    for i in range(2):
        assert h.client(level=5).connect(f"ok{i}").reason_code == 0
    refused = h.client(level=5)
    assert refused.connect("too-fast").reason_code == ReasonCode.CONNECTION_RATE_EXCEEDED
    assert refused.closed
    refused3 = h.client(level=4)
    assert refused3.connect("too-fast-3").reason_code == 0x03  # Server unavailable
    h.advance(1.0)
    assert h.client(level=5).connect("later").reason_code == 0


def test_connection_rate_is_per_source_address() -> None:
    from support.core import Client

    h = harness(connection_rate=1.0, connection_burst=1)
    assert h.client().connect("a").reason_code == 0
    assert h.client().connect("b").reason_code == 0x03
    other = Client(h.broker, 4, "192.0.2.7:1000")
    assert other.connect("c").reason_code == 0


def test_max_client_id_length() -> None:
    h = harness(max_client_id_length=23)
    assert h.client(level=5).connect("x" * 23).reason_code == 0
    too_long = h.client(level=5).connect("y" * 24)
    assert too_long.reason_code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID


# -- packets and topics ---------------------------------------------------------------------


def test_max_packet_size_is_advertised_and_enforced() -> None:
    h = harness(max_packet_size=1024)
    client = h.client(level=5)
    connack = client.connect("big")
    assert connack.properties is not None and connack.properties.maximum_packet_size == 1024
    client.publish("t", b"x" * 2000)
    assert client.expect(Disconnect).reason_code == ReasonCode.PACKET_TOO_LARGE
    assert client.closed


def test_a_huge_remaining_length_is_refused_from_the_header() -> None:
    # 268435455 announced: refused before a byte of the body is buffered.
    h = harness(max_packet_size=1 << 20)
    client = h.client(level=4)
    client.connect("c")
    client.send_bytes(b"\x30\xff\xff\xff\x7f")
    assert client.closed


def test_max_topic_length_and_levels() -> None:
    h = harness(max_topic_length=20, max_topic_levels=3)
    client = h.client(level=5)
    client.connect("t")
    suback = client.subscribe("a/b/c", "a/b/c/d", "x" * 21)
    invalid = ReasonCode.TOPIC_FILTER_INVALID
    assert suback.reason_codes == [0, invalid, invalid]
    client.publish("a/b/c/d", b"deep")
    assert client.expect(Disconnect).reason_code == ReasonCode.TOPIC_NAME_INVALID


def test_max_subscriptions_per_client() -> None:
    h = harness(max_subscriptions_per_client=2)
    v5 = h.client(level=5)
    v5.connect("five")
    assert v5.subscribe("a", "b", "c").reason_codes == [0, 0, ReasonCode.QUOTA_EXCEEDED]
    assert v5.subscribe("a", packet_id=2).reason_codes == [0]  # a replacement is no new one
    v4 = h.client(level=4)
    v4.connect("four")
    assert v4.subscribe("a", "b", "c").reason_codes == [0, 0, 0x80]


# -- messages -------------------------------------------------------------------------------


def test_max_inflight_messages_bounds_the_unacknowledged_window() -> None:
    h = harness(max_inflight_messages=3)
    receiver = h.connected("r")
    receiver.subscribe("t", qos=1)
    sender = h.connected("s")
    for i in range(10):
        sender.publish("t", str(i).encode(), qos=1, packet_id=i + 1)
    assert len(receiver.publishes()) == 3
    session = h.broker.sessions["r"]
    assert len(session.inflight) == 3 and len(session.queue) == 7


def test_max_queued_messages_bounds_an_offline_session() -> None:
    h = harness(max_queued_messages=5)
    receiver = h.connected("r", clean_start=False)
    receiver.subscribe("t", qos=1)
    receiver.lose()
    sender = h.connected("s")
    for i in range(50):
        sender.publish("t", b"m", qos=1, packet_id=i + 1)
    assert len(h.broker.sessions["r"].queue) == 5


def test_max_queued_bytes_bounds_an_offline_session() -> None:
    h = harness(max_queued_messages=0, max_queued_bytes=1000)
    receiver = h.connected("r", clean_start=False)
    receiver.subscribe("t", qos=1)
    receiver.lose()
    sender = h.connected("s")
    for i in range(50):
        sender.publish("t", b"x" * 300, qos=1, packet_id=i + 1)
    session = h.broker.sessions["r"]
    assert session.queued_bytes <= 1000 and len(session.queue) == 3


def test_receive_maximum_bounds_what_a_5_0_publisher_may_leave_unacknowledged() -> None:
    h = harness(receive_maximum=2)
    client = h.client(level=5)
    client.connect("p")
    for pid in (1, 2):
        client.publish("t", qos=2, packet_id=pid)  # PUBREC sent, awaiting PUBREL
    client.packets()
    client.publish("t", qos=2, packet_id=3)
    assert client.expect(Disconnect).reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED


def test_max_publish_rate_pauses_reading_and_drops_nothing() -> None:
    h = harness(max_publish_rate=10.0, publish_burst=5)
    receiver = h.connected("r")
    receiver.subscribe("t")
    sender = h.connected("s", keep_alive=2)
    for i in range(8):
        sender.publish("t", str(i).encode())
    assert not sender.sink.reading  # 3 over the burst: paused for 0.3 s
    assert [p.payload for p in receiver.publishes()] == [str(i).encode() for i in range(8)]
    h.advance(0.29)
    assert not sender.sink.reading
    h.advance(0.02)
    assert sender.sink.reading
    # The pause is the broker's doing: it does not count against the client's keepalive.
    assert not sender.closed


def test_a_long_throttle_does_not_expire_the_keepalive() -> None:
    h = harness(max_publish_rate=1.0, publish_burst=1)
    sender = h.connected("s", keep_alive=1)  # 1.5 s of silence would end it
    sender.send(*[Publish("t", b"x", 0) for _ in range(5)])  # 4 s of debt
    assert not sender.sink.reading
    h.advance(3.0)
    assert not sender.closed
    h.advance(1.1)
    assert sender.sink.reading and not sender.closed


def test_connack_properties_still_report_limits() -> None:
    h = harness(receive_maximum=100, max_packet_size=4096)
    client = h.client(level=5)
    connack: Connack = client.connect("c")
    props = connack.properties or Properties()
    assert (props.receive_maximum, props.maximum_packet_size) == (100, 4096)
