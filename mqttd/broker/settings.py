"""Limits and features of the broker core, and what the dead letters are asked for.

``config.py`` fills one :class:`BrokerSettings` and one :class:`DeadLetterSettings` from
TOML and the command line; the core only reads them. Every limit is per broker unless the
comment says "per session".

A leaf module (plain dataclasses and one enum, importing nothing of mqttd) so that the
configuration can build these objects without loading the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["DEFAULT_REASONS", "BrokerSettings", "DeadLetterSettings", "DropReason"]


@dataclass(slots=True)
class BrokerSettings:
    """Limits and features of the core (what CONNACK advertises and what is enforced)."""

    connect_timeout: float = 10.0  # seconds a socket may stay without CONNECT
    max_packet_size: int = 268_435_455  # ours, advertised to 5.0 clients
    # Bytes a socket may send before its CONNECT is accepted: the CONNECT itself, and the
    # AUTH packets of an enhanced authentication. Current Mosquitto sources refuse a
    # CONNECT with a Remaining Length above 100000; 0 = max_packet_size.
    max_connect_size: int = 100_000
    max_inflight_messages: int = 20  # per session outbound window (5.0: also <= Receive Maximum)
    receive_maximum: int = 65_535  # inbound QoS 1/2 window we advertise (5.0)
    max_queued_messages: int = 1000  # per offline/slow session, count (0 = unlimited)
    max_queued_bytes: int = 0  # per session, bytes (0 = unlimited)
    queue_overflow: str = "drop_new"  # documented overflow policy: "drop_new" | "drop_oldest"
    max_publisher_pause: float = 10.0  # flow.py: a session draining nothing this long stops
    # pausing its publishers (the overflow policy applies to it); 0 = pause for as long as it takes
    topic_alias_maximum: int = 10  # client->server aliases we accept (5.0)
    max_keepalive: int = 65_535  # 5.0 Server Keep Alive when the client asks for more
    retain_available: bool = True
    wildcard_subscription_available: bool = True
    subscription_identifier_available: bool = True
    shared_subscription_available: bool = True
    maximum_qos: int = 2
    max_session_expiry_interval: int = 0xFFFFFFFF
    allow_zero_length_client_id: bool = True
    client_id_prefix: str = "mqttd-"  # assigned client identifiers
    max_client_id_length: int = 65_535
    max_topic_length: int = 65_535
    max_topic_levels: int = 200  # as Mosquitto (TOPIC_HIERARCHY_LIMIT); 0 = unlimited
    max_subscriptions_per_client: int = 0  # 0 = unlimited
    max_connections: int = 0  # open sockets over every listener, CONNECT or not; 0 = unlimited
    connection_rate: float = 0.0  # CONNECTs a second from one source address; 0 = unlimited
    connection_burst: int = 20  # CONNECTs one address may make at once within connection_rate
    max_publish_rate: float = 0.0  # PUBLISH packets a second per client (throttled); 0 = unlimited
    publish_burst: int = 100  # PUBLISH packets a client may send at once within max_publish_rate
    retry_interval: float = 20.0  # resend unacked QoS>0 to 3.x clients only on reconnect (spec)
    server_topic_aliases: bool = True  # give 5.0 clients that ask for them topic aliases (LRU)
    validate_payload_format: bool = True  # Payload Format Indicator 1 -> check UTF-8 (0x99)
    response_information: str = "mqttd/response/{client_id}"  # 5.0 CONNACK; "" = never
    # Mosquitto's options (docs/migrating-from-mosquitto.md); each 0/False = off.
    message_size_limit: int = 0  # largest PUBLISH/will payload accepted, bytes; 0 = no limit
    max_inflight_bytes: int = 0  # per session: payload bytes of QoS 1/2 in flight; 0 = no limit
    persistent_client_expiration: int = 0  # seconds a 3.x clean-session-0 session outlives
    # its connection; 0 = forever (the spec)
    upgrade_outgoing_qos: bool = False  # deliver at the subscription's QoS, not min() (non-spec)
    pubrec_first: bool = False  # QoS 2: PUBREC before the message goes on (memory store only)


class DropReason(StrEnum):
    """Why the broker discarded a message; the value names it in topics and metrics."""

    #: A session queue was full (`limits.max_queued_messages` / `max_queued_bytes`).
    QUEUE_FULL = "queue_full"
    #: The Message Expiry Interval ran out before delivery (5.0 3.3.2.3.3).
    EXPIRED = "expired"
    #: Larger than the receiver's Maximum Packet Size (5.0 3.1.2.11.4).
    TOO_LARGE = "too_large"
    #: A PUBLISH the ACL refused.
    NOT_AUTHORISED = "not_authorised"
    #: A retained message whose Message Expiry Interval ran out.
    RETAINED_EXPIRED = "retained_expired"
    #: Still queued or inflight when its session ended (expiry, or a clean session's
    #: connection closing: Session Expiry Interval 0, 5.0 3.1.2.11.2).
    SESSION_EXPIRED = "session_expired"
    #: QoS 0 messages waiting for a slow client when its connection ended (a session
    #: keeps only QoS 1/2 messages for an offline client).
    DISCONNECTED = "disconnected"
    #: A QoS 1/2 PUBLISH that matched no subscription (not a loss by the broker: a 5.0
    #: publisher is told, 0x10). Counted; never dead-lettered unless asked for.
    NO_SUBSCRIBERS = "no_subscribers"


#: Reasons dead-lettered when `[dead_letter] reasons` is not given: all but no_subscribers.
DEFAULT_REASONS: frozenset[DropReason] = frozenset(DropReason) - {DropReason.NO_SUBSCRIBERS}


@dataclass(slots=True, frozen=True)
class DeadLetterSettings:
    """What `[dead_letter]` asks for (see config.py for the documentation of each key)."""

    enabled: bool = False
    prefix: str = "$dead"
    reasons: frozenset[DropReason] = field(default=DEFAULT_REASONS)
    max_rate: float = 100.0  # dead letters per second, on average
    burst: int = 100  # dead letters at once (the bucket's size)
