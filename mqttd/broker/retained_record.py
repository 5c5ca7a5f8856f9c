"""The compact record a retained message is kept as, and the `Message` made from it.

A million retained messages is a real case (docs/benchmarks.md, start-up), and most of
them are only ever read when a subscription matches them. A `Message` per retained
message costs its object (120 bytes), its payload's `bytes` (33 bytes of header) and
its publisher's id as a string of its own (49 bytes of header): a message without
properties and without an expiry is kept instead as ONE `bytes` object, the store's
packed record (`mqttd.store.base.pack_retained`, whose comment gives the layout): the
SQLite store keeps every retained message as this record and reads it back as it is, so
a million of them cost no Python object per column and no concatenation in Python. A
`Message` is made from it only when the message is read (a delivery, the admin API). A
message with properties or an expiry (rare, and not worth a format) is kept as a
`Message` of its own, unchanged; `message_of` hands out a copy of it, so the record
kept in the tree never carries a delivery's encoding or store id.
"""

from __future__ import annotations

from ..store.base import RETAINED_HEAD as _HEAD
from ..store.base import RETAINED_ORIGIN as _ORIGIN
from ..store.base import RETAINED_RETAIN as _RETAIN
from ..store.base import pack_retained
from .message import Message

__all__ = ["RetainedRecord", "message_of", "pack", "pack_fields"]

#: A retained message as the retained tree keeps it (see the module docstring).
RetainedRecord = bytes | Message

#: The compact record of a message without properties and without expiry.
pack_fields = pack_retained


def pack(message: Message) -> RetainedRecord:
    """What the tree keeps for `message`: compact bytes, or the message itself when it
    has properties or an expiry."""
    if message.properties is not None or message.expiry_at is not None:
        return message
    return pack_fields(message.qos, message.retain, message.origin, message.payload)


def message_of(topic: str, record: RetainedRecord) -> Message:
    """A new `Message` for the record kept for `topic`."""
    if type(record) is bytes:
        flags = record[0]
        if flags & _ORIGIN:
            end = _HEAD + ((record[1] << 14) | (record[2] << 7) | record[3])
            origin: str | None = record[_HEAD:end].decode()
        else:
            end = _HEAD
            origin = None
        return Message(topic, record[end:], flags & 3, bool(flags & _RETAIN), None, None, origin)
    assert isinstance(record, Message)
    return Message(
        record.topic,
        record.payload,
        record.qos,
        record.retain,
        record.properties,
        record.expiry_at,
        record.origin,
    )


def expiry_of(record: RetainedRecord) -> float | None:
    """The record's expiry on the broker's clock (None: never expires)."""
    return None if type(record) is bytes else record.expiry_at  # type: ignore[union-attr]
