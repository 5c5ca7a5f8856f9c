"""SUBSCRIBE and UNSUBSCRIBE from a client: the connection's side (3.8-3.11).

The broker's subscriptions change in subscriptions.py (`Subscriptions`: the tree, the
shared groups, the store, the cluster's interest) and their policy is subscription.py's;
here the packet is read and answered. SUBACK carries one code per filter, in order:
the granted QoS or a refusal (0x80 for 3.x, the reason for 5.0, with a Reason String
if the client asked for problem information). The retained messages of the new
subscriptions go after the SUBACK (Retain Handling, 3.8.3.1). A 3.x UNSUBACK carries
no codes; a 5.0 one has one per filter (3.11.3).

In a cluster a subscription must take effect on every node, not only here: the other
nodes route a topic here only once NATS has this node's interest in it. A SUBSCRIBE
that adds a filter new to its session announces it to the backplane first
(`Subscriptions.announce`); if the backplane says that interest is not confirmed yet
(`Backplane.interest_pending`), the SUBSCRIBE waits (`_HeldSubscribe`): the connection
holds the packets that follow it (`Connection.hold_packets`), and once the backplane
answers, the subscriptions take effect, the SUBACK and the retained messages go, and
the held packets are handled in order. So a message published on any node after the
client got its SUBACK reaches it, and nothing for the new subscription can come before
its SUBACK. On one node, and for filters the node's interest already covers, all of it
happens at once, as before.

These are functions of the `Connection`, kept here as inbound.py keeps PUBLISH: its
transition table calls `on_subscribe` and `on_unsubscribe` in the CONNECTED state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol.encoder import encode
from ..protocol.packets import SubAck, UnsubAck
from .reason_strings import reason_properties

if TYPE_CHECKING:
    from ..protocol.packets import Subscribe, Unsubscribe
    from .connection import Connection
    from .session import Session
    from .subscriptions import Granted

__all__ = ["on_subscribe", "on_unsubscribe"]


def on_subscribe(conn: Connection, packet: Subscribe) -> None:
    """Apply a SUBSCRIBE, answer SUBACK, then send the new subscriptions' retained
    messages; in a cluster, once the other nodes route its new filters here."""
    session = conn.session
    assert session is not None
    if conn.bridge and conn.protocol_level != 5:
        # As Mosquitto: a 3.x bridge never gets its own messages back and keeps the
        # retain flag (3.x has no subscription options to ask for either).
        for sub in packet.subscriptions:
            sub.no_local = sub.retain_as_published = True
    subscriptions = conn.broker.subscriptions
    codes, granted = subscriptions.check(session, packet, conn.broker.authorise)
    announced = subscriptions.announce(session, granted)
    if announced:
        backplane = subscriptions.backplane
        assert backplane is not None
        held = _HeldSubscribe(conn, session, packet.packet_id, codes, granted, announced)
        if backplane.interest_pending(announced, held):
            conn.hold_packets()
            return
    _answer(conn, session, packet.packet_id, codes, granted, announced)


def _answer(
    conn: Connection,
    session: Session,
    packet_id: int,
    codes: list[int],
    granted: list[Granted],
    announced: list[str],
) -> None:
    # The subscriptions take effect, the SUBACK goes, then their retained messages.
    broker = conn.broker
    retained = broker.subscriptions.apply(session, granted, announced)
    if conn.protocol_level == 5:
        failed = max(codes)
        props = reason_properties(failed) if conn.problem_info else None
        conn.write(conn.encode_v5(SubAck(packet_id, codes, props)))
    else:
        conn.write(encode(SubAck(packet_id, codes), conn.protocol_level))
    for topic_filter, options in retained:
        broker.deliver_retained(session, topic_filter, options)


class _HeldSubscribe:
    """A SUBSCRIBE waiting for the cluster's interest in its new filters; called once
    the backplane confirmed it (or gave up waiting): applies and answers it."""

    __slots__ = ("announced", "codes", "conn", "granted", "packet_id", "session")

    def __init__(
        self,
        conn: Connection,
        session: Session,
        packet_id: int,
        codes: list[int],
        granted: list[Granted],
        announced: list[str],
    ) -> None:
        self.conn = conn
        self.session = session
        self.packet_id = packet_id
        self.codes = codes
        self.granted = granted
        self.announced = announced

    def __call__(self) -> None:
        conn = self.conn
        if conn.closed or conn.session is not self.session:
            # The client went away (or was taken over) before its SUBACK: no
            # subscription, and the cluster forgets the interest announced for it.
            conn.broker.subscriptions.withdraw(self.announced)
            return
        _answer(conn, self.session, self.packet_id, self.codes, self.granted, self.announced)
        conn.release_packets()


def on_unsubscribe(conn: Connection, packet: Unsubscribe) -> None:
    """Apply an UNSUBSCRIBE and answer UNSUBACK."""
    session = conn.session
    assert session is not None
    codes = conn.broker.subscriptions.unsubscribe(session, packet.topic_filters)
    if conn.protocol_level != 5:
        codes = []
    conn.write(encode(UnsubAck(packet.packet_id, codes), conn.protocol_level))
