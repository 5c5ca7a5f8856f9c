"""Dead letters: every message the broker drops is counted, and may be published again.

Theory of operation. Each place where the core discards a message calls
`DeadLetters.drop(reason, message, receiver)` with one `DropReason`. The call is on the
cold path only: nothing here runs for a message that is delivered. `drop` always counts
the message in `BrokerStats` (one field per reason, see `STATS_FIELDS`), so $SYS and the
metrics endpoint report every loss even when dead-lettering is off.

When `DeadLetterSettings.enabled` and the reason is one of `reasons`, the message is
also published again, payload unchanged, to ``{prefix}/{reason}/{original topic}``
(``$dead/queue_full/plant/temp``) with the original QoS, retain 0, and MQTT 5 user
properties saying what happened (`USER_PROPERTIES`); 3.x subscribers read the same from
the topic. Subscribers collect them with ordinary subscriptions, persistent sessions
included. A prefix starting with "$" keeps them away from "#" subscribers
[MQTT-4.7.2-1]: collectors subscribe to "$dead/#".

Three rules keep the path from feeding itself:

- A dead letter is never dead-lettered again: it is a `DeadLetter` (a `Message`
  subclass, so the hot path pays nothing for the mark), and after a restart, when the
  store has turned it back into a plain `Message`, its topic under the prefix still
  says what it is. Its own drops are counted like any other, never re-published.
- A token bucket (`max_rate` per second, `burst` at once) bounds how many are made;
  the excess is counted in `stats.dead_letters_suppressed`, and each episode of
  suppression is logged once. So a broker that drops a lot cannot amplify the load.
- Drops happen inside delivery loops (`Broker.publish` iterating a match, a session
  pumping its queue), so a dead letter is not published on the spot: it waits in a
  short list that one scheduler timer (due at once) flushes through
  `Broker.publish(message, None)`, outside any routing in progress.

Messages of the broker's own $SYS tree are counted but not dead-lettered: they are
QoS 0 figures made again at the next update.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..auth.limits import TokenBucket
from ..protocol.properties import Properties
from ..store.base import OutboundState
from .message import Message
from .settings import DEFAULT_REASONS, DeadLetterSettings, DropReason

if TYPE_CHECKING:
    from .clock import Clock
    from .scheduler import Scheduler, Timer
    from .session import Outbound
    from .stats import BrokerStats

__all__ = [
    "DEFAULT_REASONS",
    "STATS_FIELDS",
    "USER_PROPERTIES",
    "DeadLetter",
    "DeadLetterSettings",
    "DeadLetters",
    "DropReason",
    "dropped_by_reason",
    "dropped_total",
]

logger = logging.getLogger("mqttd.dead_letter")


#: The `BrokerStats` counter of each reason (the first three predate this module).
STATS_FIELDS: dict[DropReason, str] = {
    DropReason.QUEUE_FULL: "messages_dropped",
    DropReason.EXPIRED: "messages_expired",
    DropReason.TOO_LARGE: "messages_too_large",
    DropReason.NOT_AUTHORISED: "messages_not_authorised",
    DropReason.RETAINED_EXPIRED: "retained_expired",
    DropReason.SESSION_EXPIRED: "session_messages_expired",
    DropReason.DISCONNECTED: "messages_disconnected",
    DropReason.NO_SUBSCRIBERS: "messages_no_subscribers",
}

#: User property names of a dead letter, in the order they are sent (before any user
#: properties of the original message, which follow unchanged).
USER_PROPERTIES = ("reason", "original-topic", "publisher", "receiver", "time")

_SYS_PREFIX = "$SYS/"
_MAX_TOPIC_BYTES = 65_535  # a UTF-8 string of the wire format (1.5.4)


def dropped_by_reason(stats: BrokerStats) -> dict[DropReason, int]:
    """Every reason's counter, in `DropReason` order."""
    return {reason: getattr(stats, name) for reason, name in STATS_FIELDS.items()}


def dropped_total(stats: BrokerStats) -> int:
    """Messages the broker discarded ($SYS publish/messages/dropped).

    no_subscribers is left out: nothing was lost there, the publisher was told.
    """
    return sum(
        count
        for reason, count in dropped_by_reason(stats).items()
        if reason is not DropReason.NO_SUBSCRIBERS
    )


class DeadLetter(Message):
    """A message the broker published about a dropped one; never dead-lettered itself."""

    __slots__ = ("reason",)

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        properties: Properties,
        reason: DropReason,
    ) -> None:
        super().__init__(topic, payload, qos, False, properties, None, None)
        self.reason = reason


class DeadLetters:
    """The broker's drop point: counts each drop and publishes its dead letter.

    `Broker.dead_letters` is the one instance; see the module docstring.
    """

    __slots__ = (
        "_bucket",
        "_clock",
        "_pending",
        "_prefix_slash",
        "_publish",
        "_scheduler",
        "_stats",
        "_suppressing",
        "_timer",
        "owned_first_chars",
        "settings",
    )

    def __init__(
        self,
        stats: BrokerStats,
        clock: Clock,
        scheduler: Scheduler,
        publish: Callable[[Message], object],
        settings: DeadLetterSettings | None = None,
    ) -> None:
        """`publish` routes a dead letter (`Broker.publish`); the rest is the core's."""
        self._stats = stats
        self._clock = clock
        self._scheduler = scheduler
        self._publish = publish
        self._pending: list[DeadLetter] = []
        self._timer: Timer | None = None
        self._suppressing = 0  # dead letters suppressed in the current episode
        self.settings = DeadLetterSettings()
        self._prefix_slash = ""
        self._bucket = TokenBucket(1.0, 1, 0.0)
        self.configure(settings or DeadLetterSettings())

    def configure(self, settings: DeadLetterSettings) -> None:
        """Apply new settings (at start, and on reload); the counters carry on."""
        if settings != self.settings and logger.isEnabledFor(logging.INFO):
            if settings.enabled:
                logger.info(
                    "dead letters: %s to %s/<reason>/<topic>, at most %g/s (burst %d)",
                    ", ".join(sorted(settings.reasons)) or "no reason",
                    settings.prefix,
                    settings.max_rate,
                    settings.burst,
                )
            elif self.settings.enabled:
                logger.info("dead letters: off (drops are still counted)")
        self.settings = settings
        self._prefix_slash = settings.prefix + "/"
        #: The first characters a topic of `broker_owned` can start with ("$" for $SYS):
        #: `inbound.on_publish` tests one character before calling `closed_to_clients`,
        #: since almost no client topic starts with one of them (two calls saved per
        #: PUBLISH, measured on fan-in QoS 0).
        self.owned_first_chars = frozenset(("$", settings.prefix[:1]))
        self._bucket = TokenBucket(settings.max_rate, settings.burst, self._clock.now())

    def broker_owned(self, topic: str) -> bool:
        """True for topics only the broker publishes to: ``$SYS`` and the dead-letter
        prefix. Clients never may, whatever the ACL says (a spoofed
        ``$SYS/broker/version`` or a forged dead letter would mislead operators)."""
        prefix_slash = self._prefix_slash
        return (
            topic.startswith(_SYS_PREFIX)
            or topic.startswith(prefix_slash)
            or topic == "$SYS"
            or topic == prefix_slash[:-1]
        )

    def closed_to_clients(self, topic: str) -> bool:
        """A topic no client may publish to whatever the ACL: `broker_owned`, except
        that, as Mosquitto (acl__check_dollar), $SYS/broker/connection/<name>/state
        stays writable: a Mosquitto bridge publishes its state notification there and
        sets it as its will, with or without the bridge bit (5.0 bridges send none)."""
        if not self.broker_owned(topic):
            return False
        return not (
            topic.startswith("$SYS/broker/connection/")
            and topic.endswith("/state")
            and topic.count("/") == 4
        )

    @property
    def pending(self) -> int:
        """Dead letters made and not yet published."""
        return len(self._pending)

    # -- drop points -------------------------------------------------------------------

    def drop(self, reason: DropReason, message: Message, receiver: str | None = None) -> None:
        """`message` was discarded for `reason`; `receiver` is the client it was for."""
        stats = self._stats
        name = STATS_FIELDS[reason]
        setattr(stats, name, getattr(stats, name) + 1)
        settings = self.settings
        if not settings.enabled or reason not in settings.reasons:
            return
        topic = message.topic
        if (
            isinstance(message, DeadLetter)
            or topic.startswith(self._prefix_slash)
            or topic.startswith(_SYS_PREFIX)
        ):
            return
        if not self._bucket.try_take(self._clock.now()):
            stats.dead_letters_suppressed += 1
            if not self._suppressing:
                logger.warning(
                    "dead letters above %g/s (burst %d): counting the rest, not publishing",
                    settings.max_rate,
                    settings.burst,
                )
            self._suppressing += 1
            return
        if self._suppressing:
            logger.info("dead letters flow again; %d were suppressed", self._suppressing)
            self._suppressing = 0
        letter = self._letter(reason, message, receiver)
        if letter is None:
            stats.dead_letters_suppressed += 1
            return
        self._pending.append(letter)
        if self._timer is None:
            self._timer = self._scheduler.call_later(0, self._on_timer)

    def drop_session(self, reason: DropReason, client_id: str, entries: Iterable[Outbound]) -> None:
        """A session ended with these queued or inflight entries: drop each one.

        An entry whose PUBREL was sent was delivered already (QoS 2 step two): not a drop.
        """
        for entry in entries:
            if entry.state != OutboundState.PUBREL_SENT:
                self.drop(reason, entry.message, client_id)

    # -- publishing ----------------------------------------------------------------------

    def flush(self) -> int:
        """Publish every pending dead letter now; return how many went out."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending = self._pending
        if not pending:
            return 0
        self._pending = []
        publish = self._publish
        stats = self._stats
        for letter in pending:
            stats.dead_letters_published += 1
            publish(letter)
        return len(pending)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def _letter(
        self, reason: DropReason, message: Message, receiver: str | None
    ) -> DeadLetter | None:
        """The dead letter of `message`, or None when its topic would be too long."""
        topic = f"{self._prefix_slash}{reason.value}/{message.topic}"
        if len(topic) * 4 > _MAX_TOPIC_BYTES and len(topic.encode()) > _MAX_TOPIC_BYTES:
            logger.warning("dead letter of a message on a %d-character topic: too long", len(topic))
            return None
        user: list[tuple[str, str]] = [("reason", reason.value), ("original-topic", message.topic)]
        if message.origin is not None:
            user.append(("publisher", message.origin))
        if receiver is not None:
            user.append(("receiver", receiver))
        user.append(("time", _iso_utc(self._clock.wall())))
        original = message.properties
        if original is None:
            props = Properties(user_property=tuple(user))
        else:
            # What describes the payload travels with it; the expiry does not (a dead
            # letter of an expired message must not expire in turn).
            props = Properties(
                payload_format_indicator=original.payload_format_indicator,
                content_type=original.content_type,
                response_topic=original.response_topic,
                correlation_data=original.correlation_data,
                user_property=(*user, *original.user_property),
            )
        return DeadLetter(topic, message.payload, message.qos, props, reason)


def _iso_utc(wall: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2024-05-01T12:00:00.250Z."""
    text = datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"
