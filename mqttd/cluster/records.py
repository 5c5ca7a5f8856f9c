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

A snapshot record (`SNAPSHOT`) compacts a log: the whole session as of a stream seq,
as the records above, each with a four-byte size first.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
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

__all__ = [
    "Folded",
    "RecordError",
    "encode_record",
    "encode_snapshot",
    "fold",
    "message_ids",
    "stored_message",
]

_LEN = struct.Struct(">H")
_SIZE = struct.Struct(">I")

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
#: The whole session as of a stream seq (a log's compaction: `encode_snapshot`).
SNAPSHOT = b"N"


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
    return stored_message(decode_envelope(data))


def stored_message(envelope: Envelope) -> StoredMessage:
    """The store's record of the message an envelope carries."""
    return StoredMessage(
        envelope.topic,
        envelope.payload,
        envelope.qos,
        envelope.retain,
        envelope.properties,
        envelope.expiry_wall,
        envelope.origin,
    )


@dataclass(slots=True)
class Folded:
    """What a session's records give back (`fold`)."""

    #: The session (none in `sessions` when the records end it), its messages by id.
    state: StoredState
    #: The cluster-wide id of each queued message, by its outbound seq.
    ids: dict[int, str] = field(default_factory=dict)
    #: Every message id the records ever queued (acknowledged since or not): a replay
    #: must not give the session those again.
    seen: set[str] = field(default_factory=set)


class _Folder:
    """Applies records to a `MemoryStore`, in stream order."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.store = MemoryStore()
        self.next_id = 1
        self.ids: dict[int, str] = {}
        self.seen: set[str] = set()

    def apply(self, data: bytes) -> tuple[bytes, list[Any], bytes]:
        if len(data) < 3:
            raise RecordError("record shorter than its header")
        op = data[:1]
        (length,) = _LEN.unpack_from(data, 1)
        try:
            args = json.loads(data[3 : 3 + length])
            rest = data[3 + length :]
            if op != SNAPSHOT:
                self._apply(op, args, rest)
        except (ValueError, TypeError, EnvelopeError, struct.error) as exc:
            raise RecordError(f"bad {op!r} record: {exc}") from exc
        return op, args, rest

    def snapshot(self, body: bytes) -> None:
        """Start again from the snapshot's records."""
        self.store.delete_session(self.client_id)
        self.ids.clear()
        pos = 0
        while pos < len(body):
            (size,) = _SIZE.unpack_from(body, pos)
            pos += _SIZE.size
            self.apply(body[pos : pos + size])
            pos += size

    def _apply(self, op: bytes, args: list[Any], rest: bytes) -> None:
        store, client_id = self.store, self.client_id
        if op == SAVE_SESSION:
            store.save_session(client_id, *args)
        elif op == DELETE_SESSION:
            store.delete_session(client_id)
            self.ids.clear()
        elif op == ADD_SUBSCRIPTION:
            store.add_subscription(client_id, StoredSubscription(*args))
        elif op == REMOVE_SUBSCRIPTION:
            store.remove_subscription(client_id, args[0])
        elif op == ADD_OUTBOUND:
            seq, qos, retain, sub_ids, packet_id, state = args[:6]
            mid = self.next_id
            self.next_id = mid + 1
            store.save_message(mid, _message(rest))
            outbound = StoredOutbound(
                seq, mid, qos, retain, tuple(sub_ids), packet_id, OutboundState(state)
            )
            store.add_outbound(client_id, outbound)
            if len(args) > 6 and args[6]:
                self.ids[seq] = str(args[6])
                self.seen.add(str(args[6]))
        elif op == SET_OUTBOUND_STATE:
            seq, packet_id, state = args
            store.set_outbound_state(client_id, seq, packet_id, OutboundState(state))
        elif op == REMOVE_OUTBOUND:
            store.remove_outbound(client_id, args[0])
            self.ids.pop(args[0], None)
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


def fold(client_id: str, records: Iterable[tuple[int, bytes]]) -> Folded:
    """The session that `records` ((stream seq, record), oldest first) describe.

    A snapshot (`encode_snapshot`) holds the session as it was up to a stream seq:
    the fold starts again from it, then applies again the records after that seq that
    came before the snapshot itself (they were written while it was being made).
    """
    folder = _Folder(client_id)
    applied: list[tuple[int, bytes]] = []
    for seq, data in records:
        op, args, rest = folder.apply(data)
        if op == SNAPSHOT:
            upto = int(args[0])
            if len(args) > 1:
                folder.seen.update(str(i) for i in args[1])
            try:
                folder.snapshot(rest)
            except (ValueError, struct.error) as exc:
                raise RecordError(f"bad snapshot: {exc}") from exc
            later = [(s, d) for s, d in applied if s > upto]
            applied = later
            for _, again in later:
                folder.apply(again)
        else:
            applied.append((seq, data))
    loaded = _load(folder.store)
    state = StoredState(sessions=loaded.sessions, messages=loaded.messages)
    return Folded(state, folder.ids, folder.seen)


def message_ids(records: Iterable[bytes]) -> set[str]:
    """The ids of the messages `records` queued."""
    ids: set[str] = set()
    for data in records:
        if data[:1] == ADD_OUTBOUND:
            (length,) = _LEN.unpack_from(data, 1)
            args = json.loads(data[3 : 3 + length])
            if len(args) > 6 and args[6]:
                ids.add(str(args[6]))
    return ids


def encode_snapshot(upto: int, folded: Folded, recent: Iterable[str] = ()) -> bytes | None:
    """One record holding the session `folded` describes, as of stream seq `upto`,
    and the ids of `recent` messages (queued lately, maybe acknowledged since: a replay
    must still skip them); None when there is no session."""
    if not folded.state.sessions:
        return None
    session = folded.state.sessions[0]
    parts = [
        encode_record(
            SAVE_SESSION,
            [
                session.protocol_level,
                session.expiry_interval,
                session.disconnected_at,
                session.owner,
            ],
        )
    ]
    for sub in session.subscriptions:
        args: list[Any] = [
            sub.topic_filter,
            sub.qos,
            sub.no_local,
            sub.retain_as_published,
            sub.retain_handling,
            sub.subscription_identifier,
        ]
        parts.append(encode_record(ADD_SUBSCRIPTION, args))
    for out in session.outbound:
        args = [
            out.seq,
            out.qos,
            out.retain,
            list(out.subscription_ids),
            out.packet_id,
            int(out.state),
            folded.ids.get(out.seq),
        ]
        message = folded.state.messages[out.message_id]
        parts.append(encode_record(ADD_OUTBOUND, args, message))
    for pid in sorted(session.inbound_qos2):
        parts.append(encode_record(ADD_INBOUND_QOS2, [pid]))
    if session.will is not None:
        will = session.will
        parts.append(encode_record(SAVE_WILL, [will.publish_at], will.message))
    body = b"".join(_SIZE.pack(len(part)) + part for part in parts)
    return encode_record(SNAPSHOT, [upto, sorted(recent)]) + body


def _load(store: MemoryStore) -> StoredState:
    # MemoryStore.load is async only to fit the Store protocol; it never waits.
    coro = store.load()
    try:
        coro.send(None)
    except StopIteration as done:
        result: StoredState = done.value
        return result
    raise RuntimeError("MemoryStore.load waited")  # pragma: no cover
