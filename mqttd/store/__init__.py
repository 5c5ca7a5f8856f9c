"""Persistence: the `Store` contract the broker core talks to, and its implementations."""

from .base import (
    OutboundState,
    Store,
    StoredMessage,
    StoredOutbound,
    StoredSession,
    StoredState,
    StoredSubscription,
    StoredWill,
)
from .memory import MemoryStore

__all__ = [
    "MemoryStore",
    "OutboundState",
    "Store",
    "StoredMessage",
    "StoredOutbound",
    "StoredSession",
    "StoredState",
    "StoredSubscription",
    "StoredWill",
]
