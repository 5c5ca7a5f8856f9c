"""Catching up on what core NATS lost on its way to this node (docs/cluster.md).

Theory of operation. Messages cross nodes on core NATS, which is at most once: when
this node's NATS connection breaks (nats-server restarted, the network cut, or the
server cut the node off as a slow consumer), what was in flight to it is gone, and
so is what other nodes sent before its subscriptions were back. When nats-py drops
messages of a subscription that the node reads too slowly, they are gone too. But
every QoS 1/2 message was stored in the messages stream before its publisher got
PUBACK/PUBREC (durable.py). So after such a break (`gap`), `CatchUp` reads that
stream for the subjects of the filters this node holds, from a margin before the
break, and hands each message to the node's routing (`CatchUpHost.route`), which
routes only the ids it has not routed yet (seen.py): each message reaches this
node's subscriptions once, QoS 2 included.

Ordering (MQTT 4.6, ordered topics). A message that the replay brings was published
before those that came live after the link was back. So while the replay has not yet
reached the end of the stream, live messages wait (`hold`, at most `MAX_HELD` or
`hold_for` seconds), and go on only after it (`release`): each topic's messages
reach the subscribers in their order. The exception: a message whose stored copy
JetStream took longer to store than the replay took to reach the stream's end
(JetStream still recovering after a restart); the replay keeps following the stream
for `tail` seconds to route it, later than messages published after it.

A node without durable sessions has no messages stream: it does not catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from nats import errors as nats_errors
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from .durable import SessionLog

__all__ = ["MAX_HELD", "CatchUp", "CatchUpHost"]

logger = logging.getLogger("mqttd.cluster")

#: Live messages held back at most while a replay runs; more release them all.
MAX_HELD = 100_000
#: Replay subscriptions at most; with more filters the whole stream is read (the
#: node's topic tree keeps what matches).
MAX_SUBJECTS = 32
#: How long creating the replay is tried again while JetStream is away, seconds.
_RETRY_FOR = 30.0


class CatchUpHost(Protocol):
    """What `CatchUp` needs of the backplane."""

    def catch_up_subjects(self, prefix: str, long: str) -> list[str]:
        """The messages stream's subjects of the filters this node holds."""

    def route(self, data: bytes) -> bool:
        """Route one envelope from another node; False when it was routed before."""

    def hold(self) -> None:
        """From now on, keep live messages back."""

    def release(self) -> None:
        """Route the messages kept back, then the live ones as they come."""

    async def flush(self) -> None:
        """Return once NATS has processed what this node sent (its subscriptions)."""


class CatchUp:
    """One node's catch-ups after breaks in its NATS link (see the module docstring)."""

    def __init__(self, log: SessionLog, host: CatchUpHost, hold_for: float, tail: float) -> None:
        self._log = log
        self._host = host
        self.hold_for = hold_for
        self.tail = tail
        self._task: asyncio.Task[None] | None = None
        #: Where the next catch-up starts, when one is due after the running one.
        self._again: float | None = None
        #: Catch-ups run, and messages they routed (not routed before): figures.
        self.runs = 0
        self.recovered = 0

    @property
    def running(self) -> bool:
        """True while a catch-up runs."""
        return self._task is not None and not self._task.done()

    def gap(self, since: float) -> None:
        """Messages stored since `since` (wall clock) may not have reached this node:
        replay them (once the running catch-up, if any, is done)."""
        if self.running:
            self._again = since if self._again is None else min(self._again, since)
            return
        self._task = asyncio.ensure_future(self._run(since))

    async def close(self) -> None:
        """Stop the running catch-up."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self, since: float) -> None:
        while True:
            try:
                await self._once(since)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("cluster: catching up on lost messages failed")
            if self._again is None:
                return
            since, self._again = self._again, None

    async def _once(self, since: float) -> None:
        self.runs += 1
        host, log = self._host, self._log
        loop = asyncio.get_running_loop()
        host.hold()
        subs: list[JetStreamContext.PushSubscription] = []
        try:
            # Subscriptions first (nats-py sent them again on reconnecting): whatever
            # the stream gets from now on also comes live.
            subjects = host.catch_up_subjects(log.message_prefix, log.message_long)
            if len(subjects) > MAX_SUBJECTS:
                subjects = [log.message_prefix + ".>", log.message_long]
            behind = set(subjects)
            caught_up = asyncio.Event()
            recovered = self.recovered
            deadline = loop.time() + _RETRY_FOR
            delay = 0.1
            while True:
                try:
                    await asyncio.wait_for(host.flush(), self.hold_for)
                    for subject in subjects:
                        sub, empty = await log.follow(
                            subject, since, self._callback(subject, behind, caught_up)
                        )
                        subs.append(sub)
                        if empty:
                            behind.discard(subject)
                    if not behind:
                        caught_up.set()
                    break
                except (TimeoutError, OSError, nats_errors.Error) as exc:
                    # JetStream away or still recovering: start again, from the top.
                    for sub in subs:
                        with contextlib.suppress(Exception):
                            await sub.unsubscribe()
                    subs.clear()
                    behind = set(subjects)
                    caught_up.clear()
                    if loop.time() + delay > deadline:
                        logger.warning("cluster: cannot catch up on lost messages: %s", exc)
                        return
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, 2.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(caught_up.wait(), self.hold_for)
            host.release()
            # Copies JetStream stores late (resent by their node) still come: for a while.
            await asyncio.sleep(self.tail)
            if self.recovered > recovered:
                logger.warning(
                    "cluster: %d messages lost on their way here were routed from the stream",
                    self.recovered - recovered,
                )
        finally:
            host.release()
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    def _callback(
        self, subject: str, behind: set[str], caught_up: asyncio.Event
    ) -> Callable[[Msg], Awaitable[None]]:
        host = self._host

        async def on_stored(msg: Msg) -> None:
            if host.route(msg.data):
                self.recovered += 1
            if subject in behind and not msg.metadata.num_pending:
                behind.discard(subject)
                if not behind:
                    caught_up.set()

        return on_stored
