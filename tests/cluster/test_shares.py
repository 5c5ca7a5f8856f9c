"""How a node settles the shared groups' messages it takes from JetStream (shares.py),
without NATS: a real core (`Harness`) as the host, messages handed in as JetStream would
deliver them, and the acknowledgements the node would send read from its queue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from nats.aio.msg import Msg
from support.core import Client, Harness

from mqttd.broker.backplane import InProcessBackplane, InProcessHub
from mqttd.broker.message import Message
from mqttd.cluster.durable import SessionLog
from mqttd.cluster.envelope import Envelope, encode_envelope
from mqttd.cluster.shares import SharedConsumers, _Group, consumer_name
from mqttd.protocol import PubAck, PubComp, Publish, PubRec, PubRel

ACK, NAK, PROGRESS = b"+ACK", b"-NAK", b"+WPI"


class FakeLog:
    """The messages stream's names, and `when_stored` run when the test says."""

    messages = "mqttd_t_messages"
    message_prefix = "mqttd.t.m"

    def __init__(self) -> None:
        self.waiting: list[Callable[[], None]] = []

    def when_stored(self, callback: Callable[[], None]) -> None:
        self.waiting.append(callback)


class Node:
    """One core and its `SharedConsumers`, fed by hand."""

    def __init__(self) -> None:
        self.harness = Harness()
        backplane = InProcessBackplane(InProcessHub())
        self.harness.broker.use_backplane(backplane)
        self.log = FakeLog()
        self.shares = SharedConsumers(
            cast(Any, None),
            cast(Any, None),
            cast(SessionLog, self.log),
            lambda: backplane.host,
            lambda e: Message(e.topic, e.payload, e.qos, e.retain, e.properties, None, e.origin),
            lambda e: None,
            10.0,
        )
        self.group = _Group("g", "t/#")
        self._delivery = 0

    def member(self, client_id: str, qos: int = 1, **connect: Any) -> Client:
        client = self.harness.connected(client_id, **connect)
        client.subscribe("$share/g/t/#", qos=qos)
        return client

    def deliver(self, seq: int, qos: int = 1, topic: str = "t/x") -> str:
        """JetStream delivers message `seq` (again, if it did before); its ack subject."""
        self._delivery += 1
        reply = f"$JS.ACK.mqttd_t_messages.share_x.{self._delivery}.{seq}.1.0.0"
        data = encode_envelope(
            Envelope(topic, f"m{seq}".encode(), qos, False, None, "pub", "a", 7, seq)
        )
        msg = Msg(cast(Any, None), subject="mqttd.t.m.t.x", reply=reply, data=data)
        self.shares._take(self.group, msg)
        return reply

    def sent(self) -> list[tuple[str, bytes]]:
        acks = list(self.shares._acks)
        self.shares._acks.clear()
        return acks


def test_a_message_held_for_a_member_is_renewed_until_its_puback_then_acknowledged() -> None:
    node = Node()
    member = node.member("member")
    reply = node.deliver(1)
    (publish,) = member.publishes()
    assert node.sent() == [] and node.shares.holding == 1
    node.shares.renew()
    assert node.sent() == [(reply, PROGRESS)]  # still with the member: keep the hold
    assert publish.packet_id is not None
    member.send(PubAck(publish.packet_id))
    assert node.sent() == [(reply, ACK)]
    assert node.shares.holding == 0 and node.group.held == 0


def test_a_message_whose_member_ended_without_acknowledging_it_is_passed_on() -> None:
    node = Node()
    member = node.member("member")
    reply = node.deliver(1)
    member.lose()  # its clean session ends, nobody else here takes the message
    node.shares.renew()
    assert node.sent() == [(reply, NAK)]  # JetStream gives it to another node at once
    assert node.shares.holding == 0


def test_a_qos2_message_sent_to_its_member_is_acknowledged_at_once() -> None:
    node = Node()
    member = node.member("member", qos=2)
    reply = node.deliver(1, qos=2)
    assert len(member.publishes()) == 1
    # On its way to this member: it MUST NOT go to another one [MQTT-4.8.2-5].
    assert node.sent() == [(reply, ACK)]
    assert node.shares.holding == 0


def test_a_redelivery_is_recognised_by_the_message_id() -> None:
    node = Node()
    member = node.member("member")
    first = node.deliver(1)
    (publish,) = member.publishes()
    again = node.deliver(1)  # the hold lapsed (a renewal lost), back to this node
    assert member.publishes() == []  # not delivered twice
    assert node.sent() == [(again, PROGRESS)]
    assert first != again
    assert publish.packet_id is not None
    member.send(PubAck(publish.packet_id))
    assert node.sent() == [(again, ACK)]  # under the newest delivery's subject
    late = node.deliver(1)  # settled here already: its ACK got lost on the way
    assert member.publishes() == []
    assert node.sent() == [(late, ACK)]


def test_no_member_here_passes_the_message_on_and_a_persistent_member_keeps_it() -> None:
    node = Node()
    nobody = node.deliver(1)
    assert node.sent() == [(nobody, NAK)]
    member = node.member("persistent", clean_start=False)
    stored = node.deliver(2)
    assert len(member.publishes()) == 1
    assert node.sent() == []  # acknowledged once the member's session log stored it
    for callback in node.log.waiting:
        callback()
    assert node.sent() == [(stored, ACK)]
    other = node.deliver(3, topic="u/x")  # a widened filter's subject: not this group's
    assert node.sent() == [(other, ACK)]
    assert member.publishes() == []


def test_a_stopping_node_passes_what_comes_on() -> None:
    node = Node()
    member = node.member("member")
    node.shares.accepting = False
    reply = node.deliver(1)
    assert member.publishes() == []
    assert node.sent() == [(reply, NAK)]


def test_a_queued_qos2_message_is_settled_by_the_renewal_after_it_went_out() -> None:
    node = Node()
    member = node.member("member", qos=2)
    session = member.conn.session
    assert session is not None
    session.window = 1  # one QoS 2 PUBLISH in flight at most
    first = node.deliver(1, qos=2)
    second = node.deliver(2, qos=2)  # queued behind the first
    assert node.sent() == [(first, ACK)]
    node.shares.renew()
    assert node.sent() == [(second, PROGRESS)]  # still queued: may still go elsewhere
    (publish,) = member.publishes()
    assert publish.packet_id is not None
    member.send(PubRec(publish.packet_id))
    member.send(PubComp(publish.packet_id))  # the window opens: the second goes out
    assert [type(p) for p in member.packets()] == [PubRel, Publish]
    node.shares.renew()
    assert node.sent() == [(second, ACK)]  # sent: it stays with its member
    assert node.shares.holding == 0


def test_each_group_and_subject_has_its_own_consumer() -> None:
    names = {
        consumer_name("g", "a/#", "mqttd.t.m.a"),
        consumer_name("g", "a/#", "mqttd.t.m.a.>"),
        consumer_name("g", "a", "mqttd.t.m.a"),  # another group, the same subject
        consumer_name("h", "a", "mqttd.t.m.a"),
    }
    assert len(names) == 4
    assert consumer_name("g", "a", "mqttd.t.m.a") == consumer_name("g", "a", "mqttd.t.m.a")
    assert all(len(name) < 64 and name.isascii() and "." not in name for name in names)


def test_a_message_the_core_dropped_for_a_connected_member_is_settled() -> None:
    node = Node()
    member = node.member("member")
    session = member.conn.session
    assert session is not None
    session.window = 1
    session.set_queue_limits(1, 0, "drop_new")
    sent, queued, dropped = node.deliver(1), node.deliver(2), node.deliver(3)
    assert len(member.publishes()) == 1
    node.shares.renew()
    # Dropped (queue full) as one broker drops it: not given to another member.
    assert sorted(node.sent()) == sorted([(sent, PROGRESS), (queued, PROGRESS), (dropped, ACK)])
