"""Retained messages of a new subscription, sent as the client takes them.

Theory of operation. A subscription to "#" over a million retained messages would
otherwise encode them all and hand every byte to the socket at once (810 MiB at the peak
for 1,000,000 messages, docs/benchmarks.md). Instead each new subscription gets a
`RetainedFeed` (made by `RetainedMessages.deliver`, retained.py), and its session keeps
its feeds in `Session.feeds`, oldest first, while it has any. `run_feeds` takes steps
of about `FEED_BYTES` while the session is writable and has nothing queued; the session
calls it again when its queue drains (`Session.pump`), when its socket drains below its
low-water mark (`Session.set_writable`) or when it resumes, and a feed that the socket
took whole arms a wake-up for the next scheduler tick. Nothing is queued for a feed's
sake, so the memory the feeds use stays at one step. An UNSUBSCRIBE ends its filter's
feed (`drop_feed`, [MQTT-3.10.4-2]); a session that ends or starts clean drops them all
(`drop_feeds`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..auth.hooks import Authorise
    from .clock import Clock
    from .message import Message
    from .scheduler import Scheduler, Timer
    from .session import Session
    from .subscription import SubOptions

__all__ = ["FEED_BYTES", "RetainedFeed", "add_feed", "drop_feed", "drop_feeds", "run_feeds"]

#: About how many bytes of retained messages one step of a `RetainedFeed` hands to its
#: session: the most a subscription's retained messages add to the memory in use at a
#: time, beyond the socket's own write buffer (net/tcp.py's HIGH_WATER).
FEED_BYTES = 1024 * 1024


class RetainedFeed:
    """The retained messages of one new subscription, handed to its session in steps.

    A step delivers about `FEED_BYTES` and also ends at the first message that has to
    be queued (QoS 1/2 beyond the inflight window), so the queue never grows for it.

    The matches are read from the tree as the feed goes (`RetainedTree.iter_match`):
    a message cleared before the feed reaches it is not sent, one replaced meanwhile
    is sent as it is now (its latest retained value, retain=1, as a subscription made
    at that moment would get it). Each delivery carries retain=1 [MQTT-3.3.1-8].
    """

    __slots__ = (
        "_authorise",
        "_clock",
        "_expired",
        "_matches",
        "_options",
        "_scheduler",
        "timer",
        "topic_filter",
    )

    def __init__(
        self,
        clock: Clock,
        scheduler: Scheduler,
        expired: Callable[[str, Message, str], None],
        topic_filter: str,
        matches: Iterator[tuple[str, Message]],
        options: SubOptions,
        authorise: Authorise | None,
    ) -> None:
        self._clock = clock
        self._scheduler = scheduler
        #: `expired(topic, message, client_id)`: a match whose expiry passed is forgotten.
        self._expired = expired
        #: The subscription's filter: an UNSUBSCRIBE of it ends the feed [MQTT-3.10.4-2].
        self.topic_filter = topic_filter
        self._matches = matches
        self._options = options
        self._authorise = authorise
        #: The session's wake-up for the next step, while one is armed.
        self.timer: Timer | None = None

    def step(self, session: Session) -> bool:
        """Deliver up to about `FEED_BYTES` of messages; True if more are left."""
        now = self._clock.now()
        authorise = self._authorise
        options = self._options
        granted = options.qos
        sub_ids = options.sub_ids
        client_id = session.client_id
        budget = FEED_BYTES
        for topic, message in self._matches:
            if message.expiry_at is not None and message.expiry_at <= now:
                self._expired(topic, message, client_id)
                continue
            if authorise is not None and not authorise(client_id, session.username, "read", topic):
                continue  # a wildcard matched a retained topic the client may not read
            # `message` is made afresh from the tree's record (`message_of`): its
            # store_id and encoding are this delivery's alone.
            session.deliver(message, session.outgoing_qos(granted, message), True, sub_ids)
            budget -= len(message.payload) + len(topic) + 16
            # Also stop at the first message that had to wait (the inflight window is
            # full, or the socket): the feed never fills the session's queue.
            if budget <= 0 or session.queue_length or not session.writable:
                return True
        return False

    def wake_later(self, session: Session) -> None:
        """Arm the next step for the scheduler's next tick (if none is armed)."""
        if self.timer is None:
            self.timer = self._scheduler.call_later(0, lambda: self._wake(session))

    def _wake(self, session: Session) -> None:
        self.timer = None
        run_feeds(session)

    def cancel(self) -> None:
        """The session dropped the feed: no more steps."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


# -- a session's feeds -----------------------------------------------------------------


def add_feed(session: Session, feed: RetainedFeed) -> None:
    """Send a new subscription's retained messages: the first step now, the rest as the
    client takes them, after the session's earlier feeds."""
    feeds = session.feeds
    if feeds is None:
        feeds = session.feeds = deque()
    feeds.append(feed)
    if len(feeds) == 1:
        run_feeds(session)


def run_feeds(session: Session) -> None:
    """Take the next step of the session's feeds while writable with nothing queued.

    A step that leaves more to send arms a wake-up for the next scheduler tick; a
    PUBACK that empties the queue (`Session.pump`) or the socket draining
    (`Session.set_writable`) comes back sooner. Nothing is queued for the feeds' sake,
    so the memory they use stays at one step.
    """
    feeds = session.feeds
    while feeds:
        if not session.writable or session.queue_length:
            return  # pump() or set_writable() calls again
        feed = feeds[0]
        if feed.step(session):
            if session.writable and not session.queue_length:
                feed.wake_later(session)
            return
        feed.cancel()
        feeds.popleft()
    session.feeds = None


def drop_feed(session: Session, topic_filter: str) -> None:
    """The subscription on `topic_filter` is gone: send no more of its retained
    messages [MQTT-3.10.4-2]."""
    feeds = session.feeds
    if feeds is None:
        return
    for feed in [f for f in feeds if f.topic_filter == topic_filter]:
        feed.cancel()
        feeds.remove(feed)
    if not feeds:
        session.feeds = None
    else:
        run_feeds(session)  # the next feed may start now


def drop_feeds(session: Session) -> None:
    """The session forgets every message: its feeds end too."""
    feeds = session.feeds
    if feeds is not None:
        session.feeds = None
        for feed in feeds:
            feed.cancel()
