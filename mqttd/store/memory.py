"""A store kept in process memory: durable "at once", gone with the process.

The default when persistence is off, and the reference implementation of the `Store`
contract in tests: a `MemoryStore` outlives the `Broker` that used it, so a test can stop
a broker and start a new one on the same store to check what a restart restores.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from .base import (
    OutboundState,
    RetainedRow,
    StoredMessage,
    StoredOutbound,
    StoredSession,
    StoredState,
    StoredSubscription,
    StoredWill,
    pack_retained,
)

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Session:
    protocol_level: int
    expiry_interval: int
    disconnected_at: float | None
    subscriptions: dict[str, StoredSubscription] = field(default_factory=dict)
    outbound: dict[int, StoredOutbound] = field(default_factory=dict)  # by seq
    inbound_qos2: set[int] = field(default_factory=set)
    will: StoredWill | None = None
    owner: str | None = None


class MemoryStore:
    """`Store` in memory. `after_commit` runs its callback immediately.

    Records for a session that was never saved (or was deleted) are ignored, as a
    foreign key would refuse them; messages no outbound entry refers to are dropped.
    """

    __slots__ = ("_messages", "_open", "_refs", "_retained", "_sessions", "commits")

    def __init__(self) -> None:
        self._retained: dict[str, StoredMessage] = {}
        self._sessions: dict[str, _Session] = {}
        self._messages: dict[int, StoredMessage] = {}
        self._refs: dict[int, int] = {}  # message id -> outbound entries referring to it
        self._open = False
        #: How many `after_commit` callbacks ran (tests check acks waited for a commit).
        self.commits = 0

    @property
    def is_open(self) -> bool:
        """True between `open` and `close`."""
        return self._open

    async def open(self) -> None:
        """Nothing to open; idempotent."""
        self._open = True

    async def close(self) -> None:
        """Nothing to flush; the records stay for a later `load`."""
        self._open = False

    async def load(self, retained: bool = True) -> StoredState:
        """A deep copy of what is recorded, so the caller may mutate it freely."""
        state = StoredState()
        if retained:
            state.retained = [copy.copy(m) for m in self._retained.values()]
        for client_id, s in self._sessions.items():
            state.sessions.append(
                StoredSession(
                    client_id=client_id,
                    protocol_level=s.protocol_level,
                    expiry_interval=s.expiry_interval,
                    disconnected_at=s.disconnected_at,
                    subscriptions=[copy.copy(sub) for sub in s.subscriptions.values()],
                    outbound=[copy.copy(o) for _, o in sorted(s.outbound.items())],
                    inbound_qos2=set(s.inbound_qos2),
                    will=copy.copy(s.will),
                    owner=s.owner,
                )
            )
        state.messages = {mid: copy.copy(m) for mid, m in self._messages.items()}
        return state

    async def retained_rows(self, chunk: int = 20_000) -> AsyncIterator[list[RetainedRow]]:
        """The retained messages as rows, `chunk` at a time: packed first, then whole
        (`RetainedRow`), as the SQLite store hands them."""
        kept = list(self._retained.values())
        packed: list[RetainedRow] = [
            (m.topic, pack_retained(m.qos, m.retain, m.origin, m.payload))
            for m in kept
            if m.properties is None and m.expiry_at is None
        ]
        whole: list[RetainedRow] = [
            (m.topic, m.payload, m.qos, int(m.retain), m.properties, m.expiry_at, m.origin)
            for m in kept
            if m.properties is not None or m.expiry_at is not None
        ]
        for rows in (packed, whole):
            for start in range(0, len(rows), chunk):
                yield rows[start : start + chunk]

    def after_commit(self, callback: Callable[[], None], patient: bool = False) -> None:
        """Everything is durable as soon as it is recorded: run `callback` now."""
        self.commits += 1
        callback()

    def save_retained(self, message: StoredMessage) -> None:
        """Retain `message` for its topic."""
        self._retained[message.topic] = message

    def delete_retained(self, topic: str) -> None:
        """Forget the message retained for `topic`."""
        self._retained.pop(topic, None)

    def save_session(
        self,
        client_id: str,
        protocol_level: int,
        expiry_interval: int,
        disconnected_at: float | None,
        owner: str | None = None,
    ) -> None:
        """Insert or update a session's own fields."""
        s = self._sessions.get(client_id)
        if s is None:
            self._sessions[client_id] = _Session(
                protocol_level, expiry_interval, disconnected_at, owner=owner
            )
        else:
            s.protocol_level = protocol_level
            s.expiry_interval = expiry_interval
            s.disconnected_at = disconnected_at
            s.owner = owner

    def delete_session(self, client_id: str) -> None:
        """Forget a session and everything recorded for it."""
        s = self._sessions.pop(client_id, None)
        if s is not None:
            for o in s.outbound.values():
                self._unref(o.message_id)

    def add_subscription(self, client_id: str, subscription: StoredSubscription) -> None:
        """Insert or replace a subscription."""
        s = self._sessions.get(client_id)
        if s is not None:
            s.subscriptions[subscription.topic_filter] = subscription

    def remove_subscription(self, client_id: str, topic_filter: str) -> None:
        """Forget a subscription."""
        s = self._sessions.get(client_id)
        if s is not None:
            s.subscriptions.pop(topic_filter, None)

    def save_message(self, message_id: int, message: StoredMessage) -> None:
        """Record a message; it lives while an outbound entry refers to it."""
        self._messages[message_id] = message
        self._refs.setdefault(message_id, 0)

    def add_outbound(self, client_id: str, outbound: StoredOutbound) -> None:
        """Record an outbound entry."""
        s = self._sessions.get(client_id)
        if s is None or outbound.message_id not in self._messages:
            return
        old = s.outbound.get(outbound.seq)
        self._refs[outbound.message_id] += 1  # before the old one's release: may be the same
        if old is not None:
            self._unref(old.message_id)
        s.outbound[outbound.seq] = outbound

    def set_outbound_state(
        self, client_id: str, seq: int, packet_id: int | None, state: OutboundState
    ) -> None:
        """Move an outbound entry on."""
        s = self._sessions.get(client_id)
        if s is None:
            return
        o = s.outbound.get(seq)
        if o is not None:
            o.packet_id = packet_id
            o.state = state

    def remove_outbound(self, client_id: str, seq: int) -> None:
        """Forget an outbound entry."""
        s = self._sessions.get(client_id)
        if s is None:
            return
        o = s.outbound.pop(seq, None)
        if o is not None:
            self._unref(o.message_id)

    def add_inbound_qos2(self, client_id: str, packet_id: int) -> None:
        """Remember an inbound QoS 2 packet id."""
        s = self._sessions.get(client_id)
        if s is not None:
            s.inbound_qos2.add(packet_id)

    def remove_inbound_qos2(self, client_id: str, packet_id: int) -> None:
        """Forget an inbound QoS 2 packet id."""
        s = self._sessions.get(client_id)
        if s is not None:
            s.inbound_qos2.discard(packet_id)

    def save_will(self, client_id: str, will: StoredWill) -> None:
        """Record a pending will."""
        s = self._sessions.get(client_id)
        if s is not None:
            s.will = will

    def delete_will(self, client_id: str) -> None:
        """Forget a pending will."""
        s = self._sessions.get(client_id)
        if s is not None:
            s.will = None

    def _unref(self, message_id: int) -> None:
        refs = self._refs.get(message_id, 0) - 1
        if refs <= 0:
            self._refs.pop(message_id, None)
            self._messages.pop(message_id, None)
        else:
            self._refs[message_id] = refs
