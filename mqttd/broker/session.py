"""A session: subscriptions, inflight and queued messages, packet ids (4.1, 4.3, 4.4).

Theory of operation. A `Session` outlives its connections when it is persistent (3.1.1
clean session 0, 5.0 Session Expiry Interval > 0). While a connection is attached the
session writes PUBLISH bytes straight to its sink; otherwise (or while the sink is not
writable, or the inflight window is full) outbound messages wait in `queue`, in order.

Outbound QoS 1/2 (4.3.2, 4.3.3). A message sent with a packet id sits in `inflight`
until it is acknowledged (inflight.py: `Inflight`, the part of `Session` that records,
numbers and acknowledges them). The window is `settings.max_inflight_messages`, and
for 5.0 also the client's Receive Maximum [MQTT-3.3.4-7]. When a session resumes,
every inflight PUBLISH is sent again with DUP=1 and every PUBREL again, before
anything queued [MQTT-4.4.0-1].

Inbound QoS 2 (4.3.3, "Method B"): the packet id is remembered in `inbound_qos2` from
PUBLISH to PUBREL, so a resent PUBLISH with that id is acknowledged again but never
routed twice.

Queue bound (`settings.max_queued_messages`, `max_queued_bytes`) and overflow policy
`settings.queue_overflow`: "drop_new" refuses the message that does not fit (Mosquitto's
behaviour); "drop_oldest" evicts from the head of the queue until it fits. Either way
the drop goes to the core's `dead_letters` (counted, maybe dead-lettered) and is logged
once per overflow episode. QoS 0 messages are queued only while a connection is attached
but not writable; an offline session never queues QoS 0 (as Mosquitto).

Before the bound is reached, back-pressure applies (flow.py, docs/backpressure.md): past
a high-water mark the publisher of the message being queued stops being read until the
queue drains, and its QoS 1/2 messages are then kept even past the bound. `_enqueue` and
`pump` hold the two hooks; nothing runs for a delivery written at once.

A persistent session records every change of its outbound messages in the store (see
mqttd/store/base.py); `deliver` reports whether it recorded anything so the publisher's
PUBACK/PUBREC waits for the commit.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import TYPE_CHECKING

from ..protocol.encoder import encode, patch_packet_id
from ..protocol.packets import PubRel
from ..store.base import OutboundState
from .context import SessionContext
from .dead_letter import DropReason
from .inflight import EMPTY, Inflight
from .message import Message
from .outbound import Outbound, PublisherAck, SharedDelivery, SharedOutbound
from .retained_feed import drop_feeds, run_feeds
from .subscription import SubOptions
from .topic_alias import TopicAliases

if TYPE_CHECKING:
    from ..auth.hooks import Authorise
    from ..store.base import Store
    from .connection import Connection, Sink
    from .retained_feed import RetainedFeed
    from .shared import SharedGroup
    from .stats import BrokerStats

__all__ = ["Outbound", "Session", "SessionContext", "SharedOutbound", "SubOptions"]


logger = logging.getLogger("mqttd.session")

_PUBLISH_SENT = OutboundState.PUBLISH_SENT
_PUBREL_SENT = OutboundState.PUBREL_SENT

_LIMITS: dict[tuple[int, int, bool], tuple[int, int, bool]] = {}


def _queue_limits(max_messages: int, max_bytes: int, drop_oldest: bool) -> tuple[int, int, bool]:
    """The one shared tuple of these queue limits."""
    limits = (max_messages, max_bytes, drop_oldest)
    return _LIMITS.setdefault(limits, limits)


class Session(Inflight):
    """The server side of one client id's session (see the module docstring)."""

    __slots__ = (
        "_core",
        "_deferred",
        "_inbound_qos2",
        "_max_inflight_bytes",
        "_queue",
        "_queue_limits",
        "_stats",
        "_store",
        "_upgrade_qos",
        "client_id",
        "connection",
        "expiry_interval",
        "feeds",
        "max_packet_size",
        "persistent",
        "protocol_level",
        "queued_bytes",
        "sink",
        "subscriptions",
        "topic_aliases",
        "username",
        "waiting_publishers",
        "window",
        "writable",
    )

    def __init__(self, core: SessionContext, client_id: str, protocol_level: int) -> None:
        settings = core.settings
        self._core = core
        self._store: Store = core.store
        self._stats: BrokerStats = core.stats
        self._rare = None  # rare.py's SessionRareFields: timers, delayed will, overflow
        # (max messages, max bytes, drop oldest): one tuple shared by the sessions with
        # the same limits, not three slots each.
        self._queue_limits = _queue_limits(
            settings.max_queued_messages,
            settings.max_queued_bytes,
            settings.queue_overflow == "drop_oldest",
        )
        self._max_inflight_bytes = settings.max_inflight_bytes
        self._upgrade_qos = settings.upgrade_outgoing_qos
        self._deferred = 0  # writes waiting for a store commit (see `_send`)
        self.client_id = client_id
        self.protocol_level = protocol_level
        #: The user name the session acts as (ACL checks on delivery) and belongs to.
        self.username: str | None = None
        self.connection: Connection | None = None
        self.sink: Sink | None = None
        self.writable = False  # a connection is attached and its transport takes bytes
        self.persistent = False  # recorded in the store, outlives its connection
        self.expiry_interval = 0  # seconds after disconnect; 0xFFFFFFFF never
        # Shared and empty until the first entry (inflight.py's EMPTY): 128 bytes less
        # per idle session.
        self.subscriptions: dict[str, SubOptions] = EMPTY
        self.inflight: dict[int, Outbound] = EMPTY
        # Made on first use (see `queue`): an empty deque is 760 bytes, most sessions
        # never queue, and idle connections must stay small. A list while the session
        # is offline as restored at start (`restore_queue`).
        self._queue: deque[Outbound] | list[Outbound] | None = None
        self.queued_bytes = 0
        #: Back-pressure (flow.py): the connections paused until this session drains.
        self.waiting_publishers: set[Connection] | None = None
        self.next_packet_id = 1
        self.next_seq = 1
        # Made on first use too (see `inbound_qos2`): 216 bytes an idle client never needs.
        self._inbound_qos2: set[int] | None = None
        #: Retained messages of new subscriptions still to send, oldest first
        #: (retained_feed.py); None when there are none.
        self.feeds: deque[RetainedFeed] | None = None
        self.window = 65_535
        self.max_packet_size = 268_435_460  # the client's Maximum Packet Size (5.0)
        #: Server-to-client topic aliases of the attached 5.0 connection, None when the
        #: client allows none (or `server_topic_aliases` is off).
        self.topic_aliases: TopicAliases | None = None

    def __repr__(self) -> str:
        state = "connected" if self.connection is not None else "offline"
        return (
            f"<Session {self.client_id!r} {state} "
            f"inflight={len(self.inflight)} queued={self.queue_length}>"
        )

    @property
    def queue(self) -> deque[Outbound]:
        """Messages waiting to be sent (or for the client to come back), oldest first."""
        queue = self._queue
        if not isinstance(queue, deque):  # None, or restored (`restore_queue`)
            queue = self._queue = deque(queue or ())
        return queue

    @queue.setter
    def queue(self, queue: deque[Outbound]) -> None:
        self._queue = queue

    @property
    def inbound_qos2(self) -> set[int]:
        """Packet ids of inbound QoS 2 messages received, awaiting PUBREL (4.3.3)."""
        ids = self._inbound_qos2
        if ids is None:
            ids = self._inbound_qos2 = set()
        return ids

    @inbound_qos2.setter
    def inbound_qos2(self, ids: set[int]) -> None:
        self._inbound_qos2 = ids

    @property
    def inbound_qos2_ids(self) -> set[int] | tuple[()]:
        """The inbound QoS 2 ids, without making the set of a session that has none."""
        return self._inbound_qos2 or ()

    def restore_queue(self, entries: list[Outbound]) -> None:
        """The queue of a session restored at start, oldest first. Kept as the list
        given until the session is pumped or queued to: a `deque` is 760 bytes
        however short, a list of one entry 64 (100,000 offline sessions with a message
        each: 66 MiB, docs/benchmarks.md, start-up)."""
        self._queue = entries

    @property
    def queue_length(self) -> int:
        """len(queue), without making the queue of a session that never queued."""
        queue = self._queue
        return len(queue) if queue is not None else 0

    # -- delivery (the hot path) -------------------------------------------------------

    def offer(
        self,
        message: Message,
        options: SubOptions,
        authorise: Authorise | None,
        group: SharedGroup | None = None,
    ) -> bool:
        """Deliver `message` through a subscription with `options` by the rules of every
        routed delivery (True if recorded): No Local [MQTT-3.8.3-3], the ACL's read right
        (None = no ACL), `outgoing_qos`, retain 0 [MQTT-3.3.1-9] unless Retain As
        Published. `group`: the shared subscription of this member. `outgoing_qos` and
        `deliver` are inlined: one call per receiver, measured on fan-out."""
        if options.no_local and self.client_id == message.origin:
            return False
        if authorise is not None and not authorise(
            self.client_id, self.username, "read", message.topic
        ):
            return False
        qos = options.qos
        if message.qos < qos and not self._upgrade_qos:
            qos = message.qos
        retain = message.retain and options.retain_as_published
        if group is not None:
            return self.deliver_shared(message, qos, retain, options.sub_ids, group)
        if qos == 0:
            if self.writable:
                self._write_publish(message, 0, retain, options.sub_ids)
            elif self.connection is not None:
                self._enqueue(Outbound(message, 0, retain, options.sub_ids))
            return False
        return self._deliver_entry(Outbound(message, qos, retain, options.sub_ids))

    def outgoing_qos(self, granted: int, message: Message) -> int:
        """The QoS of one delivery: min(granted, published) [MQTT-3.8.4-8], or the
        granted QoS with upgrade_outgoing_qos (Mosquitto's non-standard option)."""
        return granted if self._upgrade_qos else min(granted, message.qos)

    def deliver(self, message: Message, qos: int, retain: bool, sub_ids: tuple[int, ...]) -> bool:
        """Send `message` at `qos` now, or queue it; True if it was recorded in the store.

        `qos` is already min(published, granted); `retain` is the flag this delivery
        carries; `sub_ids` the Subscription Identifiers of the matching subscriptions.
        """
        if qos == 0:
            if self.writable:
                self._write_publish(message, 0, retain, sub_ids)
            elif self.connection is not None:
                self._enqueue(Outbound(message, 0, retain, sub_ids))
            return False
        return self._deliver_entry(Outbound(message, qos, retain, sub_ids))

    def deliver_shared(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        group: SharedGroup,
        held: SharedDelivery | None = None,
    ) -> bool:
        """`deliver` for a shared subscription's member (the entry remembers `group`).

        QoS 0 goes as any other delivery: at most once, never handed to another member.
        `held`: a cluster's hold on the message (outbound.SharedDelivery), told when
        this member acknowledges it.
        """
        if qos == 0:
            return self.deliver(message, 0, retain, sub_ids)
        entry = SharedOutbound(message, qos, retain, sub_ids, group)
        if held is not None:
            entry.ack = held
            held.entry = entry
            held.session = self
        return self._deliver_entry(entry)

    def _deliver_entry(self, entry: Outbound) -> bool:
        """Send a QoS 1/2 entry now or queue it; True if it was recorded in the store."""
        inflight = self.inflight
        if (
            self.writable
            and not self._queue
            and len(inflight) < self.window
            and (not self._max_inflight_bytes or self._bytes_room())
        ):
            if not self.persistent:
                # `_start` inlined without its store part: a clean session records
                # nothing, so its delivery is a packet id, the write, the entry. Kept
                # inline on purpose, a near-copy of `_start`'s send: the call cost 6-7 %
                # of a fan-out QoS 1 delivery (`profile_core.py fan-out-q1`, 2.01 -> 2.16 us).
                pid = self.next_packet_id
                if pid in inflight:  # else it is free [MQTT-2.2.1-3]
                    pid = self._free_packet_id()
                if self._write_publish(
                    entry.message, entry.qos, entry.retain, entry.sub_ids, packet_id=pid
                ):
                    self.next_packet_id = pid % 65_535 + 1
                    entry.packet_id = pid
                    entry.state = _PUBLISH_SENT
                    if inflight is EMPTY:  # the first QoS 1/2 message of the session
                        inflight = self.inflight = {}
                    inflight[pid] = entry
                return False
            # Recorded as sent under its packet id: one change, not an add and an update.
            pid = self._free_packet_id()
            self.record(entry, pid)
            if self._start(entry, pid):
                self._hold(entry)
            # Recorded even when the send was dropped: the removal is recorded too,
            # and the ack must still follow it.
            return True
        if not self._enqueue(entry):
            return False
        if self.persistent:
            self.record(entry)
            self._hold(entry)
            return True
        return False

    def _hold(self, entry: Outbound) -> None:
        """Let the publisher's PUBACK wait for this client's PUBACK or the commit,
        whichever comes first (outbound.PublisherAck). QoS 1 only: a QoS 2 PUBLISH
        waits for the commit anyway; a shared subscription's entry may move to
        another member, and an offline session will not acknowledge soon, so those
        leave the publisher's PUBACK to the commit."""
        core = self._core
        ack = core.pending_ack
        if ack is None:
            publisher = core.acking
            if publisher is None:
                return  # no QoS 1 PUBLISH from a client (or retained): the commit decides
            # Made here, by the first delivery that holds it, not per PUBLISH: a message
            # for clean sessions only has its PUBACK written at once (inbound.py).
            ack = core.pending_ack = PublisherAck(publisher.send_ready_acks)
        # Offline, the PUBACK is far off: no hold, and no reference from a queued
        # entry to the publisher's connection.
        if entry.qos == 1 and type(entry) is Outbound and self.connection is not None:
            entry.ack = ack
            ack.holders += 1
        else:
            ack.blocked = True

    def _write_publish(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        *,
        packet_id: int = 0,
        dup: bool = False,
        resend: bool = False,
    ) -> bool:
        """Encode and write one PUBLISH; False when expired or too large for the client.

        `resend` marks the redelivery of a message whose delivery had already started:
        the spec keeps those even past their expiry (3.3.2.3.3 deletes only messages
        whose onward delivery has not started).
        """
        level = self.protocol_level
        expiry_at = message.expiry_at
        aliases = self.topic_aliases
        if expiry_at is None and (level != 5 or (not sub_ids and aliases is None)):
            # The shared encoding; its first slot read inline: one call less per receiver.
            if message.encoded_key == (level << 3) | (qos << 1) | retain:
                data, offset = message.encoded
            else:
                data, offset = message.encoding(level, qos, retain)
        else:
            remaining = None
            if expiry_at is not None:
                left = expiry_at - self._core.clock.now()
                if left <= 0 and not resend:
                    self._core.dead_letters.drop(DropReason.EXPIRED, message, self.client_id)
                    return False
                # Rounded up, never 0: the receiver must not be told less time than is
                # left (5.0 3.3.2.3.3; Mosquitto sends 4 for a 5 s message 1 s later).
                remaining = math.ceil(left) if left > 0 else 1
            if aliases is None:
                data, offset = message.encoding(level, qos, retain, sub_ids, remaining)
            else:
                # The alias is this connection's (topic_alias.py).
                alias, known = aliases.assign(message.topic)
                data, offset = message.encoding(
                    level, qos, retain, sub_ids, remaining, alias, known
                )
                if alias and not known and len(data) > self.max_packet_size:
                    aliases.forget(message.topic)  # never sent: the client cannot know it
        if len(data) > self.max_packet_size:
            # 5.0 3.1.2.11.4: discard as if sent, never exceed the client's maximum.
            self._core.dead_letters.drop(DropReason.TOO_LARGE, message, self.client_id)
            return False
        if qos:
            data = patch_packet_id(data, offset, packet_id, dup)  # type: ignore[assignment]
        # Exactly once across a crash: the client must not hold a QoS 2 packet id before
        # the store does, or after a restart the message would go out again under
        # another id (a duplicate) or another message under this one (swallowed).
        if self._deferred or (qos == 2 and self.persistent):
            self._send(data, True)
        else:
            # `_send`'s usual case inline: one call less per delivery.
            sink = self.sink
            assert sink is not None
            sink.write(data)
        stats = self._stats
        if message.origin is None and message.topic[:5] == "$SYS/":
            # The broker's own figures are not client traffic (a dashboard reading $SYS
            # would otherwise see "messages sent" move with nobody publishing).
            stats.sys_publish_sent += 1
        else:
            stats.publish_sent += 1
        stats.packets_sent += 1
        stats.bytes_sent += len(data)
        return True

    def _send(self, data: bytes, after_commit: bool) -> None:
        """Write to the client now, or once the store has committed what it holds.

        Once one write waits for a commit, the ones after it wait too (callbacks run
        in order), so the client sees the messages in the order they were sent.
        """
        sink = self.sink
        assert sink is not None
        if not after_commit and not self._deferred:
            sink.write(data)
            return
        self._deferred += 1

        def write_committed() -> None:
            self._deferred -= 1
            if self.sink is sink:  # still the same connection
                sink.write(data)

        self._store.after_commit(write_committed)

    def _enqueue(self, entry: Outbound) -> bool:
        """Append to the queue within its bounds; False if the entry was dropped."""
        queue = self._queue
        if not isinstance(queue, deque):  # None, or restored (`restore_queue`)
            queue = self._queue = deque(queue or ())
        size = len(entry.message.payload)
        flow = self._core.flow
        if (
            (len(queue) >= flow.high or (flow.high_bytes and self.queued_bytes >= flow.high_bytes))
            and flow.saturated(self)
            and entry.qos
        ):
            # The publisher is paused until this queue drains: keep a QoS 1/2 message,
            # past the hard bound if need be (flow.py says why that stays bounded). QoS 0
            # still obeys the bound below: it may be dropped, and is counted.
            queue.append(entry)
            self.queued_bytes += size
            return True
        max_n, max_b, drop_oldest = self._queue_limits
        if (max_n and len(queue) >= max_n) or (max_b and self.queued_bytes + size > max_b):
            if drop_oldest:
                while queue and (
                    (max_n and len(queue) >= max_n) or (max_b and self.queued_bytes + size > max_b)
                ):
                    self._drop(queue.popleft())
                fits = not (max_n and len(queue) >= max_n) and not (
                    max_b and self.queued_bytes + size > max_b
                )
            else:
                fits = False
            if not fits:
                self._core.dead_letters.drop(DropReason.QUEUE_FULL, entry.message, self.client_id)
                self._log_overflow()
                return False
            self._log_overflow()
        elif self._rare is not None and self.overflowing and len(queue) < max_n // 2:
            self.overflowing = False
        queue.append(entry)
        self.queued_bytes += size
        return True

    def set_queue_limits(self, max_messages: int, max_bytes: int, overflow: str) -> None:
        """Bound this session's queue by its own limits instead of the broker's.

        A bridge's local session queues what waits for its remote broker, with the
        bridge's `max_queued_messages` and `queue_overflow` ("drop_new"/"drop_oldest").
        """
        self._queue_limits = _queue_limits(max_messages, max_bytes, overflow == "drop_oldest")

    def _drop(self, entry: Outbound) -> None:
        """Forget a queued entry evicted by the drop_oldest policy."""
        self.queued_bytes -= len(entry.message.payload)
        self._core.dead_letters.drop(DropReason.QUEUE_FULL, entry.message, self.client_id)
        if entry.seq:
            self._store.remove_outbound(self.client_id, entry.seq)

    def _log_overflow(self) -> None:
        if not self.overflowing:
            self.overflowing = True
            logger.warning(
                "session %r: queue full (%d messages, %d bytes), %s",
                self.client_id,
                len(self.queue),
                self.queued_bytes,
                "dropping the oldest" if self._queue_limits[2] else "dropping new messages",
            )

    def pump(self) -> None:
        """Send queued messages while the sink is writable and the window has room."""
        queue = self._queue
        if not isinstance(queue, deque):
            if queue is None:
                if self.feeds is not None:
                    run_feeds(self)
                return
            queue = self._queue = deque(queue)  # restored at start (`restore_queue`)
        inflight = self.inflight
        window = self.window
        while queue and self.writable:
            entry = queue[0]
            if entry.qos and (
                len(inflight) >= window or (self._max_inflight_bytes and not self._bytes_room())
            ):
                break
            queue.popleft()
            self.queued_bytes -= len(entry.message.payload)
            if entry.qos:
                self._start(entry)
            else:
                self._write_publish(entry.message, 0, entry.retain, entry.sub_ids)
        if self.waiting_publishers is not None and len(queue) <= self._core.flow.low:
            self._core.flow.pumped(self)
        if self.feeds is not None and not queue:
            run_feeds(self)

    # -- connection life ---------------------------------------------------------------

    def attach(
        self,
        connection: Connection,
        sink: Sink,
        protocol_level: int,
        window: int,
        max_packet_size: int,
        topic_alias_maximum: int = 0,
    ) -> None:
        """Bind the session to a new connection (CONNACK is sent, resume comes next).

        `topic_alias_maximum` > 0 turns on server topic aliases for this connection.
        """
        self.connection = connection
        self.sink = sink
        self.protocol_level = protocol_level
        self.window = window
        self.max_packet_size = max_packet_size
        # Aliases live as long as one network connection [MQTT-3.3.2-7].
        self.topic_aliases = TopicAliases(topic_alias_maximum) if topic_alias_maximum else None
        self.writable = True

    def resume(self) -> None:
        """Resend what was inflight (PUBLISH with DUP=1, PUBREL) then the queue [MQTT-4.4.0-1]."""
        if not self.inflight and not self._queue:
            if self.feeds is not None:
                run_feeds(self)
            return
        for pid, entry in list(self.inflight.items()):
            if not self.writable:
                break
            if entry.state == _PUBREL_SENT:
                self._write_pubrel(pid)
            elif not self._write_publish(
                entry.message,
                entry.qos,
                entry.retain,
                entry.sub_ids,
                packet_id=pid,
                dup=True,
                resend=True,
            ):
                # Too large for the client's new maximum: drop it as if delivered.
                del self.inflight[pid]
                if entry.seq:
                    self._store.remove_outbound(self.client_id, entry.seq)
        self.pump()

    def _write_pubrel(self, packet_id: int) -> None:
        data = encode(PubRel(packet_id), self.protocol_level)
        self._send(data, False)
        stats = self._stats
        stats.packets_sent += 1
        stats.bytes_sent += len(data)

    def detach(self) -> None:
        """The connection is gone: stop writing; QoS 0 messages are not kept offline."""
        self.connection = None
        self.sink = None
        self.writable = False
        self.topic_aliases = None
        if self.waiting_publishers is not None:
            # Offline, it may never drain: its publishers go on (flow.py).
            self._core.flow.drained(self)
        if self._queue and any(entry.qos == 0 for entry in self._queue):
            drops = self._core.dead_letters
            for entry in self.queue:
                if not entry.qos:
                    drops.drop(DropReason.DISCONNECTED, entry.message, self.client_id)
            kept = deque(entry for entry in self.queue if entry.qos)
            self.queue = kept
            self.queued_bytes = sum(len(e.message.payload) for e in kept)

    def set_writable(self, writable: bool) -> None:
        """The transport's high/low water mark was crossed."""
        if self.connection is None:
            return
        self.writable = writable
        if writable and self._queue:
            self.pump()
        elif writable and self.feeds is not None:
            run_feeds(self)

    def clear(self) -> None:
        """Forget every message (the session ends or restarts with clean start)."""
        self.inflight.clear()
        self._queue = None
        self.queued_bytes = 0
        drop_feeds(self)
        if self.waiting_publishers is not None:
            self._core.flow.drained(self)
        self._inbound_qos2 = None
