"""Wills: the message a connection leaves to be published when it ends abnormally.

Theory of operation (3.1.2.5, 5.0 3.1.3.2.2). A will is published when a connection
ends without a normal DISCONNECT. With a 5.0 Will Delay Interval it waits in its session
(persisted as a pending will) and goes out when the delay passes or the session ends,
whichever is first; a new connection for the client id in the meantime cancels it. On
takeover the old connection's will is published unless it has a delay (the new
connection is "a new Network Connection opened before the Will Delay Interval has
elapsed"). A shutdown publishes no will: pending ones stay in the store for the next
start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..store.base import StoredWill
from .recovery import stored_message

if TYPE_CHECKING:
    from ..store.base import Store
    from .backplane import Backplane
    from .clock import Clock
    from .message import Message
    from .scheduler import Scheduler
    from .session import Session
    from .stats import BrokerStats

__all__ = ["Wills"]

logger = logging.getLogger("mqttd.broker")


class Wills:
    """Publishes, delays and cancels the wills of a broker's sessions."""

    __slots__ = ("_clock", "_publish", "_scheduler", "_stats", "_store", "backplane")

    def __init__(
        self,
        scheduler: Scheduler,
        store: Store,
        clock: Clock,
        stats: BrokerStats,
        publish: Callable[[Message], object],
    ) -> None:
        """`publish` routes a will (`Broker.publish` with no origin session)."""
        self._scheduler = scheduler
        self._store = store
        self._clock = clock
        self._stats = stats
        self._publish = publish
        #: The cluster, told when a pending will is settled (None on a single node).
        self.backplane: Backplane | None = None

    def connection_ended(self, session: Session, will: Message, delay: int) -> None:
        """A connection with a will ended abnormally: publish it now, or schedule it.

        `delay` is its Will Delay Interval (0 for 3.x). A delay that outlasts the
        session's expiry is cut to it: the will goes out when the session ends.
        """
        if delay and session.persistent:
            self.schedule(session, will, min(delay, session.expiry_interval))
        else:
            self.publish(will)

    def schedule(self, session: Session, will: Message, delay: float) -> None:
        """Keep `will` in `session` for `delay` seconds (persisted with the session)."""
        session.pending_will = will
        session.will_timer = self._scheduler.call_later(
            delay, lambda: self.publish_pending(session)
        )
        if session.persistent:
            self._store.save_will(
                session.client_id,
                StoredWill(stored_message(will, self._clock), self._clock.wall() + delay),
            )

    def publish_pending(self, session: Session) -> None:
        """The delay passed or the session ends: publish its pending will now."""
        will = session.pending_will
        self.cancel_pending(session)
        if will is not None:
            self.publish(will)

    def cancel_pending(self, session: Session) -> None:
        """A new connection for the client id came within the delay: no will."""
        if session.will_timer is not None:
            session.will_timer.cancel()
        session.will_timer = None
        session.pending_will = None
        if session.persistent:
            self._store.delete_will(session.client_id)
        if self.backplane is not None:
            self.backplane.will_settled(session.client_id)

    def publish(self, will: Message) -> None:
        """Route `will` now."""
        props = will.properties
        if props is not None and props.message_expiry_interval is not None:
            # The will's expiry counts from its publication (3.1.3.2.4).
            will.expiry_at = self._clock.now() + props.message_expiry_interval
        self._stats.wills_published += 1
        if logger.isEnabledFor(logging.INFO):
            logger.info("publishing the will of %r on %r", will.origin, will.topic)
        self._publish(will)
