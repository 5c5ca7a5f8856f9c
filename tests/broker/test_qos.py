"""QoS 1 and 2 in both directions: acks, packet ids, windows, queueing, redelivery."""

from __future__ import annotations

from typing import Any

from support.core import Harness

from mqttd.protocol import (
    Disconnect,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
)
from mqttd.store.base import OutboundState, StoredOutbound
from mqttd.store.memory import MemoryStore

# -- inbound (client -> broker) ------------------------------------------------------------


def test_inbound_qos1_gets_puback_with_its_packet_id(harness: Harness) -> None:
    pub = harness.connected("pub")
    pub.publish("t", qos=1, packet_id=42)
    assert pub.expect(PubAck) == PubAck(42)


def test_inbound_qos2_flow_pubrec_pubrel_pubcomp(harness: Harness) -> None:
    sub = harness.connected("sub")
    sub.subscribe("t", qos=2)
    pub = harness.connected("pub")
    pub.publish("t", b"once", qos=2, packet_id=9)
    assert pub.expect(PubRec) == PubRec(9)
    assert [p.payload for p in sub.publishes()] == [b"once"]
    pub.send(PubRel(9))
    assert pub.expect(PubComp) == PubComp(9)
    assert harness.broker.sessions["pub"].inbound_qos2 == set()


def test_duplicate_inbound_qos2_before_pubrel_is_never_delivered_twice(harness: Harness) -> None:
    sub = harness.connected("sub")
    sub.subscribe("t", qos=2)
    pub = harness.connected("pub", level=5)
    pub.publish("t", b"once", qos=2, packet_id=9)
    pub.publish("t", b"once", qos=2, packet_id=9, dup=True)
    # [MQTT-4.3.3-10]: a resend before PUBREL is acknowledged again, not an error.
    assert pub.packets() == [PubRec(9), PubRec(9)]
    assert len(sub.publishes()) == 1
    pub.send(PubRel(9))
    assert pub.expect(PubComp) == PubComp(9)
    pub.publish("t", b"again", qos=2, packet_id=9)
    assert pub.expect(PubRec) == PubRec(9)
    assert [p.payload for p in sub.publishes()] == [b"again"]


def test_inbound_qos2_id_survives_reconnect_of_a_persistent_session(harness: Harness) -> None:
    sub = harness.connected("sub")
    sub.subscribe("t", qos=2)
    pub = harness.connected("pub", clean_start=False)
    pub.publish("t", b"once", qos=2, packet_id=3)
    pub.lose()
    pub = harness.connected("pub", clean_start=False)
    pub.publish("t", b"once", qos=2, packet_id=3, dup=True)
    assert pub.expect(PubRec) == PubRec(3)
    assert len(sub.publishes()) == 1


def test_5_pubrel_for_an_unknown_id_gets_pubcomp_0x92(harness: Harness) -> None:
    pub = harness.connected("pub", level=5)
    pub.send(PubRel(77))
    assert pub.expect(PubComp) == PubComp(77, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)


def test_3x_pubrel_for_an_unknown_id_still_gets_pubcomp(harness: Harness) -> None:
    pub = harness.connected("pub", level=4)
    pub.send(PubRel(77))
    assert pub.expect(PubComp) == PubComp(77)


def test_5_qos1_with_an_id_awaiting_pubrel_gets_0x91(harness: Harness) -> None:
    pub = harness.connected("pub", level=5)
    pub.publish("t", qos=2, packet_id=5)
    pub.packets()
    pub.publish("t", qos=1, packet_id=5)
    assert pub.expect(PubAck).reason_code == ReasonCode.PACKET_IDENTIFIER_IN_USE


def test_5_puback_says_0x10_when_nobody_subscribed(harness: Harness) -> None:
    pub = harness.connected("pub", level=5)
    pub.publish("nobody", qos=1, packet_id=1)
    assert pub.expect(PubAck).reason_code == ReasonCode.NO_MATCHING_SUBSCRIBERS
    pub.publish("nobody", qos=2, packet_id=2)
    assert pub.expect(PubRec).reason_code == ReasonCode.NO_MATCHING_SUBSCRIBERS


def test_client_exceeding_our_receive_maximum_gets_disconnect_0x93(make_harness: Any) -> None:
    harness = make_harness(receive_maximum=2)
    pub = harness.connected("pub", level=5)
    pub.publish("t", qos=2, packet_id=1)
    pub.publish("t", qos=2, packet_id=2)
    assert len(pub.packets()) == 2
    pub.publish("t", qos=2, packet_id=3)
    assert pub.expect(Disconnect).reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED
    assert pub.closed


def test_pubrel_frees_room_in_our_receive_maximum(make_harness: Any) -> None:
    harness = make_harness(receive_maximum=1)
    pub = harness.connected("pub", level=5)
    for pid in (1, 2, 3):
        pub.publish("t", qos=2, packet_id=pid)
        pub.send(PubRel(pid))
        assert pub.packets() == [PubRec(pid, 0x10), PubComp(pid)]
    assert not pub.closed


# -- outbound (broker -> client) -----------------------------------------------------------


def test_outbound_qos1_ids_are_unique_while_inflight_and_freed_by_puback(
    harness: Harness,
) -> None:
    sub = harness.connected("sub")
    sub.subscribe("t", qos=1)
    pub = harness.connected("pub")
    for i in range(5):
        pub.publish("t", bytes([i]), qos=1, packet_id=i + 1)
    got = sub.publishes()
    ids = [p.packet_id for p in got]
    assert len(set(ids)) == 5
    assert all(p.qos == 1 and not p.dup for p in got)
    session = harness.broker.sessions["sub"]
    assert sorted(session.inflight) == sorted(i for i in ids if i is not None)
    for p in got:
        sub.ack(p)
    assert session.inflight == {}


class _OutboundRecords(MemoryStore):
    """A memory store that counts the changes to outbound messages it is told of."""

    def __init__(self) -> None:
        super().__init__()
        self.changes = 0

    def add_outbound(self, client_id: str, outbound: StoredOutbound) -> None:
        self.changes += 1
        super().add_outbound(client_id, outbound)

    def set_outbound_state(
        self, client_id: str, seq: int, packet_id: int | None, state: OutboundState
    ) -> None:
        self.changes += 1
        super().set_outbound_state(client_id, seq, packet_id, state)

    def remove_outbound(self, client_id: str, seq: int) -> None:
        self.changes += 1
        super().remove_outbound(client_id, seq)


def test_a_clean_sessions_deliveries_go_in_flight_without_the_store() -> None:
    # Session._deliver_entry's clean-session path (issue 19): packet id, write, entry.
    store = _OutboundRecords()
    harness = Harness(store=store)
    sub = harness.connected("sub")
    sub.subscribe("q1", qos=1)
    sub.subscribe("q2", qos=2)
    pub = harness.connected("pub")
    pub.publish("q1", b"1", qos=1, packet_id=1)
    pub.publish("q2", b"2", qos=2, packet_id=2)
    got = sub.publishes()
    assert [(p.qos, p.packet_id) for p in got] == [(1, 1), (2, 2)]
    session = harness.broker.sessions["sub"]
    assert [(pid, e.packet_id, e.state) for pid, e in session.inflight.items()] == [
        (1, 1, OutboundState.PUBLISH_SENT),
        (2, 2, OutboundState.PUBLISH_SENT),
    ]
    assert session.next_packet_id == 3
    sub.ack(got[0])
    sub.ack(got[1])
    assert session.inflight == {}
    assert store.changes == 0


def test_packet_id_allocation_skips_ids_still_inflight(harness: Harness) -> None:
    sub = harness.connected("sub")
    sub.subscribe("t", qos=1)
    session = harness.broker.sessions["sub"]
    pub = harness.connected("pub")
    pub.publish("t", qos=1)
    first = sub.publishes()[0]
    assert first.packet_id == 1
    # Wrap the allocator around: the next id to try is the one still inflight.
    session.next_packet_id = 65_535
    pub.publish("t", qos=1)
    pub.publish("t", qos=1)
    ids = [p.packet_id for p in sub.publishes()]
    assert ids == [65_535, 2]


def test_outbound_qos2_flow(harness: Harness) -> None:
    sub = harness.connected("sub")
    sub.subscribe("t", qos=2)
    harness.connected("pub").publish("t", b"m", qos=2)
    (p,) = sub.publishes()
    assert p.qos == 2
    sub.send(PubRec(p.packet_id or 0))
    assert sub.expect(PubRel) == PubRel(p.packet_id or 0)
    sub.send(PubComp(p.packet_id or 0))
    assert harness.broker.sessions["sub"].inflight == {}


def test_5_pubrec_with_an_error_code_ends_the_flow_without_pubrel(harness: Harness) -> None:
    sub = harness.connected("sub", level=5)
    sub.subscribe("t", qos=2)
    harness.connected("pub").publish("t", b"m", qos=2)
    (p,) = sub.publishes()
    sub.send(PubRec(p.packet_id or 0, ReasonCode.UNSPECIFIED_ERROR))
    assert sub.packets() == []
    assert harness.broker.sessions["sub"].inflight == {}


def test_5_pubrec_for_an_unknown_id_gets_pubrel_0x92(harness: Harness) -> None:
    sub = harness.connected("sub", level=5)
    sub.send(PubRec(1234))
    assert sub.expect(PubRel) == PubRel(1234, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)


def test_inflight_window_holds_the_rest_in_order(make_harness: Any) -> None:
    harness = make_harness(max_inflight_messages=2)
    sub = harness.connected("sub")
    sub.subscribe("t", qos=1)
    pub = harness.connected("pub")
    for i in range(5):
        pub.publish("t", bytes([i]), qos=1, packet_id=i + 1)
    first = sub.publishes()
    assert [p.payload for p in first] == [b"\x00", b"\x01"]
    assert len(harness.broker.sessions["sub"].queue) == 3
    sub.ack(first[0])
    second = sub.publishes()
    assert [p.payload for p in second] == [b"\x02"]
    sub.ack(first[1])
    sub.ack(second[0])
    assert [p.payload for p in sub.publishes()] == [b"\x03", b"\x04"]


def test_5_client_receive_maximum_caps_the_window(make_harness: Any) -> None:
    harness = make_harness(max_inflight_messages=20)
    sub = harness.connected("sub", level=5, properties=Properties(receive_maximum=1))
    sub.subscribe("t", qos=1)
    pub = harness.connected("pub")
    for i in range(3):
        pub.publish("t", bytes([i]), qos=1, packet_id=i + 1)
    got = sub.publishes()
    assert len(got) == 1
    sub.ack(got[0])
    assert len(sub.publishes()) == 1


def test_qos0_is_not_held_back_by_a_full_window(make_harness: Any) -> None:
    harness = make_harness(max_inflight_messages=1)
    sub = harness.connected("sub")
    sub.subscribe("t", qos=1)
    pub = harness.connected("pub")
    pub.publish("t", b"1", qos=1)
    pub.publish("t", b"2", qos=1, packet_id=2)
    pub.publish("t", b"3", qos=0)
    assert [(p.payload, p.qos) for p in sub.publishes()] == [(b"1", 1), (b"3", 0)]


def test_unacknowledged_messages_are_resent_with_dup_on_resume(harness: Harness) -> None:
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("q1", qos=1)
    sub.subscribe("q2", qos=2, packet_id=2)
    pub = harness.connected("pub")
    pub.publish("q1", b"one", qos=1)
    pub.publish("q2", b"two", qos=2, packet_id=2)
    pub.publish("q2", b"three", qos=2, packet_id=3)
    one, two, three = sub.publishes()
    sub.send(PubRec(three.packet_id or 0))
    assert sub.expect(PubRel) == PubRel(three.packet_id or 0)
    sub.lose()

    again = harness.client(4)
    assert again.connect("sub", clean_start=False).session_present
    got = again.packets()
    assert got == [
        Publish("q1", b"one", 1, False, True, one.packet_id),
        Publish("q2", b"two", 2, False, True, two.packet_id),
        PubRel(three.packet_id or 0),
    ]


def test_messages_beyond_the_window_follow_the_redelivered_ones(make_harness: Any) -> None:
    harness = make_harness(max_inflight_messages=1)
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("t", qos=1)
    pub = harness.connected("pub")
    for i in range(3):
        pub.publish("t", bytes([i]), qos=1, packet_id=i + 1)
    sub.lose()
    again = harness.connected("sub", clean_start=False)
    first = again.publishes()
    assert [(p.payload, p.dup) for p in first] == [(b"\x00", True)]
    again.ack(first[0])
    second = again.publishes()
    assert [(p.payload, p.dup) for p in second] == [(b"\x01", False)]
