"""Shared subscriptions' QoS 1/2 messages from JetStream: a member's node dying moves them
on (docs/cluster.md, "Shared subscriptions are cluster-wide").

Theory of operation. With durable sessions every QoS 1/2 message published on any node
is stored in the messages stream (subject `mqttd.<cluster>.m.<topic subject>`) before
its PUBACK/PUBREC. A "$share/{share}/{filter}" group reads that stream through durable
pull consumers of its own, one per subject of the filter (nats-server 2.9 allows one
filter subject per consumer; `a/#` is `…a` and `…a.>`: two consumers). The consumers
are cluster-wide, named from the share and the subject: every node with members of the
group pulls from the same ones, so JetStream hands each message to one node, and that
node's core gives it to one local member (`BackplaneHost.deliver_shared_from_node`).

The node acknowledges a message to JetStream only once it is settled here:

- the member acknowledged it (PUBACK; for QoS 2 its PUBREC, or the PUBLISH sent: from
  then on it MUST NOT go to another member [MQTT-4.8.2-5]; settled at once when it went
  out at once, else at the PUBREC or the next renewal), heard through the
  `SharedDelivery` the core attached to the member's entry;
- or it went out at QoS 0, or the ACL refused it (as on one broker: not retried);
- or it is recorded in a persistent member's session, whose log in JetStream carries it
  from then on (acknowledged once the log stored the record; 5.0 4.8.2 lets a server
  wait for a disconnected persistent member).

A message the node cannot place (its last member here just left) is NAKed at once, and
JetStream gives it to another node. A message the node holds for a member is kept
alive with "in progress" acknowledgements every third of `shared_ack_wait`; one whose
entry ended without an acknowledgement (dropped, or its session ended with nobody here
to take it over) is NAKed too, unless it was QoS 2 and already sent; one the core
dropped for a member that is still connected (expired, too large for the client, its
queue full) is settled, as one broker drops it. A node that dies
sends nothing more: after `shared_ack_wait` JetStream redelivers what it held to a node
that still pulls, with the same cluster message id, so a node that gets back a message
it settled lately acknowledges it again without delivering it twice.

A node pulls only while it has members of the group: a batch at a time, and no more than
`MAX_HELD` messages held per group, so a member that never acknowledges stops its node
from taking more and the others' members get the rest. The consumers are created on a
node's first member (or found, when another node made them first) and deleted by
JetStream once nobody pulled for `inactive_threshold` (the group is empty cluster-wide).
QoS 0 messages of shared groups still come through NATS queue groups (backplane.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from nats import errors as nats_errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from ..broker.backplane import BackplaneHost
from ..broker.message import Message
from ..broker.outbound import SharedDelivery, SharedOutbound
from ..broker.shared import HELD, NO_MEMBER, STORED
from ..store.base import OutboundState
from .durable import SessionLog
from .envelope import Envelope, EnvelopeError, decode_envelope
from .subjects import filter_to_subjects, topic_matches

__all__ = ["MAX_HELD", "SharedConsumers"]

logger = logging.getLogger("mqttd.cluster")

#: Messages a node holds unsettled per group at most; it pulls no more until some settle.
MAX_HELD = 1000
#: Messages asked for per pull.
_BATCH = 100
#: How long one pull waits for messages at most, seconds (a node that leaves a group
#: stops pulling once its last pull ends).
_PULL_WAIT = 2.0
#: Least seconds a group's consumer outlives its last puller (`inactive_threshold`).
INACTIVE_MIN = 60.0
#: Message ids settled lately, remembered to recognise a redelivery.
_SETTLED_WINDOW = 16_384

_ACK, _NAK, _PROGRESS = b"+ACK", b"-NAK", b"+WPI"
_NAK_LATER = b'-NAK {"delay": 5000000000}'  # given again in 5 s
_QUEUED = OutboundState.QUEUED


@dataclass(slots=True)
class _Holding:
    """A message this node took for a member and has not settled yet."""

    reply: str  # the JetStream delivery's acknowledgement subject
    held: SharedDelivery
    group: _Group


@dataclass(slots=True, eq=False)
class _Group:
    """This node's pulls for one shared group."""

    share: str
    topic_filter: str
    wanted: bool = True
    held: int = 0
    room: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def consumer_name(share: str, topic_filter: str, subject: str) -> str:
    """The durable consumer of "$share/{share}/{topic_filter}" on one subject of its filter
    (the same on every node). `a/#` and `a` both read subject `…a`, as two groups."""
    key = f"{share}\0{topic_filter}\0{subject}"
    return "share_" + hashlib.sha256(key.encode()).hexdigest()[:40]


class SharedConsumers:
    """One node's pulls of the shared groups' QoS 1/2 messages (see the module docstring)."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        log: SessionLog,
        host: Callable[[], BackplaneHost],
        message: Callable[[Envelope], Message],
        routing: Callable[[Envelope], None],
        ack_wait: float,
    ) -> None:
        self._nc = nc
        self._js = js
        self._log = log
        self._host = host
        self._message = message
        self._routing = routing
        self.ack_wait = ack_wait
        self._groups: dict[tuple[str, str], _Group] = {}
        self._holding: dict[str, _Holding] = {}
        self._settled: set[str] = set()
        self._settled_order: deque[str] = deque()
        self._acks: deque[tuple[str, bytes]] = deque()
        self._acks_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: False once the core is stopping: what comes is passed on to other nodes.
        self.accepting = True
        #: Figures: messages taken from JetStream, redeliveries among them, NAKed.
        self.taken = 0
        self.redelivered = 0
        self.passed_on = 0

    def start(self) -> None:
        """Start the acknowledgement sender and the hold renewal."""
        self._tasks = [
            asyncio.create_task(self._ack_loop(), name="mqttd-cluster-share-acks"),
            asyncio.create_task(self._renew_loop(), name="mqttd-cluster-share-renew"),
        ]

    async def stop(self) -> None:
        """Stop pulling and pass what is held here on to other nodes at once (a QoS 2
        message already sent is settled instead: it stays with its member)."""
        for group in self._groups.values():
            group.wanted = False
            self._tasks.extend(group.tasks)
            group.room.set()
        self._groups.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 0.5)
        self._tasks = []
        for holding in self._holding.values():
            holding.held.done = True
            self._send(holding.reply, _ACK if self._sent_qos2(holding.held) else _NAK)
        self._holding.clear()
        with contextlib.suppress(Exception):
            while self._acks:
                reply, kind = self._acks.popleft()
                await asyncio.wait_for(self._nc.publish(reply, kind), 0.5)

    @property
    def holding(self) -> int:
        """Messages held for members here, unsettled."""
        return len(self._holding)

    # -- joining and leaving ------------------------------------------------------------

    async def join(self, share: str, topic_filter: str) -> None:
        """This node has members of the group: pull its messages (made if need be)."""
        key = (share, topic_filter)
        group = self._groups.get(key)
        if group is not None and any(not task.done() for task in group.tasks):
            group.wanted = True  # still pulling (left and joined again)
            return
        group = self._groups[key] = _Group(share, topic_filter)
        group.room.set()
        for subject in filter_to_subjects(topic_filter, self._log.message_prefix):
            name = consumer_name(share, topic_filter, subject)
            config = ConsumerConfig(
                name=name,
                durable_name=name,
                filter_subject=subject,
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait,
                max_deliver=-1,
                max_ack_pending=-1,
                # Deleted by JetStream once no node pulled for this long (the group is
                # empty cluster-wide); well above a pull's wait.
                inactive_threshold=max(INACTIVE_MIN, 3 * self.ack_wait),
            )
            group.tasks.append(
                asyncio.create_task(self._pull(group, config), name=f"mqttd-cluster-share-{name}")
            )

    def leave(self, share: str, topic_filter: str) -> None:
        """This node's last member of the group left: stop pulling once the current pull
        ends (what it brings is passed on to other nodes)."""
        group = self._groups.get((share, topic_filter))
        if group is not None:
            group.wanted = False
            group.room.set()

    # -- pulling ------------------------------------------------------------------------

    async def _pull(self, group: _Group, config: ConsumerConfig) -> None:
        # Pull requests of our own, answered on an inbox whose callback takes each message
        # as it comes (nats-py's fetch holds a batch back until it is full or times out).
        nc = self._nc
        stream = self._log.messages
        name = config.durable_name
        inbox = nc.new_inbox()
        ended = asyncio.Event()  # the current request is over (all came, or it expired)
        asked = 0
        made = False  # the consumer exists (made here, or found)

        async def on_msg(msg: Msg) -> None:
            nonlocal asked, made
            headers = msg.headers
            status = headers.get("Status") if headers else None
            if status:
                if status != "100":  # 404 none, 408 expired, 409 ...: the request is over
                    ended.set()
                if status == "503" or (
                    status == "409" and "deleted" in (headers or {}).get("Description", "")
                ):
                    made = False  # gone (nobody pulled for long, or deleted by hand)
                return
            asked -= 1
            if asked <= 0:
                ended.set()
            try:
                self._take(group, msg)
            except Exception:
                logger.exception("cluster: a $share/%s message failed", group.share)
                self._send(msg.reply, _NAK_LATER)  # not at once: it may fail again

        sub = await nc.subscribe(inbox, cb=on_msg)
        request = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"
        expires = int(_PULL_WAIT * 1e9)
        try:
            while group.wanted:
                if not made:
                    try:
                        await self._js.add_consumer(stream, config)
                        made = True
                    except (TimeoutError, nats_errors.Error) as exc:
                        # NATS or JetStream away: try again shortly.
                        logger.warning("cluster: $share/%s not joined yet: %s", group.share, exc)
                        await asyncio.sleep(0.5)
                        continue
                room = MAX_HELD - group.held
                if room <= 0:
                    group.room.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(group.room.wait(), _PULL_WAIT)
                    continue
                asked = min(room, _BATCH)
                ended.clear()
                try:
                    body = json.dumps({"batch": asked, "expires": expires}).encode()
                    await nc.publish(request, body, reply=inbox)
                except nats_errors.Error as exc:  # NATS away: try again shortly
                    logger.debug("cluster: pulling $share/%s failed: %s", group.share, exc)
                    await asyncio.sleep(0.5)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), _PULL_WAIT + 1.0)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _take(self, group: _Group, msg: Msg) -> None:
        reply = msg.reply
        self.taken += 1
        if not self.accepting:
            self._pass_on(reply)
            return
        try:
            envelope = decode_envelope(msg.data)
        except EnvelopeError as exc:
            logger.warning("cluster: dropping a $share message: %s", exc)
            self._send(reply, _ACK)
            return
        if not topic_matches(group.topic_filter, envelope.topic):
            self._send(reply, _ACK)  # a widened filter's subject: not this group's
            return
        message_id = f"{envelope.node}.{envelope.boot}.{envelope.seq}"
        holding = self._holding.get(message_id)
        if holding is not None:
            # Ours still (a renewal got lost): keep it, under the new delivery's subject.
            self.redelivered += 1
            holding.reply = reply
            self._send(reply, _PROGRESS)
            return
        if message_id in self._settled:
            self.redelivered += 1
            self._send(reply, _ACK)  # settled here already: its acknowledgement got lost
            return
        if not group.wanted:
            self._pass_on(reply)
            return
        self._routing(envelope)
        held = SharedDelivery(lambda: self._delivered(message_id))
        outcome = self._host().deliver_shared_from_node(
            self._message(envelope), group.share, group.topic_filter, held
        )
        if outcome == NO_MEMBER:
            self._pass_on(reply)
        elif outcome == STORED:
            # In a persistent member's session: its log carries it once stored.
            self._remember(message_id)
            self._log.when_stored(lambda: self._send(reply, _ACK))
        elif outcome == HELD and not held.done and not self._sent_qos2(held):
            self._holding[message_id] = _Holding(reply, held, group)
            group.held += 1
        else:
            held.done = True
            self._remember(message_id)
            self._send(reply, _ACK)

    @staticmethod
    def _sent_qos2(held: SharedDelivery) -> bool:
        # A QoS 2 PUBLISH on its way to the member: it MUST NOT go to another [MQTT-4.8.2-5].
        entry = held.entry
        return entry is not None and entry.qos == 2 and entry.state != _QUEUED

    def _pass_on(self, reply: str) -> None:
        self.passed_on += 1
        self._send(reply, _NAK)

    def _delivered(self, message_id: str) -> None:
        holding = self._holding.pop(message_id, None)
        if holding is None:
            return
        self._release(holding)
        self._remember(message_id)
        self._send(holding.reply, _ACK)

    def _release(self, holding: _Holding) -> None:
        group = holding.group
        group.held -= 1
        if group.held < MAX_HELD:
            group.room.set()

    def _remember(self, message_id: str) -> None:
        settled = self._settled
        if message_id in settled:
            return
        settled.add(message_id)
        order = self._settled_order
        order.append(message_id)
        if len(order) > _SETTLED_WINDOW:
            settled.discard(order.popleft())

    # -- renewing holds, finding entries that ended ---------------------------------------

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            try:
                self.renew()
            except Exception:
                logger.exception("cluster: renewing $share holds failed")

    def renew(self) -> None:
        """Renew the hold on every message still with a member here; settle the QoS 2
        ones sent meanwhile and those the core dropped; pass on those whose member's
        session ended without acknowledging them."""
        queued: dict[int, set[int]] = {}
        for message_id, holding in list(self._holding.items()):
            held = holding.held
            entry, session = held.entry, held.session
            alive = False
            if entry is not None and session is not None:
                if entry.packet_id and session.inflight.get(entry.packet_id) is entry:
                    alive = True
                else:
                    ids = queued.get(id(session))
                    if ids is None:
                        ids = queued[id(session)] = {
                            id(e) for e in session.queue if type(e) is SharedOutbound
                        }
                    alive = id(entry) in ids
            sent_qos2 = self._sent_qos2(held)
            if alive and not sent_qos2:
                self._send(holding.reply, _PROGRESS)
                continue
            del self._holding[message_id]
            held.done = True
            self._release(holding)
            if sent_qos2 or (session is not None and session.connection is not None):
                # Sent since (from the queue), PUBREC not in yet: it stays with its member.
                # Or its member is still here and the core dropped it (expired, too large
                # for the client, queue full), as one broker would: settled too.
                self._remember(message_id)
                self._send(holding.reply, _ACK)
            else:
                self._pass_on(holding.reply)  # its member's session ended

    # -- acknowledgements to JetStream ----------------------------------------------------

    def _send(self, reply: str, kind: bytes) -> None:
        if reply:
            self._acks.append((reply, kind))
            self._acks_wake.set()

    async def _ack_loop(self) -> None:
        acks = self._acks
        nc = self._nc
        while True:
            await self._acks_wake.wait()
            self._acks_wake.clear()
            while acks:
                reply, kind = acks.popleft()
                try:
                    await nc.publish(reply, kind)
                except Exception as exc:  # NATS away: JetStream redelivers after ack_wait
                    logger.debug("cluster: a $share acknowledgement was not sent: %s", exc)
