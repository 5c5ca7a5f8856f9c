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

from ..store.base import StoredState
from . import records
from .durable import SessionLog

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

    async def bring_over(self, client_id: str, clean_start: bool) -> StoredState | None:
        """The session of `client_id` from its log, or None (none, or a clean start: the
        log then ends with a delete, as the session does)."""
        log = self.log
        if log is None:
            return None
        if clean_start:
            log.write(client_id, records.encode_record(records.DELETE_SESSION, []))
            return None
        try:
            state = await log.load(client_id)
        except records.RecordError as exc:
            logger.error("cluster: the log of %r is unreadable: %s", client_id, exc)
            return None
        if not state.sessions:
            return None
        self.moved_in += 1
        return state
