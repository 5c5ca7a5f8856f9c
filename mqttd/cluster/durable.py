"""Durable sessions: each persistent session's log in a JetStream stream (docs/cluster.md).

Theory of operation. The core already keeps "acknowledged means stored" through its
`Store`: it records every change of a persistent session and sends PUBACK/PUBREC from
`store.after_commit` (delivery.RECORDED). `DurableStore` wraps the node's own store and
also writes each change of a session this node owns as a record (records.py) on the
session's subject `mqttd.<cluster>.s.<sha256(client id)>` of the stream
`mqttd_<cluster>_sessions` (replicas as `[cluster] replicas`). Its `after_commit` runs
the callback once the node's store has committed AND JetStream has acknowledged every
record written before the call, so a publisher's PUBACK waits for both. The core does no
I/O and does not know about any of it.

`SessionLog` is the JetStream side. Records are published in order on one connection,
each with a reply subject of our own inbox and a `Nats-Msg-Id` (JetStream drops the
copy of a record sent twice), many at a time: no task and no round trip per record. A
record unacknowledged after `request_timeout` (NATS away, JetStream recovering) is sent
again, and the acks it holds back wait meanwhile (the publishers get no PUBACK for what
is not stored). `read` gives a session's records back (records.fold makes the session
of them); a `delete_session` record, once stored, purges what came before it on the
subject. Every `COMPACT_EVERY` records a session's log is read back and written again
as one snapshot record, and what the snapshot holds is purged.

Only the owner writes: records are mirrored only for client ids whose claim this node
holds (`ClientIdClaims`), and never while `muted` (a session copied in from the log is
recorded in the node's own store only).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError

from ..store.base import (
    OutboundState,
    RetainedRow,
    Store,
    StoredMessage,
    StoredOutbound,
    StoredState,
    StoredSubscription,
    StoredWill,
)
from . import records as r
from .limits import header_size
from .subjects import message_prefix

__all__ = ["DurableStore", "SessionLog"]

logger = logging.getLogger("mqttd.cluster")

#: How often unacknowledged records are looked at (and sent again when too old), seconds.
_RESEND_EVERY = 0.25
#: Records in flight to JetStream at most; more wait in the queue.
_WINDOW = 4096
#: A session's log is compacted (one snapshot record) after this many records.
COMPACT_EVERY = 1000
#: A replay's consumer is removed by the server after this long without a fetch, s.
_REPLAY_IDLE = 30.0
#: Largest snapshot written, bytes (and never more than NATS's max_payload allows).
MAX_SNAPSHOT = 900 * 1024


class SessionLog:
    """The stream of session logs, as one node writes and reads it."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        cluster: str,
        node: str,
        boot: int,
        owns: Callable[[str], bool],
        timeout: float,
        replicas: int,
        retention: float,
    ) -> None:
        self._nc = nc
        self._js = js
        self.stream = f"mqttd_{cluster}_sessions"
        self._prefix = f"mqttd.{cluster}.s."
        #: QoS 1/2 messages as published, kept `retention` seconds (replayed to a
        #: session whose node may have lost some: `replay`).
        self.messages = f"mqttd_{cluster}_messages"
        self.message_prefix = message_prefix(cluster)
        self.message_long = self.message_prefix + "long"
        self._retention = retention
        self._id_prefix = f"{node}.{boot}."
        self._owns = owns
        self._timeout = timeout
        self._replicas = replicas
        self._inbox = ""
        self._muted: set[str] = set()
        self._next = 1  # number of the next record
        self._acked = 0  # every record up to this number is stored
        self._acked_above: set[int] = set()
        self._queue: deque[tuple[int, str, bytes, str]] = deque()
        self._outstanding: dict[int, tuple[str, bytes, str, float]] = {}
        self._waiting: deque[tuple[int, Callable[[], None]]] = deque()
        #: Record number of a delete or snapshot -> its subject and where the purge ends
        #: (None: at the record itself).
        self._purges: dict[int, tuple[str, int | None]] = {}
        #: Records written per session since its log was last compacted.
        self._since_compaction: dict[str, int] = {}
        self._compacting: set[str] = set()
        #: Snapshots written (figures).
        self.compactions = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Future[None]] = set()
        #: Records stored, and sent again, since start (figures).
        self.stored = 0
        self.resent = 0
        #: Records too large for NATS, left out of their log (figures).
        self.too_large = 0

    async def open(self) -> None:
        """Create (or find) the stream, subscribe the ack inbox, start the sender."""
        config = StreamConfig(
            name=self.stream,
            subjects=[self._prefix + "*"],
            storage=StorageType.FILE,
            num_replicas=self._replicas,
            duplicate_window=120.0,
        )
        messages = StreamConfig(
            name=self.messages,
            subjects=[self.message_prefix + ".>", self.message_long],
            storage=StorageType.FILE,
            num_replicas=self._replicas,
            duplicate_window=120.0,
            max_age=self._retention,
        )
        for stream in (config, messages):
            try:
                await self._js.add_stream(stream)
            except BadRequestError:
                await self._js.stream_info(stream.name or "")  # made before, other settings
        self._inbox = self._nc.new_inbox()
        await self._nc.subscribe(self._inbox + ".*", cb=self._on_ack)
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="mqttd-cluster-log"),
            asyncio.create_task(self._resend_loop(), name="mqttd-cluster-log-resend"),
        ]

    async def close(self) -> None:
        """Stop the tasks (what is unacknowledged stays unacknowledged)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    # -- writing ------------------------------------------------------------------------

    def subject(self, client_id: str) -> str:
        """The subject of `client_id`'s log."""
        return self._prefix + hashlib.sha256(client_id.encode()).hexdigest()

    def mirrors(self, client_id: str) -> bool:
        """True when changes of `client_id`'s session go to its log from this node."""
        return client_id not in self._muted and self._owns(client_id)

    @contextlib.contextmanager
    def muted(self, client_id: str) -> Iterator[None]:
        """Within: changes of `client_id` stay in the node's own store."""
        self._muted.add(client_id)
        try:
            yield
        finally:
            self._muted.discard(client_id)

    def fits(self, record: bytes, message_id: str) -> bool:
        """True when `record` with its `Nats-Msg-Id` header fits NATS's max_payload
        (nats-server counts headers too, and cuts off a client that sends more)."""
        return len(record) + header_size(message_id) <= self._nc.max_payload

    def write(self, client_id: str, record: bytes) -> None:
        """Queue `record` for `client_id`'s log (one too large for NATS is left out:
        said and counted, never tried again, so the records after it are stored)."""
        msg_id = self._id_prefix + str(self._next)
        if not self.fits(record, msg_id):
            self.too_large += 1
            logger.warning(
                "cluster: a record of %d bytes (%r) of the session of %r is too large for"
                " NATS (max_payload %d bytes): left out of its log",
                len(record),
                record[:1].decode(errors="replace"),
                client_id,
                self._nc.max_payload,
            )
            return
        n = self._next
        self._next = n + 1
        subject = self.subject(client_id)
        if record[:1] == r.DELETE_SESSION:
            self._purges[n] = (subject, None)
            self._since_compaction.pop(client_id, None)
        else:
            count = self._since_compaction.get(client_id, 0) + 1
            self._since_compaction[client_id] = count
            if count >= COMPACT_EVERY and client_id not in self._compacting:
                self._compacting.add(client_id)
                task = asyncio.ensure_future(self._compact(client_id))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        self._queue.append((n, subject, record, self._id_prefix + str(n)))
        self._wake.set()

    async def _compact(self, client_id: str) -> None:
        """Write the session as one snapshot record, then purge what it replaces."""
        try:
            found, times = await self._read(client_id)
            if not found or not self._owns(client_id):
                return
            upto = found[-1][0]
            # Messages queued lately stay known even once acknowledged and purged: a
            # replay (which starts a margin before the last record) must skip them.
            since = times[-1] - 2 * self.replay_margin
            recent = [data for (_, data), at in zip(found, times, strict=True) if at >= since]
            snapshot = r.encode_snapshot(upto, r.fold(client_id, found), r.message_ids(recent))
            if (
                snapshot is None
                or len(snapshot) > MAX_SNAPSHOT
                or not self.fits(snapshot, self._id_prefix + str(self._next))
            ):
                return  # no session, or too big for one NATS message: the log stays
            if not self._owns(client_id):
                return
            n = self._next
            self._next = n + 1
            subject = self.subject(client_id)
            self._purges[n] = (subject, upto + 1)
            self._queue.append((n, subject, snapshot, self._id_prefix + str(n)))
            self._wake.set()
            self.compactions += 1
        except Exception as exc:
            logger.warning("cluster: compacting the log of %r failed: %s", client_id, exc)
        finally:
            self._since_compaction[client_id] = 0
            self._compacting.discard(client_id)

    def write_message(self, subject: str, envelope: bytes, message_id: str) -> None:
        """Queue a QoS 1/2 message's envelope for the messages stream (the backplane
        refused one too large for NATS before: limits.fits)."""
        n = self._next
        self._next = n + 1
        self._queue.append((n, subject, envelope, message_id))
        self._wake.set()

    def when_stored(self, callback: Callable[[], None]) -> None:
        """Run `callback` once every record written so far is stored (in call order)."""
        target = self._next - 1
        if target <= self._acked and not self._waiting:
            callback()
        else:
            self._waiting.append((target, callback))

    async def flush(self, timeout: float) -> bool:
        """Wait until every record written so far is stored; False on timeout."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def stored() -> None:
            if not done.done():
                done.set_result(None)

        self.when_stored(stored)
        try:
            await asyncio.wait_for(done, timeout)
        except TimeoutError:
            return False
        return True

    async def _send_loop(self) -> None:
        queue = self._queue
        while True:
            await self._wake.wait()
            self._wake.clear()
            while queue and len(self._outstanding) < _WINDOW:
                n, subject, record, msg_id = queue.popleft()
                await self._send(n, subject, record, msg_id)

    async def _send(self, n: int, subject: str, record: bytes, msg_id: str) -> None:
        now = asyncio.get_running_loop().time()
        self._outstanding[n] = (subject, record, msg_id, now)
        try:
            await self._nc.publish(
                subject,
                record,
                reply=f"{self._inbox}.{n}",
                headers={"Nats-Msg-Id": msg_id},
            )
        except Exception as exc:  # NATS away: the resend loop tries again
            logger.debug("cluster: session record %d not sent: %s", n, exc)

    async def _resend_loop(self) -> None:
        while True:
            await asyncio.sleep(_RESEND_EVERY)
            now = asyncio.get_running_loop().time()
            for n, (subject, record, msg_id, sent) in list(self._outstanding.items()):
                if now - sent >= self._timeout and n in self._outstanding:
                    self.resent += 1
                    await self._send(n, subject, record, msg_id)
            if self._queue:
                self._wake.set()

    async def _on_ack(self, msg: Msg) -> None:
        try:
            n = int(msg.subject.rsplit(".", 1)[1])
        except ValueError:
            return
        if n not in self._outstanding:
            return  # a second ack of a record sent twice
        try:
            reply: dict[str, Any] = json.loads(msg.data) if msg.data else {}
        except ValueError:
            reply = {}
        if "seq" not in reply or "error" in reply:
            # No responders (503), JetStream away, or refused: sent again later.
            subject, record, msg_id, _ = self._outstanding[n]
            self._outstanding[n] = (subject, record, msg_id, -self._timeout)
            return
        del self._outstanding[n]
        self.stored += 1
        purge = self._purges.pop(n, None)
        if purge is not None:
            subject, upto = purge
            task = asyncio.ensure_future(self._purge(subject, upto or int(reply["seq"])))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if n == self._acked + 1:
            acked = n
            above = self._acked_above
            while acked + 1 in above:
                acked += 1
                above.discard(acked)
            self._acked = acked
            waiting = self._waiting
            while waiting and waiting[0][0] <= acked:
                _, callback = waiting.popleft()
                try:
                    callback()
                except Exception:
                    logger.exception("cluster: an acknowledgement callback failed")
            if self._queue:
                self._wake.set()
        else:
            self._acked_above.add(n)

    async def _purge(self, subject: str, seq: int) -> None:
        # What came before a stored delete_session is dead: free it.
        with contextlib.suppress(Exception):
            await self._js.purge_stream(self.stream, seq=seq, subject=subject)

    # -- reading ------------------------------------------------------------------------

    @property
    def replay_margin(self) -> float:
        """How far before a log's last record a replay starts (sessions.py): the routing
        delay a message may have had on its way to the old node, with room to spare."""
        return 2 * self._timeout + 1.0

    async def read(self, client_id: str) -> tuple[list[tuple[int, bytes]], float]:
        """The records of `client_id`'s log with their stream seqs, oldest first, and
        when the last was stored (wall clock; 0 when the log is empty)."""
        found, times = await self._read(client_id)
        return found, times[-1] if times else 0.0

    async def ended(self, client_id: str) -> bool | None:
        """Whether `client_id`'s log ends with the session's end (a `delete_session`
        record, which stays after the purge it causes); None when it has no record at
        all (a session the cluster never held)."""
        try:
            last = await self._js.get_last_msg(self.stream, self.subject(client_id))
        except NotFoundError:
            return None
        return (last.data or b"")[:1] == r.DELETE_SESSION

    async def _read(self, client_id: str) -> tuple[list[tuple[int, bytes]], list[float]]:
        subject = self.subject(client_id)
        try:
            last = await self._js.get_last_msg(self.stream, subject)
        except NotFoundError:
            return [], []
        last_seq = last.seq or 0
        found: list[tuple[int, bytes]] = []
        times: list[float] = []
        sub = await self._js.subscribe(
            subject, stream=self.stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        try:
            while True:
                msg = await sub.next_msg(timeout=self._timeout)
                seq = msg.metadata.sequence.stream
                found.append((seq, msg.data))
                times.append(msg.metadata.timestamp.timestamp())
                if seq >= last_seq:
                    break
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return found, times

    async def replay(self, subject: str, since: float) -> list[tuple[int, bytes, str]]:
        """The QoS 1/2 messages on `subject` (wildcards allowed) stored since `since`
        (wall clock) that the messages stream still holds: (stream seq, envelope, id)."""
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=datetime.fromtimestamp(since, UTC),
        )
        sub = await self._js.subscribe(
            subject, stream=self.messages, ordered_consumer=True, config=config
        )
        found: list[tuple[int, bytes, str]] = []
        try:
            info = await sub.consumer_info()
            if not info.num_pending and not (info.delivered and info.delivered.consumer_seq):
                return found
            while True:
                msg = await sub.next_msg(timeout=self._timeout)
                meta = msg.metadata
                message_id = (msg.headers or {}).get("Nats-Msg-Id", "")
                found.append((meta.sequence.stream, msg.data, message_id))
                if not meta.num_pending:
                    break
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return found

    async def replay_from(
        self, subject: str, since: float
    ) -> tuple[JetStreamContext.PullSubscription, int]:
        """A pull consumer of the QoS 1/2 messages on `subject` (wildcards allowed)
        stored since `since` (wall clock), and how many it has now. The reader fetches
        at its own pace, so a long replay cannot make NATS cut it off as a slow
        consumer; the server forgets the consumer once nobody fetched for a while."""
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=datetime.fromtimestamp(since, UTC),
            ack_policy=AckPolicy.NONE,
            inactive_threshold=_REPLAY_IDLE,
        )
        sub = await self._js.pull_subscribe(subject, stream=self.messages, config=config)
        try:
            info = await sub.consumer_info()
        except BaseException:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            raise
        return sub, info.num_pending or 0


class DurableStore:
    """The node's `Store`, with each change of an owned session also in its log."""

    def __init__(self, inner: Store, log: SessionLog | None = None) -> None:
        self.inner = inner
        #: Set once the cluster has started; before that nothing is mirrored.
        self.log = log
        #: Messages by the node's ids, for `add_outbound` records (they carry the body).
        self._messages: dict[int, StoredMessage] = {}
        self._refs: dict[int, int] = {}
        self._outbound: dict[str, dict[int, int]] = {}  # client id -> seq -> message id
        #: The message being routed (its payload object) and its cluster-wide id: the
        #: backplane sets it; `save_message` of that message keeps the id for its
        #: records, so a replay after a node's death knows what a session already had.
        self.current: tuple[bytes, str] | None = None
        self._ids: dict[int, str] = {}

    def _log(self, client_id: str) -> SessionLog | None:
        log = self.log
        return log if log is not None and log.mirrors(client_id) else None

    async def open(self) -> None:
        """Open the node's store."""
        await self.inner.open()

    async def close(self) -> None:
        """Close the node's store."""
        await self.inner.close()

    async def load(self, retained: bool = True) -> StoredState:
        """The node's store's contents (its messages are kept for later records)."""
        state = await self.inner.load(retained)
        self._messages.update(state.messages)
        for session in state.sessions:
            for out in session.outbound:
                self._ref(session.client_id, out.seq, out.message_id)
        return state

    def retained_rows(self, chunk: int = 20_000) -> AsyncIterator[list[RetainedRow]]:
        """The node's store's retained messages, a chunk at a time."""
        return self.inner.retained_rows(chunk)

    def after_commit(self, callback: Callable[[], None], patient: bool = False) -> None:
        """`callback` once the node's store committed and JetStream stored the records."""
        log = self.log
        if log is None:
            self.inner.after_commit(callback, patient)
        else:
            target_log = log
            self.inner.after_commit(lambda: target_log.when_stored(callback), patient)

    def save_retained(self, message: StoredMessage) -> None:
        """Retained messages are the backplane's KV bucket's: the node's store only."""
        self.inner.save_retained(message)

    def delete_retained(self, topic: str) -> None:
        """As `save_retained`."""
        self.inner.delete_retained(topic)

    def save_session(
        self,
        client_id: str,
        protocol_level: int,
        expiry_interval: int,
        disconnected_at: float | None,
        owner: str | None = None,
    ) -> None:
        """Record a session's own fields."""
        self.inner.save_session(client_id, protocol_level, expiry_interval, disconnected_at, owner)
        log = self._log(client_id)
        if log is not None:
            args = [protocol_level, expiry_interval, disconnected_at, owner]
            log.write(client_id, r.encode_record(r.SAVE_SESSION, args))

    def delete_session(self, client_id: str) -> None:
        """Forget a session (its log is purged once the delete is stored)."""
        self.inner.delete_session(client_id)
        for mid in self._outbound.pop(client_id, {}).values():
            self._unref_message(mid)
        log = self._log(client_id)
        if log is not None:
            log.write(client_id, r.encode_record(r.DELETE_SESSION, []))

    def add_subscription(self, client_id: str, subscription: StoredSubscription) -> None:
        """Record a subscription."""
        self.inner.add_subscription(client_id, subscription)
        log = self._log(client_id)
        if log is not None:
            s = subscription
            args = [
                s.topic_filter,
                s.qos,
                s.no_local,
                s.retain_as_published,
                s.retain_handling,
                s.subscription_identifier,
            ]
            log.write(client_id, r.encode_record(r.ADD_SUBSCRIPTION, args))

    def remove_subscription(self, client_id: str, topic_filter: str) -> None:
        """Forget a subscription."""
        self.inner.remove_subscription(client_id, topic_filter)
        log = self._log(client_id)
        if log is not None:
            log.write(client_id, r.encode_record(r.REMOVE_SUBSCRIPTION, [topic_filter]))

    def save_message(self, message_id: int, message: StoredMessage) -> None:
        """Record a message; kept here until no outbound entry refers to it."""
        self.inner.save_message(message_id, message)
        self._messages[message_id] = message
        current = self.current
        if current is not None and current[0] is message.payload:
            self._ids[message_id] = current[1]

    def add_outbound(self, client_id: str, outbound: StoredOutbound) -> None:
        """Record an outbound entry (in the log with its message)."""
        self.inner.add_outbound(client_id, outbound)
        mid = outbound.message_id
        self._ref(client_id, outbound.seq, mid)
        log = self._log(client_id)
        message = self._messages.get(mid)
        if log is not None and message is not None:
            o = outbound
            args = [
                o.seq,
                o.qos,
                o.retain,
                list(o.subscription_ids),
                o.packet_id,
                int(o.state),
                self._ids.get(mid),
            ]
            log.write(client_id, r.encode_record(r.ADD_OUTBOUND, args, message))

    def set_outbound_state(
        self, client_id: str, seq: int, packet_id: int | None, state: OutboundState
    ) -> None:
        """Record an outbound entry's new packet id and state."""
        self.inner.set_outbound_state(client_id, seq, packet_id, state)
        log = self._log(client_id)
        if log is not None:
            args = [seq, packet_id, int(state)]
            log.write(client_id, r.encode_record(r.SET_OUTBOUND_STATE, args))

    def remove_outbound(self, client_id: str, seq: int) -> None:
        """Forget an outbound entry."""
        self.inner.remove_outbound(client_id, seq)
        entries = self._outbound.get(client_id)
        if entries is not None:
            mid = entries.pop(seq, None)
            if mid is not None:
                self._unref_message(mid)
        log = self._log(client_id)
        if log is not None:
            log.write(client_id, r.encode_record(r.REMOVE_OUTBOUND, [seq]))

    def add_inbound_qos2(self, client_id: str, packet_id: int) -> None:
        """Record an inbound QoS 2 packet id awaiting PUBREL."""
        self.inner.add_inbound_qos2(client_id, packet_id)
        log = self._log(client_id)
        if log is not None:
            log.write(client_id, r.encode_record(r.ADD_INBOUND_QOS2, [packet_id]))

    def remove_inbound_qos2(self, client_id: str, packet_id: int) -> None:
        """Forget an inbound QoS 2 packet id."""
        self.inner.remove_inbound_qos2(client_id, packet_id)
        log = self._log(client_id)
        if log is not None:
            log.write(client_id, r.encode_record(r.REMOVE_INBOUND_QOS2, [packet_id]))

    def save_will(self, client_id: str, will: StoredWill) -> None:
        """Record a pending will."""
        self.inner.save_will(client_id, will)
        log = self._log(client_id)
        if log is not None:
            log.write(client_id, r.encode_record(r.SAVE_WILL, [will.publish_at], will.message))

    def delete_will(self, client_id: str) -> None:
        """Forget a pending will."""
        self.inner.delete_will(client_id)
        log = self._log(client_id)
        if log is not None:
            log.write(client_id, r.encode_record(r.DELETE_WILL, []))

    def _ref(self, client_id: str, seq: int, message_id: int) -> None:
        entries = self._outbound.setdefault(client_id, {})
        old = entries.get(seq)
        entries[seq] = message_id
        self._refs[message_id] = self._refs.get(message_id, 0) + 1
        if old is not None:
            self._unref_message(old)

    def _unref_message(self, mid: int) -> None:
        left = self._refs.get(mid, 0) - 1
        if left > 0:
            self._refs[mid] = left
        else:
            self._refs.pop(mid, None)
            self._messages.pop(mid, None)
            self._ids.pop(mid, None)
