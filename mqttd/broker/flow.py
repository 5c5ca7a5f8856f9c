"""Why a publisher is not read: back-pressure, and the publish-rate throttle.

A connection stops being read for one of two reasons, each a bit of
`Connection.hold_reading` (HOLD_FLOW, HOLD_THROTTLE), so that one ending does not
resume a client the other still holds. Both are here: back-pressure (`FlowControl`,
below) and `max_publish_rate` (`throttle`, at the end).

Back-pressure: a publisher is paused while a session it feeds is saturated.

Theory of operation. Every session's queue has a hard bound (`max_queued_messages`,
`max_queued_bytes`) with an overflow policy that drops (session.py). Dropping an
acknowledged QoS 1/2 message is a loss the publisher never hears of, so before the bound
is reached the broker slows the publishers down instead: when a delivery is queued in a
session past its high-water mark, the connection whose PUBLISH it was stops being read
(`Connection.hold_reading`). Its client's TCP window fills and it waits, as it would for
a slow network. When the session's queue drains to its low-water mark, every publisher
paused on it is read again. Nothing here runs for a delivery that is written at once or
queued below the mark, so a broker that is keeping up pays nothing for it.

The marks: half the hard bound (`max_queued_messages` // 2 and `max_queued_bytes` // 2),
at most `HIGH_WATER_CAP` messages (1000 queued messages keep any subscriber busy), and
`HIGH_WATER_CAP` when the queue is unbounded (0), so memory stays bounded then too.
The low-water mark is half the high one.

When pausing cannot help, the overflow policy applies as before:
- the session is offline (a persistent session waiting for its client): the client may
  never come back, and no publisher should wait for it;
- the publisher is the session's own client (its PUBACKs drain that very queue), or is
  not a client at all (wills, $SYS, bridges, retained messages for a new subscription);
- the publisher's own session is saturated too: a connection whose session has paused
  publishers, or whose queue is past the mark, is never paused itself, because reading
  its acknowledgements is what drains it. This is also what keeps two clients that
  publish to each other from pausing each other for ever: every session that holds
  publishers back has a connection that is being read;
- the session made no progress for `max_publisher_pause` seconds (its client stays
  connected but stops reading): its publishers are resumed and the overflow policy
  applies to it until it drains to its low-water mark, so one stuck subscriber cannot
  stall a topic's publishers for ever.

A publisher that is paused goes on handling the rest of the packets it had already sent
in the same read, and its QoS 1/2 deliveries to the session that paused it are kept even
past the hard bound (QoS 0 ones obey the bound: they may be dropped, and are counted).
So a session holds at most its hard bound plus one read (64 to 256 KiB) per paused
publisher: bounded, and no acknowledged message is dropped.

State lives on the objects, only while it exists: `Session.waiting_publishers` (the
connections paused on it, or `GAVE_UP`) and `Connection.blocked_on` (the sessions it
waits for); both are None otherwise.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..auth.limits import TokenBucket
    from .connection import Connection
    from .scheduler import Scheduler, Timer
    from .session import Session
    from .settings import BrokerSettings
    from .stats import BrokerStats

__all__ = [
    "GAVE_UP",
    "HIGH_WATER_CAP",
    "HOLD_CLAIM",
    "HOLD_FLOW",
    "HOLD_SUBACK",
    "HOLD_THROTTLE",
    "FlowControl",
    "throttle",
    "water_marks",
]

logger = logging.getLogger("mqttd.flow")

#: The most messages a session queues before its publishers are paused.
HIGH_WATER_CAP = 1000

#: `Connection.hold_reading` reason bits: one namespace, here, for every reason a
#: connection stops being read. HOLD_THROTTLE: over `max_publish_rate`;
#: HOLD_FLOW: back-pressure (this module).
HOLD_THROTTLE = 1
HOLD_FLOW = 2
#: HOLD_CLAIM: a CONNECT waits for the cluster's claim on its client id (connection.py).
HOLD_CLAIM = 4
#: HOLD_SUBACK: a SUBACK waits for the cluster's interest in its filters (subscribe.py).
HOLD_SUBACK = 8

#: `Session.waiting_publishers` of a session that stopped pausing publishers
#: (`max_publisher_pause` passed without progress) until it drains. Never added to.
GAVE_UP: set[Connection] = set()


def water_marks(max_queued: int) -> tuple[int, int]:
    """(high, low) water marks in messages for a hard bound of `max_queued` (0 = none)."""
    high = min(max(1, max_queued // 2), HIGH_WATER_CAP) if max_queued else HIGH_WATER_CAP
    return high, high // 2


class FlowControl:
    """Pauses publishers of saturated sessions and resumes them (see the module docstring)."""

    __slots__ = (
        "_scheduler",
        "_stats",
        "_watch",
        "high",
        "high_bytes",
        "low",
        "low_bytes",
        "max_pause",
        "publisher",
    )

    def __init__(self, settings: BrokerSettings, scheduler: Scheduler, stats: BrokerStats) -> None:
        self._scheduler = scheduler
        self._stats = stats
        self.high, self.low = water_marks(settings.max_queued_messages)
        self.high_bytes = settings.max_queued_bytes // 2
        self.low_bytes = self.high_bytes // 2
        self.max_pause = settings.max_publisher_pause
        #: The connection whose PUBLISH is being routed (set by `Broker.publish`).
        self.publisher: Connection | None = None
        # Saturated sessions: (progress timer, queue length when it was armed).
        self._watch: dict[Session, tuple[Timer, int]] = {}

    def saturated(self, session: Session) -> bool:
        """A delivery to `session` is being queued past its high-water mark.

        Pauses the current publisher on it when that can help; True when the publisher
        is paused on this session (the delivery is then kept whatever the hard bound).
        """
        waiting = session.waiting_publishers
        if waiting and self.publisher in waiting:
            return True  # the steady state of a saturated session: one set lookup
        own = session.connection
        if own is None:
            return False
        if own.blocked_on is not None:
            # Its client is paused for some other session, but its acknowledgements are
            # what drains this queue: it must be read (no pause cycle can form).
            self.forget(own)
        publisher = self.publisher
        if publisher is None or publisher is own or waiting is GAVE_UP:
            return False
        theirs = publisher.session
        if theirs is not None and (
            theirs.waiting_publishers is not None or theirs.queue_length >= self.high
        ):
            return False  # its acknowledgements drain a queue of its own: keep reading
        if waiting is None:
            waiting = session.waiting_publishers = set()
            self._arm(session)
        waiting.add(publisher)
        blocked = publisher.blocked_on
        if blocked is None:
            blocked = publisher.blocked_on = set()
        if not blocked:
            self._stats.publishers_paused += 1
            publisher.hold_reading(HOLD_FLOW)
        blocked.add(session)
        return True

    def pumped(self, session: Session) -> None:
        """`session`, which holds publishers back, sent from its queue down to `low`
        messages: resume them, unless its bytes are still past their mark."""
        if not self.high_bytes or session.queued_bytes <= self.low_bytes:
            self.drained(session)

    def drained(self, session: Session) -> None:
        """`session` fell to its low-water mark, went offline or ended: resume its publishers."""
        waiting = session.waiting_publishers
        session.waiting_publishers = None
        watch = self._watch.pop(session, None)
        if watch is not None:
            watch[0].cancel()
        if not waiting:
            return
        for publisher in waiting:
            blocked = publisher.blocked_on
            if blocked is None:
                continue
            blocked.discard(session)
            if not blocked:
                publisher.blocked_on = None
                publisher.release_reading(HOLD_FLOW)

    def forget(self, publisher: Connection) -> None:
        """Read `publisher` again now, whatever it waited for (it closes, or its own
        session became saturated)."""
        blocked = publisher.blocked_on
        publisher.blocked_on = None
        if blocked:
            for session in blocked:
                waiting = session.waiting_publishers
                if waiting:
                    waiting.discard(publisher)
                    if not waiting:
                        self.drained(session)  # nobody waits on it any more
        publisher.release_reading(HOLD_FLOW)

    def _arm(self, session: Session) -> None:
        if self.max_pause <= 0:
            return
        timer = self._scheduler.call_later(self.max_pause, lambda: self._check_progress(session))
        self._watch[session] = (timer, session.queue_length)

    def _check_progress(self, session: Session) -> None:
        """`max_publisher_pause` passed: go on waiting if the queue shrank, else give up."""
        watch = self._watch.pop(session, None)
        if watch is None or session.waiting_publishers is None:
            return
        length = session.queue_length
        if length < watch[1]:
            self._arm(session)  # slow but moving: its publishers go at its pace
            return
        stats = self._stats
        stats.publisher_pause_timeouts += 1
        logger.warning(
            "session %r drained nothing for %.0f s with publishers paused on it: resuming "
            "them; its queue now drops by the overflow policy until it drains",
            session.client_id,
            self.max_pause,
        )
        self.drained(session)
        session.waiting_publishers = GAVE_UP


# -- max_publish_rate ---------------------------------------------------------------------


def throttle(conn: Connection, bucket: TokenBucket) -> None:
    """Count one PUBLISH of `conn` against `max_publish_rate`; over it, stop reading a while.

    The excess is not dropped: the socket is not read until the bucket's debt is paid,
    so the client's TCP window fills and it slows down. The pause is ours, not the
    client's silence: a connection not read is not disconnected by its keepalive
    (`Connection.keepalive_expired`), and its deadline counts again from the resume.
    """
    scheduler = conn.scheduler
    now = scheduler.clock.now()
    wait = bucket.take(now)
    if wait <= 0 or not conn.connected:
        return
    timer = conn.throttle_timer
    if timer is None:
        conn.hold_reading(HOLD_THROTTLE)
        conn.throttle_timer = scheduler.call_later(wait, lambda: _end_throttle(conn))
    else:
        timer.postpone(now + wait)  # more packets of the same read: a longer pause


def _end_throttle(conn: Connection) -> None:
    conn.throttle_timer = None
    conn.release_reading(HOLD_THROTTLE)
