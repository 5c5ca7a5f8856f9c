"""SUBSCRIBE and UNSUBSCRIBE from a client: the connection's side (3.8-3.11).

The broker's subscriptions change in subscriptions.py (`Subscriptions`: the tree, the
shared groups, the store, the cluster's interest) and their policy is subscription.py's;
here the packet is read and answered. SUBACK carries one code per filter, in order:
the granted QoS or a refusal (0x80 for 3.x, the reason for 5.0, with a Reason String
if the client asked for problem information). The retained messages of the new
subscriptions go after the SUBACK (Retain Handling, 3.8.3.1). A 3.x UNSUBACK carries
no codes; a 5.0 one has one per filter (3.11.3).

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

__all__ = ["on_subscribe", "on_unsubscribe"]


def on_subscribe(conn: Connection, packet: Subscribe) -> None:
    """Apply a SUBSCRIBE, answer SUBACK, then send the new subscriptions' retained
    messages."""
    session = conn.session
    assert session is not None
    if conn.bridge and conn.protocol_level != 5:
        # As Mosquitto: a 3.x bridge never gets its own messages back and keeps the
        # retain flag (3.x has no subscription options to ask for either).
        for sub in packet.subscriptions:
            sub.no_local = sub.retain_as_published = True
    broker = conn.broker
    codes, retained = broker.subscriptions.subscribe(session, packet, broker.authorise)
    if conn.protocol_level == 5:
        failed = max(codes)
        props = reason_properties(failed) if conn.problem_info else None
        conn.write(conn.encode_v5(SubAck(packet.packet_id, codes, props)))
    else:
        conn.write(encode(SubAck(packet.packet_id, codes), conn.protocol_level))
    for topic_filter, options in retained:
        broker.deliver_retained(session, topic_filter, options)


def on_unsubscribe(conn: Connection, packet: Unsubscribe) -> None:
    """Apply an UNSUBSCRIBE and answer UNSUBACK."""
    session = conn.session
    assert session is not None
    codes = conn.broker.subscriptions.unsubscribe(session, packet.topic_filters)
    if conn.protocol_level != 5:
        codes = []
    conn.write(encode(UnsubAck(packet.packet_id, codes), conn.protocol_level))
