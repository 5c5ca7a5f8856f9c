"""When nats-server has this node's new subscriptions: the SUBACKs that wait for it.

Theory of operation. A node subscribes a subject on NATS when its first local
subscription needs it (backplane.py, `interest_added`): the SUB goes out through the
node's outbox, after what was queued before it. Until nats-server has processed that
SUB, a message published on another node for the subject is not forwarded here, so a
SUBSCRIBE whose SUBACK went out at once would miss what its client's peers publish right
after it. A SUBSCRIBE that needs such a subject therefore waits (`wait`; the core's side
is broker/subscribe.py) until the SUB is confirmed.

Confirmation is one round trip on the connection that carries the SUBs, after them: a
request to a subject nobody subscribes (`mqttd.<cluster>.node.<node>.probe`). nats-server
handles a connection's protocol lines in order, so its "no responders" answer to the
request means every SUB sent before it is in place (nats-py's PING, `flush`, could
overtake SUBs still in its write buffer: it writes the PING directly). One probe covers
every SUB handed to nats-py before it; SUBs that come meanwhile get the next one.

The SUBs are numbered as they are queued (`subscribing`) and counted as the send loop
hands them to nats-py (`sent`); a subject waits from its SUB's number until a probe sent
after it returns. A probe that fails (NATS away: no answer within `timeout`) releases
the SUBACKs anyway, with a warning, and so does each SUBACK's own timer after `timeout`
(the outbox itself may be stuck behind a NATS that does not read): a client is never
held longer than that. What interest then missed, a catch-up replays once the link is
back (QoS 1/2, catchup.py).

With a NATS cluster (several nats-servers) the confirmation covers the server this node
is connected to; the servers tell each other of new interest asynchronously
(docs/cluster.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

__all__ = ["InterestConfirmations"]

logger = logging.getLogger("mqttd.cluster")


class _Waiter:
    """One SUBACK waiting for the SUBs up to `seq` to be confirmed."""

    __slots__ = ("confirmed", "seq", "timer")

    def __init__(self, seq: int, confirmed: Callable[[], None]) -> None:
        self.seq = seq
        self.confirmed = confirmed
        self.timer: asyncio.TimerHandle | None = None


class InterestConfirmations:
    """The SUBs of one NATS connection, and the SUBACKs waiting for them."""

    def __init__(self, probe: Callable[[], Awaitable[None]], timeout: float) -> None:
        #: One round trip after everything sent so far (raises when it fails).
        self._probe = probe
        self.timeout = timeout
        self._queued = 0  # SUBs numbered so far
        self._sent = 0  # SUBs handed to nats-py so far (in the order they were numbered)
        self._confirmed = 0  # SUBs nats-server is known to have
        #: Subjects whose SUB is not confirmed yet, with its number.
        self._pending: dict[str, int] = {}
        self._waiters: list[_Waiter] = []
        self._task: asyncio.Task[None] | None = None
        #: SUBACKs that waited, and those released without a confirmation.
        self.waits = 0
        self.unconfirmed = 0

    def subscribing(self, subject: str) -> None:
        """A SUB of `subject` was queued for NATS."""
        self._queued += 1
        self._pending[subject] = self._queued

    def unsubscribing(self, subject: str) -> None:
        """An UNSUB of `subject` was queued: nobody waits for it any more."""
        self._pending.pop(subject, None)

    def sent(self) -> None:
        """The send loop handed the next SUB to nats-py (or NATS refused it)."""
        self._sent += 1

    def wait(self, subjects: Iterable[str], confirmed: Callable[[], None]) -> bool:
        """True if one of `subjects` is not confirmed yet: `confirmed()` comes once it
        is, or after `timeout`. False: nats-server has them all."""
        pending = self._pending
        seq = max((pending.get(subject, 0) for subject in subjects), default=0)
        if seq <= self._confirmed:
            return False
        waiter = _Waiter(seq, confirmed)
        waiter.timer = asyncio.get_running_loop().call_later(self.timeout, self._late, waiter)
        self._waiters.append(waiter)
        self.waits += 1
        self.kick()
        return True

    def kick(self) -> None:
        """Probe for what was sent and not confirmed yet (the send loop calls this
        after each batch; a probe already under way sends the next one itself)."""
        if self._sent > self._confirmed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(
                self._confirm(), name="mqttd-cluster-interest"
            )

    async def _confirm(self) -> None:
        while self._sent > self._confirmed:
            upto = self._sent
            try:
                await self._probe()
            except Exception as exc:
                waiting = len(self._waiters_upto(upto))
                if waiting:
                    logger.warning(
                        "cluster: NATS did not confirm new subscriptions (%s): %d SUBACK(s)"
                        " sent without it",
                        exc or type(exc).__name__,
                        waiting,
                    )
                    self.unconfirmed += waiting
            self._confirmed = max(self._confirmed, upto)
            for subject, seq in list(self._pending.items()):
                if seq <= upto:
                    del self._pending[subject]
            self._release(upto)

    def _waiters_upto(self, upto: int) -> list[_Waiter]:
        return [waiter for waiter in self._waiters if waiter.seq <= upto]

    def _release(self, upto: int) -> None:
        ready = self._waiters_upto(upto)
        if not ready:
            return
        self._waiters = [waiter for waiter in self._waiters if waiter.seq > upto]
        for waiter in ready:
            self._answer(waiter)

    def _late(self, waiter: _Waiter) -> None:
        if waiter not in self._waiters:
            return
        self._waiters.remove(waiter)
        self.unconfirmed += 1
        logger.warning(
            "cluster: NATS did not confirm a new subscription within %.1f s: SUBACK sent"
            " without it",
            self.timeout,
        )
        self._answer(waiter)

    @staticmethod
    def _answer(waiter: _Waiter) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
        try:
            waiter.confirmed()
        except Exception:
            logger.exception("cluster: answering a SUBSCRIBE failed")

    async def close(self) -> None:
        """Stop probing and timing; a SUBACK still waiting is not answered (the node is
        stopping: its connections close)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if waiter.timer is not None:
                waiter.timer.cancel()
