"""What a session sees of the core it lives in: a narrow interface, not the Broker.

Inside broker/ only Broker and Connection know each other (tests/test_layers.py); a
Session is handed a `SessionContext`, which `Broker` satisfies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..store.base import Store, StoredMessage
    from .clock import Clock
    from .connection import Connection
    from .dead_letter import DeadLetters
    from .flow import FlowControl
    from .message import Message
    from .outbound import PublisherAck
    from .session import Session
    from .settings import BrokerSettings
    from .stats import BrokerStats

__all__ = ["SessionContext"]


class SessionContext(Protocol):
    """What a session uses of the core it lives in (`Broker` is one), and nothing more:
    its settings, store, counters and clock, the drop point and back-pressure, and the
    records of messages and of its own fields in the store."""

    settings: BrokerSettings
    store: Store
    stats: BrokerStats
    clock: Clock
    flow: FlowControl
    dead_letters: DeadLetters
    #: While a client's QoS 1 PUBLISH is routed: that client's connection (else None)
    #: and its PUBACK, which the deliveries to persistent sessions may hold
    #: (`outbound.PublisherAck`), made by the first of them (`Session._hold`): a
    #: message no persistent session holds makes none.
    acking: Connection | None
    pending_ack: PublisherAck | None

    def next_message_id(self) -> int:
        """A fresh id for a message recorded in the store."""
        ...

    def stored_message(self, message: Message) -> StoredMessage:
        """The store's record of `message`."""
        ...

    def save_session(self, session: Session, disconnected_at: float | None) -> None:
        """Record a persistent session's own fields."""
        ...
