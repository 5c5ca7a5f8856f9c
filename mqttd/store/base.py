"""The persistence contract between the broker core and a store.

Theory of operation. The core is synchronous and free of I/O, yet "acknowledged means
stored" must hold (design.md, Persistence contract). So the core never waits on the
store: every mutation method below only RECORDS a change and returns at once. The store
makes the records durable in its own time (the SQLite store batches them into one
transaction: group commit) and `after_commit(callback)` runs `callback` once everything
recorded before that call is durable. The broker sends PUBACK (QoS 1) or PUBREC (QoS 2)
for a message it recorded from such a callback, never before.

What is recorded: retained messages, and only the sessions that outlive their connection
(3.1.1 clean session 0, 5.0 Session Expiry Interval > 0) with their subscriptions,
their queued and inflight outbound messages, the inbound QoS 2 packet ids awaiting
PUBREL and a pending (delayed) will. Sessions that end with their connection are never
recorded, and the QoS 0 path never touches the store.

A message is stored once (`save_message`) and referenced by id from every session that
queues it (`add_outbound`); the store forgets a message when no outbound entry refers to
it any more. Outbound entries are keyed by (client id, seq): seq grows per session, so
ordering by seq gives the delivery order back after a restart.

Times that must survive a restart (message expiry, session disconnect time, will
publication time) are wall-clock Unix seconds.

Mutations arrive in a meaningful order and must be applied in that order (a later
`set_outbound_state` for an entry overrides an earlier one, a `delete_session` removes
everything recorded before it for that client id).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..protocol.properties import Properties

__all__ = [
    "RETAINED_HEAD",
    "RETAINED_ORIGIN",
    "RETAINED_RETAIN",
    "OutboundState",
    "PackedRetainedRow",
    "RetainedRow",
    "Store",
    "StoredMessage",
    "StoredOutbound",
    "StoredSession",
    "StoredState",
    "StoredSubscription",
    "StoredWill",
    "WholeRetainedRow",
    "pack_retained",
    "unpack_retained",
]


class OutboundState(enum.IntEnum):
    """Where an outbound QoS 1/2 message stands for one session."""

    QUEUED = 0  # not sent yet (beyond the inflight window, or the session was offline)
    PUBLISH_SENT = 1  # PUBLISH sent with `packet_id`, awaiting PUBACK (QoS 1) / PUBREC (QoS 2)
    PUBREL_SENT = 2  # QoS 2: PUBREC received, PUBREL sent, awaiting PUBCOMP


@dataclass(slots=True)
class StoredMessage:
    """An application message as the store keeps it."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties | None = None
    expiry_at: float | None = None  # wall clock; None = never expires
    origin: str | None = None  # the publisher's client id


#: A retained message as `Store.retained_rows` hands it back, a plain tuple (a million
#: of them is a real case: no object per row). A message without properties and without
#: an expiry comes PACKED, as (topic, record): `record` is `pack_retained`'s bytes, the
#: form the broker keeps it in (broker/retained_record.py), made by the store (the SQLite
#: store keeps every retained message as this record and reads it as it is, no Python
#: object per column). Any other comes WHOLE: topic,
#: payload, qos, retain (0/1), properties, expiry_at (wall clock, None = never), origin.
#: A chunk of `retained_rows` holds rows of one kind only.
PackedRetainedRow = tuple[str, bytes]
WholeRetainedRow = tuple[str, bytes, int, int, Properties | None, float | None, str | None]
RetainedRow = PackedRetainedRow | WholeRetainedRow

# The packed record of a retained message (`pack_retained`):
#
#     byte 0     flags: bits 0-1 QoS, bit 2 retain, bit 3 an origin (publisher id) follows
#     bytes 1-3  the origin's length in UTF-8, in three 7-bit groups, high group first
#                (0 without one); 7-bit groups so that SQLite's char() can make them
#                (the start did with schema version 1's files)
#     ...        the origin in UTF-8, then the payload
RETAINED_ORIGIN = 8
RETAINED_RETAIN = 4
RETAINED_HEAD = 4  # bytes before the origin


def pack_retained(qos: int, retain: bool, origin: str | None, payload: bytes) -> bytes:
    """The packed record of a retained message without properties and expiry (above)."""
    if origin is None:
        return bytes((qos | (RETAINED_RETAIN if retain else 0), 0, 0, 0)) + payload
    raw = origin.encode()
    n = len(raw)
    # Client ids are at most 65,535 bytes of UTF-8 (MQTT strings' length prefix).
    flags = qos | (RETAINED_RETAIN if retain else 0) | RETAINED_ORIGIN
    return bytes((flags, n >> 14, (n >> 7) & 127, n & 127)) + raw + payload


def unpack_retained(record: bytes) -> tuple[bytes, int, bool, str | None]:
    """(payload, qos, retain, origin) of a record `pack_retained` made."""
    flags = record[0]
    if flags & RETAINED_ORIGIN:
        end = RETAINED_HEAD + ((record[1] << 14) | (record[2] << 7) | record[3])
        origin: str | None = record[RETAINED_HEAD:end].decode()
    else:
        end = RETAINED_HEAD
        origin = None
    return record[end:], flags & 3, bool(flags & RETAINED_RETAIN), origin


@dataclass(slots=True)
class StoredSubscription:
    """One subscription of a persistent session ("$share/..." filters included)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    subscription_identifier: int | None = None


@dataclass(slots=True)
class StoredOutbound:
    """A QoS 1/2 message queued for, or inflight to, one session."""

    seq: int  # per session, increasing: the delivery order
    message_id: int  # refers to a message given to `save_message`
    qos: int
    retain: bool = False  # the retain flag of this delivery
    subscription_ids: tuple[int, ...] = ()
    packet_id: int | None = None  # None while QUEUED
    state: OutboundState = OutboundState.QUEUED


@dataclass(slots=True)
class StoredWill:
    """A will waiting for its Will Delay Interval (5.0 3.1.3.2.2) to pass."""

    message: StoredMessage
    publish_at: float  # wall clock


@dataclass(slots=True)
class StoredSession:
    """A persistent session as loaded back from the store."""

    client_id: str
    protocol_level: int
    expiry_interval: int  # seconds; 0xFFFFFFFF never expires
    disconnected_at: float | None = None  # wall clock; None if it was connected at the crash
    subscriptions: list[StoredSubscription] = field(default_factory=list)
    outbound: list[StoredOutbound] = field(default_factory=list)  # ordered by seq
    inbound_qos2: set[int] = field(default_factory=set)
    will: StoredWill | None = None
    owner: str | None = None  # the user name the session belongs to; None = anonymous


@dataclass(slots=True)
class StoredState:
    """Everything `Store.load` gives back at start-up."""

    retained: list[StoredMessage] = field(default_factory=list)
    sessions: list[StoredSession] = field(default_factory=list)
    messages: dict[int, StoredMessage] = field(default_factory=dict)  # by message id


class Store(Protocol):
    """Where retained messages and persistent sessions are kept (see module docstring)."""

    async def open(self) -> None:
        """Open (and if needed create or migrate) the store. Idempotent."""
        ...

    async def close(self) -> None:
        """Make everything recorded durable, run pending `after_commit` callbacks, close."""
        ...

    async def load(self, retained: bool = True) -> StoredState:
        """Everything recorded and committed so far.

        With `retained` False, `StoredState.retained` stays empty: the broker reads them
        with `retained_rows`, a chunk at a time, instead of all at once.
        """
        ...

    def retained_rows(self, chunk: int = 20_000) -> AsyncIterator[list[RetainedRow]]:
        """The retained messages, in lists of up to `chunk` rows (start-up loading), each
        list packed rows only or whole rows only (`RetainedRow`)."""
        ...

    def after_commit(self, callback: Callable[[], None], patient: bool = False) -> None:
        """Run `callback()` once every change recorded before this call is durable.

        Callbacks run in the order they were given. A store that is durable at once runs
        the callback before returning. `patient`: the caller may be served sooner by
        other means, so the store may take longer than usual to commit for it alone.
        """
        ...

    # Retained messages.
    def save_retained(self, message: StoredMessage) -> None:
        """Record `message` as the retained message of `message.topic` (replacing)."""
        ...

    def delete_retained(self, topic: str) -> None:
        """Record that `topic` has no retained message any more."""
        ...

    # Sessions.
    def save_session(
        self,
        client_id: str,
        protocol_level: int,
        expiry_interval: int,
        disconnected_at: float | None,
        owner: str | None = None,
    ) -> None:
        """Insert or update a persistent session's own fields (not its contents).

        `owner` is the user name the session belongs to (None = anonymous): with
        authentication on, only that user may resume or end it, also after a restart.
        """
        ...

    def delete_session(self, client_id: str) -> None:
        """Forget a session with its subscriptions, outbound entries, inbound ids and will."""
        ...

    def add_subscription(self, client_id: str, subscription: StoredSubscription) -> None:
        """Insert or replace the session's subscription on `subscription.topic_filter`."""
        ...

    def remove_subscription(self, client_id: str, topic_filter: str) -> None:
        """Forget the session's subscription on `topic_filter`."""
        ...

    # Outbound messages.
    def save_message(self, message_id: int, message: StoredMessage) -> None:
        """Record a message once; `add_outbound` entries then refer to it by id."""
        ...

    def add_outbound(self, client_id: str, outbound: StoredOutbound) -> None:
        """Record a message queued for, or already sent to, the session."""
        ...

    def set_outbound_state(
        self, client_id: str, seq: int, packet_id: int | None, state: OutboundState
    ) -> None:
        """Record that outbound entry `seq` now has `packet_id` and `state`."""
        ...

    def remove_outbound(self, client_id: str, seq: int) -> None:
        """Forget outbound entry `seq` (acknowledged, expired or dropped)."""
        ...

    # Inbound QoS 2.
    def add_inbound_qos2(self, client_id: str, packet_id: int) -> None:
        """Record an inbound QoS 2 packet id that awaits PUBREL (4.3.3)."""
        ...

    def remove_inbound_qos2(self, client_id: str, packet_id: int) -> None:
        """Forget an inbound QoS 2 packet id (PUBREL received)."""
        ...

    # Delayed wills.
    def save_will(self, client_id: str, will: StoredWill) -> None:
        """Record the session's pending will (replacing any)."""
        ...

    def delete_will(self, client_id: str) -> None:
        """Forget the session's pending will (published or cancelled)."""
        ...
