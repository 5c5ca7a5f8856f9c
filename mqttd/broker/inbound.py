"""PUBLISH and the QoS acknowledgements from a client (the packets of its QoS flows).

PUBLISH: what it goes through between the reader and `Broker.publish`.

The hot path of one inbound message (design.md): the publish-rate throttle (flow.py),
5.0 properties (Topic Alias resolved per connection [MQTT-3.3.2-9] [MQTT-3.3.2-10],
per-hop properties dropped, Message Expiry read), the payload format (0x99,
3.3.2.3.2), topic name rules and limits, Maximum QoS / Retain Available, `message_size_limit`, the
broker's own topics and the ACL, then routing and the acknowledgement: PUBACK/PUBREC
leave after the store commit when the message was recorded (`send_ack`), or for QoS 1
once every persistent receiver acknowledged it (`outbound.PublisherAck`), and 5.0
Receive Maximum is enforced [MQTT-3.3.4-9].

Acknowledgement order. A PUBACK/PUBREC for a message that was recorded in the store is
sent only from `store.after_commit` (the persistence contract), or, for a QoS 1
message, once every persistent receiver has acknowledged it (nothing then needs the
store: `outbound.PublisherAck`), whichever comes first. Once one ack waits, later acks
queue behind it (`Connection.acks`, sent by `Connection.send_ready_acks`), so acks
leave in the order the PUBLISH packets came [MQTT-4.6.0-2], [MQTT-4.6.0-3].

These are functions of the `Connection`, kept here so connection.py stays the state
machine: its transition table calls `on_publish`, `on_puback`, `on_pubrec`, `on_pubrel`
and `on_pubcomp` for those packets in the CONNECTED state.
They read the connection's public fields (the settings it caches, its session, its
broker) as its own handlers do; nothing else calls them.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING

from ..protocol.errors import ProtocolError, TopicNameInvalid
from ..protocol.packets import PubAck, PubComp, Publish, PubRec, PubRel
from ..protocol.properties import Properties
from ..protocol.reason_codes import ReasonCode
from ..protocol.topics import is_topic_name, is_utf8
from ..store.base import OutboundState
from .dead_letter import DropReason
from .delivery import MATCHED, RECORDED, REFUSED
from .flow import throttle
from .message import Message
from .outbound import PublisherAck
from .reason_strings import reason_properties

if TYPE_CHECKING:
    from .connection import Connection
    from .session import Session

__all__ = [
    "ACK_CLASS",
    "PUBACK",
    "PUBCOMP",
    "PUBREC",
    "PUBREL",
    "on_puback",
    "on_pubcomp",
    "on_publish",
    "on_pubrec",
    "on_pubrel",
    "send_ack",
]

logger = logging.getLogger("mqttd.connection")

# First bytes of the acknowledgements the server sends (`send_ack`).
PUBACK = 0x40
PUBREC = 0x50
PUBREL = 0x62
PUBCOMP = 0x70
ACK_CLASS: dict[int, type[PubAck | PubRec | PubRel | PubComp]] = {
    PUBACK: PubAck,
    PUBREC: PubRec,
    PUBREL: PubRel,
    PUBCOMP: PubComp,
}


def on_publish(conn: Connection, packet: Publish) -> None:
    """A PUBLISH from a CONNECTED client (the transition table's handler)."""
    conn.stats.publish_received += 1
    if conn.publish_bucket is not None:
        throttle(conn, conn.publish_bucket)
    topic = packet.topic
    props = packet.properties
    expiry_at: float | None = None
    if props is not None:
        resolved = _publish_properties(conn, topic, props)
        if resolved is None:
            return
        topic, props, expiry_at = resolved
        if (
            props is not None
            and props.payload_format_indicator == 1
            and conn.settings.validate_payload_format
            and not is_utf8(packet.payload)
        ):
            _payload_format_invalid(conn, packet)
            return
    # The reader has checked UTF-8, U+0000 and the length already [MQTT-4.7.3-1..3].
    if not topic or "+" in topic or "#" in topic:
        raise TopicNameInvalid(f"not a topic name: {topic!r} [MQTT-3.3.2-2]")
    if len(topic) > conn.max_topic_length or (
        conn.max_topic_levels and topic.count("/") >= conn.max_topic_levels
    ):
        raise TopicNameInvalid("topic name above max_topic_length or max_topic_levels")
    qos = packet.qos
    retain = packet.retain
    if qos > conn.maximum_qos:
        conn.disconnect(ReasonCode.QOS_NOT_SUPPORTED)  # [MQTT-3.2.2-11]
        return
    if retain and not conn.retain_available:
        conn.disconnect(ReasonCode.RETAIN_NOT_SUPPORTED)  # [MQTT-3.2.2-14]
        return
    limit = conn.settings.message_size_limit
    if limit and len(packet.payload) > limit:
        _payload_too_large(conn, packet)
        return
    session = conn.session
    assert session is not None
    broker = conn.broker
    authorise = broker.authorise
    dead_letters = broker.dead_letters
    # One character first ($SYS, the dead-letter prefix): rarely a client topic's, so
    # `closed_to_clients` is seldom called. `topic` is not empty (checked above).
    if (topic[0] in dead_letters.owned_first_chars and dead_letters.closed_to_clients(topic)) or (
        authorise is not None and not authorise(session.client_id, conn.username, "write", topic)
    ):
        _publish_denied(conn, qos, packet.packet_id, topic)
        dead_letters.drop(
            DropReason.NOT_AUTHORISED,
            Message(topic, packet.payload, qos, retain, props, expiry_at, conn.client_id),
        )
        return
    # The bytes as received are this message's PUBLISH for receivers at our level
    # (`raw`: 3.x only, no properties to differ); DUP is the sender's hop only.
    raw = packet.raw if not packet.dup and topic is packet.topic else None
    origin = conn.client_id
    message = Message(
        topic, packet.payload, qos, retain, props, expiry_at, origin, raw, conn.protocol_level
    )
    if not qos:
        broker.publish(message, session)
        return
    packet_id = packet.packet_id
    assert packet_id is not None
    v5 = conn.protocol_level == 5
    inbound_qos2 = session.inbound_qos2
    if qos == 2 and packet_id in inbound_qos2:
        # 4.3.3: the same id before PUBREL is a resend; acknowledge, never re-route.
        send_ack(conn, PUBREC, packet_id, 0, False)
        return
    if v5:
        if qos == 1 and packet_id in inbound_qos2:
            send_ack(conn, PUBACK, packet_id, ReasonCode.PACKET_IDENTIFIER_IN_USE, False)
            return
        if conn.qos1_unacked + len(inbound_qos2) >= conn.settings.receive_maximum:
            conn.disconnect(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED)  # [MQTT-3.3.4-9]
            return
    if qos == 2 and conn.settings.pubrec_first:
        _pubrec_first(conn, message, session, packet_id)
        return
    if qos == 1 and not retain and not broker.clustered:
        # The PUBACK may go before the commit once every persistent receiver has
        # acknowledged the message (outbound.PublisherAck, made by the first delivery
        # that holds it: `Session._hold`); a retained one stays in the store, so its
        # PUBACK waits for the commit. Not in a cluster: receivers on other nodes are
        # not counted here, so the PUBACK waits for JetStream.
        broker.acking = conn
        try:
            flags = broker.publish(message, session)
        finally:
            pending = broker.pending_ack
            broker.acking = broker.pending_ack = None
    else:
        pending = None
        flags = broker.publish(message, session)
    if not flags & MATCHED:
        if flags & REFUSED:
            return  # too large for the cluster: disconnected (0x95), never acknowledged
        if not retain:  # nobody got it (a retained one is kept)
            broker.dead_letters.drop(DropReason.NO_SUBSCRIBERS, message)
    recorded = (flags & RECORDED) != 0
    code = 0 if flags & MATCHED or not v5 else ReasonCode.NO_MATCHING_SUBSCRIBERS
    if qos == 1:
        if not recorded and not code and not conn.acks:
            # Nothing to wait for (no persistent receiver recorded it, no ack queued
            # before it): `send_ack`'s short PUBACK, written at once.
            conn.write(((PUBACK << 24) | 0x20000 | packet_id).to_bytes(4))
            return
        conn.qos1_unacked += 1
        send_ack(conn, PUBACK, packet_id, code, recorded, True, pending)
        return
    inbound_qos2.add(packet_id)
    if session.persistent:
        broker.store.add_inbound_qos2(session.client_id, packet_id)
        recorded = True
    send_ack(conn, PUBREC, packet_id, code, recorded)


def _pubrec_first(conn: Connection, message: Message, session: Session, packet_id: int) -> None:
    """Mosquitto's order for a QoS 2 PUBLISH: PUBREC (0x00: nobody is matched yet),
    then the message goes on, so the PUBREC leaves first, on this socket and (its
    flush scheduled first) before the forwarded PUBLISHes on others. config.py allows
    it only with the memory store, where no acknowledgement waits for a commit."""
    session.inbound_qos2.add(packet_id)
    if session.persistent:
        conn.broker.store.add_inbound_qos2(session.client_id, packet_id)
    send_ack(conn, PUBREC, packet_id, 0, False)
    if not conn.broker.publish(message, session) & MATCHED and not message.retain:
        conn.broker.dead_letters.drop(DropReason.NO_SUBSCRIBERS, message)


def _payload_too_large(conn: Connection, packet: Publish) -> None:
    """message_size_limit (Mosquitto's): the message is dropped and its QoS flow ends
    here, 5.0 with 0x83 in PUBACK/PUBREC, 3.x with a plain acknowledgement (3.x has no
    way to say no; a 3.x PUBREL then finds no id and gets its PUBCOMP anyway).

    0x83 Implementation specific error is what mosquitto.conf(5) documents; Mosquitto
    2.0 actually sends 0x95, which MQTT 5.0 does not allow in PUBACK/PUBREC (3.4.2.1).
    """
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "%r: PUBLISH to %r dropped: %d payload bytes above message_size_limit",
            conn,
            packet.topic,
            len(packet.payload),
        )
    packet_id = packet.packet_id
    if not packet.qos or packet_id is None:
        return
    code = ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR if conn.protocol_level == 5 else 0
    send_ack(conn, PUBACK if packet.qos == 1 else PUBREC, packet_id, code, False)


def _publish_denied(conn: Connection, qos: int, packet_id: int | None, topic: str) -> None:
    """The ACL refused a PUBLISH, or its topic is the broker's ($SYS, dead letters):
    nobody gets it; 5.0 acks say 0x87 (3.4.2.1).

    3.x has no way to say no: the message is acknowledged and dropped, as Mosquitto
    does, so the client does not resend it forever.
    """
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("%r: PUBLISH to %r denied (ACL or broker-owned topic)", conn, topic)
    if not qos or packet_id is None:
        return
    code = ReasonCode.NOT_AUTHORIZED if conn.protocol_level == 5 else 0
    send_ack(conn, PUBACK if qos == 1 else PUBREC, packet_id, code, False)


def _payload_format_invalid(conn: Connection, packet: Publish) -> None:
    """Payload Format Indicator 1 on a payload that is not UTF-8 (3.3.2.3.2): the
    message is refused with 0x99 (PUBACK/PUBREC; QoS 0 has none: DISCONNECT)."""
    packet_id = packet.packet_id
    if not packet.qos or packet_id is None:
        conn.disconnect(ReasonCode.PAYLOAD_FORMAT_INVALID)
        return
    # A refused QoS 2 flow ends at this PUBREC: its id is not kept [MQTT-4.3.3-9].
    first = PUBACK if packet.qos == 1 else PUBREC
    send_ack(conn, first, packet_id, ReasonCode.PAYLOAD_FORMAT_INVALID, False)


def _publish_properties(
    conn: Connection, topic: str, props: Properties
) -> tuple[str, Properties | None, float | None] | None:
    """Resolve a 5.0 Topic Alias, drop per-hop properties, read the expiry.

    Returns (topic, message properties, expiry deadline), or None when the
    connection was ended for a bad alias.
    """
    alias = props.topic_alias
    if alias is not None:
        if alias == 0 or alias > conn.alias_max:
            # [MQTT-3.3.2-9] [MQTT-3.3.2-10]
            conn.disconnect(ReasonCode.TOPIC_ALIAS_INVALID)
            return None
        aliases = conn.aliases
        if aliases is None:
            aliases = conn.aliases = {}
        if topic:
            aliases[alias] = topic
        else:
            known = aliases.get(alias)
            if known is None:
                raise ProtocolError(f"unknown topic alias {alias} (3.3.2.3.4)")
            topic = known
    if props.subscription_identifier:
        raise ProtocolError("PUBLISH from a client with a Subscription Identifier")
    if props.response_topic is not None and not is_topic_name(props.response_topic):
        raise ProtocolError("Response Topic is not a topic name [MQTT-3.3.2-14]")
    message_props: Properties | None = props
    if alias is not None:
        # The alias belongs to this hop only (3.3.2.3.4), never to the message.
        message_props = replace(props, topic_alias=None)
        if message_props.is_empty():
            message_props = None
    expiry_at: float | None = None
    if props.message_expiry_interval is not None:
        expiry_at = conn.broker.clock.now() + props.message_expiry_interval
    return topic, message_props, expiry_at


# -- acknowledgements from the client ------------------------------------------------


def _check_ack_type(session: Session, packet_id: int, name: str, qos: int) -> None:
    """An ack of the wrong type for an id in flight is a protocol error (4.3, 4.13).

    PUBACK ends QoS 1 flows only; PUBREC and PUBCOMP belong to QoS 2, and PUBCOMP
    only once the PUBREL went out. An id not in flight is no error (a late or
    resent ack after a reconnect): the handlers answer or ignore it as before.
    """
    entry = session.inflight.get(packet_id)
    if entry is None:
        return
    if entry.qos != qos:
        raise ProtocolError(f"{name} for QoS {entry.qos} packet id {packet_id} in flight")
    if name == "PUBCOMP" and entry.state != OutboundState.PUBREL_SENT:
        raise ProtocolError(f"PUBCOMP before PUBREL for packet id {packet_id}")


def on_puback(conn: Connection, packet: PubAck) -> None:
    session = conn.session
    assert session is not None
    packet_id = packet.packet_id
    # `_check_ack_type` inlined for PUBACK (one call less per QoS 1 delivery, measured
    # on fan-out QoS 1): an id in flight at QoS 2 is a protocol error (4.3). The one
    # lookup of the id: `Session.puback` is handed the entry.
    entry = session.inflight.get(packet_id)
    if entry is None:
        return  # a late or resent PUBACK (after a reconnect): nothing to do
    if entry.qos != 1:
        raise ProtocolError(f"PUBACK for QoS {entry.qos} packet id {packet_id} in flight")
    session.puback(packet_id, entry)


def on_pubrec(conn: Connection, packet: PubRec) -> None:
    session = conn.session
    assert session is not None
    _check_ack_type(session, packet.packet_id, "PUBREC", 2)
    if session.pubrec(packet.packet_id, packet.reason_code):
        if packet.reason_code < 0x80:
            # After the commit of PUBREL_SENT: otherwise a crash would resend the
            # PUBLISH to a client that already completed it, a second delivery.
            send_ack(conn, PUBREL, packet.packet_id, 0, session.persistent)
    elif conn.protocol_level == 5:
        send_ack(conn, PUBREL, packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND, False)
    else:
        # 3.x has no way to say "unknown": release the id so the client can go on.
        send_ack(conn, PUBREL, packet.packet_id, 0, False)


def on_pubrel(conn: Connection, packet: PubRel) -> None:
    session = conn.session
    assert session is not None
    packet_id = packet.packet_id
    if packet_id in session.inbound_qos2:
        session.inbound_qos2.discard(packet_id)
        if session.persistent:
            conn.broker.store.remove_inbound_qos2(session.client_id, packet_id)
        # After the commit: a client told PUBCOMP reuses the id, which a crash
        # would otherwise leave marked as received and so swallow the new message.
        send_ack(conn, PUBCOMP, packet_id, 0, session.persistent)
    else:
        # 5.0: 0x92; 3.x: PUBCOMP anyway [MQTT-4.3.3-11] (the id may be a resend).
        send_ack(conn, PUBCOMP, packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND, False)


def on_pubcomp(conn: Connection, packet: PubComp) -> None:
    session = conn.session
    assert session is not None
    _check_ack_type(session, packet.packet_id, "PUBCOMP", 2)
    session.pubcomp(packet.packet_id)


# -- acknowledgements to the client --------------------------------------------------


def send_ack(
    conn: Connection,
    first_byte: int,
    packet_id: int,
    reason_code: int,
    recorded: bool,
    counted_qos1: bool = False,
    pending: PublisherAck | None = None,
) -> None:
    """Send PUBACK/PUBREC/PUBREL/PUBCOMP, after the store commit when needed.

    `counted_qos1`: this PUBACK ends a QoS 1 flow counted in `conn.qos1_unacked`.
    `pending`: the PublisherAck the message's deliveries may have made ready before
    the commit (a QoS 1 PUBLISH whose persistent receivers all acknowledged it).
    """
    if reason_code and conn.protocol_level == 5:
        # A Reason String on refused publishes (PUBACK/PUBREC >= 0x80), only if the
        # client asked for problem information [MQTT-3.1.2-29]; PUBREL/PUBCOMP 0x92
        # (a lost packet id) say all there is to say with the code.
        props = (
            reason_properties(reason_code) if conn.problem_info and first_byte <= PUBREC else None
        )
        data = conn.encode_v5(ACK_CLASS[first_byte](packet_id, reason_code, props))
    else:
        # Reason code 0 without properties may be left out in 5.0 (3.4.2.1), so the
        # short form is every level's success ack: 4 bytes, built without the codec
        # (first byte, Remaining Length 2, packet id: one integer).
        data = ((first_byte << 24) | 0x20000 | packet_id).to_bytes(4)
    acks = conn.acks
    if recorded or acks:
        ack = pending if pending is not None else PublisherAck(conn.send_ready_acks)
        ack.data = data
        ack.qos1 = counted_qos1
        if acks is None:
            acks = conn.acks = deque()
        acks.append(ack)
        if recorded:
            # Patient when its receivers' PUBACKs may release it first: the store
            # then lets the batch fill and fold (store/sqlite.py, after_commit).
            patient = pending is not None and ack.holders > 0 and not ack.blocked
            wait = conn.broker.commit_wait
            if wait.reading is conn:
                # One registration for the acks of this read (`register_commit_wait`).
                waiting = wait.acks
                if waiting is None:
                    wait.acks = [ack]
                    wait.patient = patient
                else:
                    waiting.append(ack)
                    if not patient:
                        wait.patient = False
            else:
                conn.broker.store.after_commit(ack.committed, patient)
        else:
            ack.ready = True  # nothing to wait for but the acks before it
    else:
        if counted_qos1:
            conn.qos1_unacked -= 1
        conn.write(data)


def register_commit_wait(conn: Connection) -> None:
    """After a read of `conn`: let its acks that wait for a commit (`send_ack`) go once
    the store committed what was recorded up to now, with one `after_commit` for all.

    Registered after the last of them was recorded, so the commit it waits for holds
    each one's changes (a batch that closed during the read, at `commit_batch`, makes
    its acks wait for the next commit instead). One callback per read instead of one
    per PUBLISH: a fifth of the store's bookkeeping on the event loop under durable
    QoS 1 was the registering and calling of those (docs/benchmarks.md, eighth round).
    """
    wait = conn.broker.commit_wait
    acks = wait.acks
    wait.acks = None
    if acks:
        conn.broker.store.after_commit(lambda: _acks_committed(conn, acks), wait.patient)


def _acks_committed(conn: Connection, acks: list[PublisherAck]) -> None:
    # `PublisherAck.committed` for each, and the connection's ready acks sent once.
    # Those a receiver's PUBACK made ready first (the early PUBACK) are gone already.
    for ack in acks:
        ack.ready = True
    conn.send_ready_acks()
