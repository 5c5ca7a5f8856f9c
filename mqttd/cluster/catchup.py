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
node's subscriptions once, QoS 2 included. The stream is read with pull consumers, a
batch at a time (`FETCH_BATCH`), so the replay itself cannot make the server cut the
node off again. Shared subscriptions are not replayed here (their groups' own path).

Ordering (MQTT 4.6, ordered topics). A message that the replay brings was published
before those that came live after the link was back. So while the replay has not yet
reached the end of the stream, live messages wait (`hold`, at most `MAX_HELD` or
`hold_for` seconds), and go on only after it (`release`): each topic's messages
reach the subscribers in their order. The exception: a message whose stored copy
JetStream took longer to store than the replay took to reach the stream's end
(JetStream still recovering after a restart, or the node that published it waiting
to send it again): the replay keeps reading the stream for `tail` seconds to route it,
later than messages published after it. Messages that nats-py drops while a
catch-up runs are routed by it, in the same way, late.

A node without durable sessions has no messages stream: it does not catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from nats import errors as nats_errors
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
#: Messages fetched from the stream at a time: what waits for this node on the NATS
#: server stays small (32 of NATS's largest, 1 MiB, are half its 64 MiB slow-consumer
#: limit).
FETCH_BATCH = 32
#: How often the tail of a catch-up looks for copies stored late, seconds.
_TAIL_EVERY = 0.5


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
        #: Where the running catch-up started, and when its tail ends (loop time).
        self._since = 0.0
        self._until = 0.0
        #: Which catch-up holds live messages back: only the latest may release them.
        self._generation = 0
        #: Catch-ups run, and messages they routed (not routed before): figures.
        self.runs = 0
        self.recovered = 0

    @property
    def running(self) -> bool:
        """True while a catch-up runs."""
        return self._task is not None and not self._task.done()

    def gap(self, since: float, reconnected: bool = True) -> None:
        """Messages stored since `since` (wall clock) may not have reached this node:
        replay them. After a reconnection a running catch-up starts again (its
        consumers may be gone with the old connection); after messages dropped by
        nats-py (`reconnected` False) it goes on for `tail` seconds more."""
        if self.running and not reconnected:
            self._until = max(self._until, asyncio.get_running_loop().time() + self.tail)
            return
        if self.running:
            since = min(since, self._since)
            assert self._task is not None
            self._task.cancel()
        self._generation += 1
        self._host.hold()  # at once: no live message may overtake the replay
        self._since = since
        self._task = asyncio.ensure_future(self._run(since, self._generation))

    async def close(self) -> None:
        """Stop the running catch-up."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._host.release()

    def _release(self, generation: int) -> None:
        if generation == self._generation:
            self._host.release()

    async def _run(self, since: float, generation: int) -> None:
        self.runs += 1
        host, log = self._host, self._log
        loop = asyncio.get_running_loop()
        subs: list[tuple[JetStreamContext.PullSubscription, int]] = []
        recovered = self.recovered
        try:
            # Subscriptions first (nats-py sent them again on reconnecting): whatever
            # the stream gets from now on also comes live.
            subjects = host.catch_up_subjects(log.message_prefix, log.message_long)
            if len(subjects) > MAX_SUBJECTS:
                subjects = [log.message_prefix + ".>", log.message_long]
            started = loop.time()
            deadline = started + _RETRY_FOR
            delay = 0.1
            while True:
                try:
                    await asyncio.wait_for(host.flush(), self.hold_for)
                    for subject in subjects:
                        subs.append(await log.replay_from(subject, since))
                    break
                except (TimeoutError, OSError, nats_errors.Error) as exc:
                    # JetStream away or still recovering: start again, from the top.
                    await _unsubscribe(subs)
                    if loop.time() + delay > deadline:
                        logger.warning("cluster: cannot catch up on lost messages: %s", exc)
                        return
                    if loop.time() - started > self.hold_for:
                        self._release(generation)  # live messages wait that long at most
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, 2.0)
            # Each subject's backlog in turn, in stream order: a topic's messages are on
            # one subject (a second, overlapping one brings copies, dropped).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.hold_for):
                    for sub, pending in subs:
                        while pending:
                            pending = await self._fetch(sub, 1.0)
            self._release(generation)
            # Copies JetStream stores late (resent by their node) still come: for a while.
            self._until = loop.time() + self.tail
            while loop.time() < self._until:
                await asyncio.sleep(_TAIL_EVERY)
                for sub, _ in subs:
                    with contextlib.suppress(TimeoutError, nats_errors.Error):
                        while await self._fetch(sub, _TAIL_EVERY):
                            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("cluster: catching up on lost messages failed")
        finally:
            self._release(generation)
            await _unsubscribe(subs)
            if self.recovered > recovered:
                logger.warning(
                    "cluster: %d messages lost on their way here were routed from the stream",
                    self.recovered - recovered,
                )

    async def _fetch(self, sub: JetStreamContext.PullSubscription, timeout: float) -> int:
        """Route one batch; what the consumer has left after it (0 when none came)."""
        try:
            msgs = await sub.fetch(FETCH_BATCH, timeout=timeout)
        except TimeoutError:
            return 0
        route = self._host.route
        for msg in msgs:
            if route(msg.data):
                self.recovered += 1
        return msgs[-1].metadata.num_pending if msgs else 0


async def _unsubscribe(subs: list[tuple[JetStreamContext.PullSubscription, int]]) -> None:
    for sub, _ in subs:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    subs.clear()
