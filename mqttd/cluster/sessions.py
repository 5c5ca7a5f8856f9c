"""Sessions moving between nodes: the takeover handshake and the session's log (docs/cluster.md).

Theory of operation. A CONNECT's claim on its client id (backplane.py, a compare-and-set
in the `clients` KV bucket) names the node that held the client id before. When that
is another node, `SessionMover.hand_over` asks it, on its takeover subject, to let go:
the old node closes its connection (DISCONNECT 0x8E), forgets the session locally
(nothing is dropped: it moves), waits until JetStream stored every record it wrote for
it (`SessionLog.flush`), and only then answers (`answer`). The new node then reads the
session's log (`bring_over`) and the core takes the session in
(`BackplaneHost.session_from_node`); the CONNACK goes out after that, with session
present = 1. A dead old node has no subscription on its subject: NATS answers "no
responders" at once, and its log, stored before any of its acknowledgements, is read
as it is. An old node that does not answer within `request_timeout` is not waited for
longer (it may write a record or two late: the fencing of the log is the claim only).
"""

from __future__ import annotations

import json
import logging

from nats import errors as nats_errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ..protocol.topics import parse_shared_subscription
from ..store.base import StoredMessage, StoredOutbound, StoredState, StoredSubscription
from . import records
from .durable import SessionLog
from .envelope import EnvelopeError, decode_envelope
from .subjects import filter_to_subjects, topic_matches

__all__ = ["SessionMover"]

logger = logging.getLogger("mqttd.cluster")


class SessionMover:
    """One node's side of sessions moving between nodes (see the module docstring)."""

    def __init__(self, nc: NATS, log: SessionLog | None, prefix: str, timeout: float) -> None:
        self._nc = nc
        self.log = log
        self._prefix = prefix  # "mqttd.<cluster>.node."
        self._timeout = timeout
        #: Sessions read from the cluster's log and taken in here (figures).
        self.moved_in = 0
        #: Messages replays queued (figures).
        self.replayed = 0

    async def hand_over(self, owner: str, client_id: str, token: int) -> None:
        """Ask node `owner` to let `client_id` go; return once it did, is dead, or is late."""
        notice = json.dumps({"client_id": client_id, "token": token}).encode()
        subject = self._prefix + owner + ".takeover"
        try:
            await self._nc.request(subject, notice, timeout=self._timeout)
        except nats_errors.NoRespondersError:
            logger.info("cluster: node %r is gone: taking %r from its log", owner, client_id)
        except (TimeoutError, nats_errors.TimeoutError):
            logger.warning(
                "cluster: node %r did not let %r go within %.1fs: taking it anyway",
                owner,
                client_id,
                self._timeout,
            )
        except nats_errors.Error as exc:
            logger.warning("cluster: asking node %r for %r failed: %s", owner, client_id, exc)

    async def answer(self, msg: Msg) -> None:
        """The session was let go here (the core did it): answer once its log is stored."""
        if not msg.reply:
            return
        log = self.log
        if log is not None and not await log.flush(self._timeout):
            logger.warning("cluster: session records not stored in time for a takeover")
        try:
            await msg.respond(b"ok")
        except nats_errors.Error as exc:
            logger.debug("cluster: takeover answer not sent: %s", exc)

    async def bring_over(
        self, client_id: str, clean_start: bool
    ) -> tuple[StoredState | None, list[bytes]]:
        """The session of `client_id` from its log, or None (none, or a clean start: the
        log then ends with a delete, as the session does); and the records of the
        messages its replay queued (the caller writes them once it owns the session).
        Several client ids may be brought over at once: nothing here is shared."""
        log = self.log
        if log is None:
            return None, []
        if clean_start:
            log.write(client_id, records.encode_record(records.DELETE_SESSION, []))
            return None, []
        found, stored_at = await log.read(client_id)
        try:
            folded = records.fold(client_id, found)
        except records.RecordError as exc:
            logger.error("cluster: the log of %r is unreadable: %s", client_id, exc)
            return None, []
        state = folded.state
        if not state.sessions:
            return None, []
        replayed = await self._replay(client_id, state, folded.seen, stored_at - log.replay_margin)
        self.moved_in += 1
        return state, replayed

    async def _replay(
        self, client_id: str, state: StoredState, known: set[str], since: float
    ) -> list[bytes]:
        """Queue the QoS 1/2 messages for the session's subscriptions that the messages
        stream holds since `since` and its log never had: what its old node may have
        received and died before recording, or what came while nobody held it. Returns
        the records of them."""
        log = self.log
        assert log is not None
        session = state.sessions[0]
        picked: dict[str, tuple[int, StoredMessage, StoredSubscription]] = {}
        for sub in session.subscriptions:
            share, topic_filter = parse_shared_subscription(sub.topic_filter)
            if share is not None:
                continue  # each message of a group went to one member: not replayed
            subjects = (*filter_to_subjects(topic_filter, log.message_prefix), log.message_long)
            for subject in subjects:
                for stream_seq, data, message_id in await log.replay(subject, since):
                    if not message_id or message_id in known or message_id in picked:
                        continue
                    try:
                        envelope = decode_envelope(data)
                    except EnvelopeError:
                        continue
                    if not topic_matches(topic_filter, envelope.topic):
                        continue
                    if sub.no_local and envelope.origin == client_id:
                        continue
                    message = records.stored_message(envelope)
                    picked[message_id] = (stream_seq, message, sub)
        replayed: list[bytes] = []
        seq = max((out.seq for out in session.outbound), default=0) + 1
        mid = max(state.messages, default=0) + 1
        for message_id, (_, message, sub) in sorted(picked.items(), key=lambda kv: kv[1][0]):
            qos = min(sub.qos, message.qos)
            if not qos:
                continue
            retain = message.retain and sub.retain_as_published
            sub_ids = (sub.subscription_identifier,) if sub.subscription_identifier else ()
            state.messages[mid] = message
            session.outbound.append(StoredOutbound(seq, mid, qos, retain, sub_ids))
            args = [seq, qos, retain, list(sub_ids), None, 0, message_id]
            replayed.append(records.encode_record(records.ADD_OUTBOUND, args, message))
            seq += 1
            mid += 1
        if picked:
            self.replayed += len(picked)
            logger.info("cluster: %d messages replayed to session %r", len(picked), client_id)
        return replayed
