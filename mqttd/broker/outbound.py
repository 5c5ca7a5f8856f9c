"""A message on its way to one session (queued, or inflight with its packet id), the
publisher's acknowledgement that may wait for those deliveries (`PublisherAck`), and a
cluster's hold on a shared-subscription message given to a member here (`SharedDelivery`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..store.base import OutboundState

if TYPE_CHECKING:
    from .connection import Connection
    from .message import Message
    from .session import Session
    from .shared import SharedGroup

__all__ = ["CommitWait", "Outbound", "PublisherAck", "SharedDelivery", "SharedOutbound"]

_QUEUED = OutboundState.QUEUED


class Outbound:
    """One message queued for, or inflight to, a session."""

    __slots__ = ("ack", "message", "packet_id", "qos", "retain", "seq", "state", "sub_ids")

    def __init__(self, message: Message, qos: int, retain: bool, sub_ids: tuple[int, ...]) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.sub_ids = sub_ids
        self.packet_id = 0
        self.state = _QUEUED
        self.seq = 0  # > 0 once recorded in the store
        #: The publisher's PUBACK that this delivery holds back (`PublisherAck`), or, for
        #: a shared subscription's entry in a cluster, the cluster's hold on the message
        #: (`SharedDelivery`): either hears `delivered()` when the client acknowledged it.
        self.ack: PublisherAck | SharedDelivery | None = None


class SharedOutbound(Outbound):
    """An Outbound that came through a shared subscription: it remembers the group, so
    the message can go to another member if this session ends first (5.0 4.8.2)."""

    __slots__ = ("group",)

    def __init__(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        group: SharedGroup,
    ) -> None:
        super().__init__(message, qos, retain, sub_ids)
        self.group = group


class PublisherAck:
    """A publisher's acknowledgement that waits for the store.

    It may go once the store has committed what was recorded for its message
    (`committed`, from `Store.after_commit`), or earlier, once every persistent receiver
    the message was recorded for has acknowledged it (`delivered`): the message then
    needs no row, so a kill -9 can lose nothing that was acknowledged (design.md's
    persistence contract), and what the batch held for it folds away. Whichever comes
    first makes it `ready`; `on_ready` (the publisher's connection) then sends the
    acknowledgements that are ready, in the order their PUBLISH packets came.

    A QoS 1 delivery to a connected persistent session, sent or queued, holds the
    acknowledgement (`holders`) until that client's PUBACK; anything else recorded for
    the message (a delivery to an offline session, QoS 2, a shared subscription's
    entry, a retained message) sets `blocked`, and the acknowledgement waits for the
    commit. A delivery that ends without a PUBACK (dropped from a queue, expired, its
    session ended) never releases its hold: the commit does.
    """

    __slots__ = ("blocked", "data", "holders", "on_ready", "qos1", "ready")

    def __init__(self, on_ready: Callable[[], None]) -> None:
        self.on_ready = on_ready
        self.data = b""  # the acknowledgement's bytes, set when it is queued
        self.qos1 = False  # it ends a QoS 1 flow counted for Receive Maximum
        self.holders = 0
        self.blocked = False
        self.ready = False

    def sent(self) -> None:
        """The acknowledgement went out: let go of its bytes and its connection (a
        delivery may keep this object until its own PUBACK)."""
        self.data = b""
        self.on_ready = _sent

    def committed(self) -> None:
        """The store committed everything recorded before this acknowledgement."""
        if not self.ready:
            self.ready = True
            self.on_ready()

    def delivered(self) -> None:
        """A persistent receiver acknowledged the message (its entry is gone)."""
        holders = self.holders = self.holders - 1
        if not holders and not self.blocked and not self.ready:
            self.ready = True
            self.on_ready()


class CommitWait:
    """The connection whose packets are being handled (`Connection.data_received`) and its
    acks that wait for a commit (`acks`, `patient` if all of them are): registered
    with the store once per read, not once per PUBLISH (inbound.py's `send_ack` and
    `register_commit_wait`). One per broker."""

    __slots__ = ("acks", "patient", "reading")

    def __init__(self) -> None:
        self.reading: Connection | None = None
        self.acks: list[PublisherAck] | None = None
        self.patient = True


class SharedDelivery:
    """A cluster's hold on one shared-subscription message given to a member here.

    In a cluster the messages of a "$share" group come from a queue that redelivers what
    a node does not acknowledge in time (the NATS backplane: a JetStream consumer), so a
    member's node that dies passes its unacknowledged messages to another member. The
    core attaches this object to the member's entry (`entry`, of `session`) and calls
    `delivered` once the member is done with the message: its PUBACK, or for QoS 2 its
    PUBREC (from then on the message MUST NOT go to another member [MQTT-4.8.2-5]).
    The entry moves with the message when the core hands it to another member
    (shared.py), so `entry` and `session` are always the current holder. The
    backplane watches for entries that end otherwise (dropped, session over).
    """

    __slots__ = ("done", "entry", "on_delivered", "session")

    def __init__(self, on_delivered: Callable[[], None]) -> None:
        self.on_delivered = on_delivered
        self.entry: SharedOutbound | None = None
        self.session: Session | None = None
        self.done = False

    def delivered(self) -> None:
        """The member acknowledged the message (once; later calls do nothing)."""
        if not self.done:
            self.done = True
            self.on_delivered()


def _sent() -> None:
    """`on_ready` of an acknowledgement already sent."""
