"""How large a message the cluster carries: NATS's `max_payload` less what its copies add.

Every message that crosses the cluster is a NATS message: its envelope (envelope.py)
on its topic's subject, the same envelope with a `Nats-Msg-Id` header in the messages
stream, inside a session record (records.py) for each persistent session it is queued
for, in the retained bucket, and a will in the wills bucket. nats-server refuses a
message above its `max_payload` (1 MiB by default; it counts headers too), so a node
must never acknowledge a message none of those can carry (docs/cluster.md, "Large
messages"). Two bounds follow:

- `packet_limit`: the largest MQTT packet this node accepts. It becomes the broker's
  effective `max_packet_size` (a 5.0 client reads it in CONNACK; a larger packet gets
  0x95, as on one broker). A PUBLISH within it makes an envelope of at most the packet
  size + `ENVELOPE_EXTRA` + the node name + the publisher's client id, so the bound
  keeps room for a client id of `CLIENT_ID_ROOM` bytes.
- `fits`: the check of one envelope, exact, made when it is published: it catches what
  the first bound cannot see (a longer client id, a Topic Alias that stands for a long
  topic). A message that fails it is refused like a packet too large.

Sans-IO: plain arithmetic, tested without NATS.
"""

from __future__ import annotations

__all__ = [
    "CLIENT_ID_ROOM",
    "COPY_EXTRA",
    "ENVELOPE_EXTRA",
    "copy_overhead",
    "fits",
    "header_size",
    "packet_limit",
]

#: What the largest copy of a message adds to its envelope, besides the node name
#: (twice): a session record's op, length and JSON arguments (seq, flags, packet id,
#: state, the message id, some 35 subscription identifiers) and the `Nats-Msg-Id` header.
COPY_EXTRA = 512
#: The envelope's bytes beyond those of its PUBLISH packet, besides the node name and
#: the client id: its fixed head (26 bytes), three string lengths, an empty property
#: block for a 3.x message.
ENVELOPE_EXTRA = 32
#: Bytes of the publisher's client id (carried for No Local) that `packet_limit` makes
#: room for; a longer id is checked per message (`fits`).
CLIENT_ID_ROOM = 512
#: "NATS/1.0\r\n", "Nats-Msg-Id: ", and the two CRLFs after the value.
_HEADER_FIXED = 10 + 13 + 4


def copy_overhead(node: str) -> int:
    """What the largest NATS copy of a message from `node` adds to its envelope."""
    return COPY_EXTRA + 2 * len(node.encode())


def packet_limit(max_payload: int, node: str) -> int:
    """The largest MQTT packet whose message fits every NATS copy made on `node`
    (for a publisher whose client id has at most `CLIENT_ID_ROOM` bytes)."""
    name = len(node.encode())
    return max_payload - copy_overhead(node) - ENVELOPE_EXTRA - name - CLIENT_ID_ROOM


def fits(envelope_size: int, max_payload: int, node: str) -> bool:
    """True when an envelope of `envelope_size` bytes and all its copies fit NATS."""
    return envelope_size + copy_overhead(node) <= max_payload


def header_size(message_id: str) -> int:
    """The bytes of the `Nats-Msg-Id` header a JetStream write carries (nats-server
    counts them against `max_payload` with the payload)."""
    return _HEADER_FIXED + len(message_id.encode())
