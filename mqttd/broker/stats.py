"""Counters of the broker core, read by $SYS and the metrics endpoint."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BrokerStats"]


@dataclass(slots=True)
class BrokerStats:
    """Plain integer counters; the core only ever adds to them (gauges move both ways)."""

    clients_connected: int = 0  # gauge: connections past CONNACK
    clients_total: int = 0  # connections accepted since start
    connections_refused: int = 0  # CONNACK with an error code
    bytes_received: int = 0
    bytes_sent: int = 0
    packets_received: int = 0  # control packets of every type
    packets_sent: int = 0
    publish_received: int = 0  # PUBLISH packets from clients
    publish_sent: int = 0  # PUBLISH packets to clients (redeliveries included), $SYS not
    sys_publish_sent: int = 0  # PUBLISH packets of $SYS figures to clients
    messages_routed: int = 0  # messages given to Broker.publish (wills included, $SYS not)
    messages_dropped: int = 0  # queue overflows (any QoS)
    publishers_paused: int = 0  # back-pressure: times a publisher was paused (flow.py)
    publisher_pause_timeouts: int = 0  # saturated sessions that drained nothing in time
    messages_expired: int = 0  # Message Expiry Interval passed before delivery
    messages_too_large: int = 0  # above the receiver's Maximum Packet Size
    # More drop reasons (dead_letter.py: DropReason, STATS_FIELDS), and dead letters.
    messages_not_authorised: int = 0  # publishes the ACL refused
    retained_expired: int = 0  # retained messages whose expiry interval passed
    session_messages_expired: int = 0  # queued/inflight when their session ended
    messages_disconnected: int = 0  # QoS 0 queued for a connection that ended
    messages_no_subscribers: int = 0  # QoS 1/2 publishes that matched nothing
    dead_letters_published: int = 0
    dead_letters_suppressed: int = 0  # over dead_letter.max_rate: counted, not published
    sessions_expired: int = 0
    keepalive_timeouts: int = 0
    protocol_errors: int = 0
    wills_published: int = 0
    takeovers: int = 0
    # Gauges below are filled by Broker.refresh_gauges(), not kept up to date per packet.
    sessions: int = 0
    subscriptions: int = 0
    retained_messages: int = 0  # $SYS values not counted
    messages_inflight: int = 0  # outbound QoS 1/2 awaiting acknowledgement
    messages_queued: int = 0  # outbound messages waiting in session queues
