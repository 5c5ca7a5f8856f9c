"""The records of a session's log in JetStream: one per `Store` mutation (sans-IO).

A persistent session's state is kept in the cluster as the list of `Store` calls that
made it (docs/cluster.md, "Durable sessions"): `save_session`, `add_subscription`,
`add_outbound`, `set_outbound_state`, ... Replaying them in order into a `MemoryStore`
(`fold`) gives the session back, with the store's own rules (a session's records begin
with `save_session`; `delete_session` forgets everything before it).

Layout of one record::

    op        1 byte   which Store method (the `_OPS` letters)
    length    2 bytes  of the JSON array that follows (big-endian)
    args      JSON     the method's arguments, client id left out (the subject has it)
    message   the rest: an envelope (envelope.py) for `add_outbound` and `save_will`

`add_outbound`'s arguments end with the message's cluster-wide id ("node.boot.seq",
the `Nats-Msg-Id` of its copy in the messages stream), or null for a message made here.

`add_outbound` carries its message inline, not a message id: ids are per node, and a
session's log is written by whichever node holds the session.
"""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Iterable
from typing import Any

from ..store.base import (
    OutboundState,
    StoredMessage,
    StoredOutbound,
    StoredState,
    StoredSubscription,
    StoredWill,
)
from ..store.memory import MemoryStore
from .envelope import Envelope, EnvelopeError, decode_envelope, encode_envelope

__all__ = ["RecordError", "encode_record", "fold", "logged_ids"]

_LEN = struct.Struct(">H")

SAVE_SESSION = b"S"
DELETE_SESSION = b"D"
ADD_SUBSCRIPTION = b"+"
REMOVE_SUBSCRIPTION = b"-"
ADD_OUTBOUND = b"O"
SET_OUTBOUND_STATE = b"T"
REMOVE_OUTBOUND = b"R"
ADD_INBOUND_QOS2 = b"I"
REMOVE_INBOUND_QOS2 = b"i"
SAVE_WILL = b"W"
DELETE_WILL = b"w"


class RecordError(ValueError):
    """Bytes that are not a record this version understands."""


def encode_record(op: bytes, args: list[Any], message: StoredMessage | None = None) -> bytes:
    """One record: `op` (a method letter), its JSON `args`, the message if it has one."""
    head = json.dumps(args, separators=(",", ":")).encode()
    parts = [op, _LEN.pack(len(head)), head]
    if message is not None:
        parts.append(
            encode_envelope(
                Envelope(
                    message.topic,
                    message.payload,
                    message.qos,
                    message.retain,
                    message.properties,
                    message.origin,
                    "",
                    0,
                    0,
                    message.expiry_at,
                )
            )
        )
    return b"".join(parts)


def _message(data: bytes) -> StoredMessage:
    envelope = decode_envelope(data)
    return StoredMessage(
        envelope.topic,
        envelope.payload,
        envelope.qos,
        envelope.retain,
        envelope.properties,
        envelope.expiry_wall,
        envelope.origin,
    )


def fold(client_id: str, records: Iterable[bytes]) -> StoredState:
    """The session that `records` (oldest first) describe: no session if they end it."""
    store = MemoryStore()
    next_id = 1
    for data in records:
        if len(data) < 3:
            raise RecordError("record shorter than its header")
        op = data[:1]
        (length,) = _LEN.unpack_from(data, 1)
        try:
            args = json.loads(data[3 : 3 + length])
            rest = data[3 + length :]
            if op == SAVE_SESSION:
                store.save_session(client_id, *args)
            elif op == DELETE_SESSION:
                store.delete_session(client_id)
            elif op == ADD_SUBSCRIPTION:
                store.add_subscription(client_id, StoredSubscription(*args))
            elif op == REMOVE_SUBSCRIPTION:
                store.remove_subscription(client_id, args[0])
            elif op == ADD_OUTBOUND:
                seq, qos, retain, sub_ids, packet_id, state = args[:6]
                store.save_message(next_id, _message(rest))
                outbound = StoredOutbound(
                    seq, next_id, qos, retain, tuple(sub_ids), packet_id, OutboundState(state)
                )
                store.add_outbound(client_id, outbound)
                next_id += 1
            elif op == SET_OUTBOUND_STATE:
                seq, packet_id, state = args
                store.set_outbound_state(client_id, seq, packet_id, OutboundState(state))
            elif op == REMOVE_OUTBOUND:
                store.remove_outbound(client_id, args[0])
            elif op == ADD_INBOUND_QOS2:
                store.add_inbound_qos2(client_id, args[0])
            elif op == REMOVE_INBOUND_QOS2:
                store.remove_inbound_qos2(client_id, args[0])
            elif op == SAVE_WILL:
                store.save_will(client_id, StoredWill(_message(rest), args[0]))
            elif op == DELETE_WILL:
                store.delete_will(client_id)
            else:
                raise RecordError(f"unknown record {op!r}")
        except (ValueError, TypeError, EnvelopeError) as exc:
            raise RecordError(f"bad {op!r} record: {exc}") from exc
    state = StoredState()
    loaded = _load(store)
    state.sessions = loaded.sessions
    state.messages = loaded.messages
    return state


def logged_ids(records: Iterable[bytes]) -> set[str]:
    """The cluster-wide ids of every message `records` ever queued (acknowledged since
    or not): a replay must not give the session those again."""
    ids: set[str] = set()
    for data in records:
        if data[:1] != ADD_OUTBOUND:
            continue
        (length,) = _LEN.unpack_from(data, 1)
        with contextlib.suppress(ValueError, IndexError):
            args = json.loads(data[3 : 3 + length])
            if len(args) > 6 and args[6]:
                ids.add(str(args[6]))
    return ids


def _load(store: MemoryStore) -> StoredState:
    # MemoryStore.load is async only to fit the Store protocol; it never waits.
    coro = store.load()
    try:
        coro.send(None)
    except StopIteration as done:
        result: StoredState = done.value
        return result
    raise RuntimeError("MemoryStore.load waited")  # pragma: no cover
