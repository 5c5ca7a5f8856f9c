"""The $SYS tree: broker figures as retained messages under Mosquitto's topic names.

Theory of operation. Every `interval` seconds a timer of the broker's one `Scheduler`
(no task of its own) samples `broker.stats` and the broker's state, formats each
figure as Mosquitto does and publishes, through `Broker.publish` like any other
message, those whose text changed since the last update: QoS 0, retained, so a new
subscriber to "$SYS/#" gets the whole picture at once and later only what moves.
"#" and "+" at the first level never match "$SYS/..." [MQTT-4.7.2-1].

Topics (all under ``$SYS/broker/``)::

    version                       "mqttd version 0.1.0"
    uptime                        "N seconds"
    clients/connected             connections past CONNACK
    clients/disconnected          sessions kept for clients that are offline
    clients/total                 sessions, connected or not (Mosquitto's meaning)
    clients/maximum               most clients connected at once, as seen by the updates
    clients/expired               sessions ended by their expiry interval
    messages/received, sent       MQTT packets of every type (when the core counts them)
    publish/messages/received     PUBLISH packets from clients
    publish/messages/sent         PUBLISH packets to clients (resends included), not
                                  counting the $SYS figures themselves
    publish/messages/dropped      messages discarded, every reason but no_subscribers
    publish/messages/dropped/<reason>  by reason (dead_letter.DropReason: queue_full,
                                  expired, too_large, not_authorised, ...)
    dead_letter/published         dead letters published ([dead_letter], dead_letter.py)
    dead_letter/suppressed        dead letters over dead_letter.max_rate, not published
    bytes/received, bytes/sent    MQTT bytes on every connection
    retained messages/count       (with the space, as Mosquitto spells it) messages
                                  retained by clients; the $SYS values themselves
                                  are not counted (one user message reads 1, not 55)
    subscriptions/count
    store/messages/count          messages held: retained, queued and inflight (a
                                  message queued for two sessions counts twice)
    messages/stored               the same (Mosquitto's older name)
    heap/current, heap/maximum    resident set size of the process now and at peak
                                  (maximum is never below current: the kernel's peak
                                  figure lags, so the larger of the two is shown)
    load/<series>/1min|5min|15min per-minute rates, exponentially decayed
    cluster/...                   in cluster mode, this node's cluster figures (node,
                                  peers, routed/in, routed/out, ...; docs/cluster.md),
                                  from the `sources` the App adds

The load series are messages/received|sent (when counted), publish/received|sent|
dropped, bytes/received|sent and connections (CONNACKs accepted). Each is Mosquitto's
figure: with ``rate`` the per-minute rate over the last update's ``elapsed`` seconds
and ``window`` 60, 300 or 900 seconds,
``load = rate + exp(-elapsed / window) * (load - rate)``, printed with two decimals.

Retained $SYS values can outlive the process (the store keeps retained messages), so
`start` clears any ``$SYS/broker/...`` topic this tree does not publish any more, and
`clear_sys_topics` lets a broker with $SYS turned off clear all of them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

from .. import __version__
from ..broker.broker import Broker
from ..broker.dead_letter import dropped_by_reason, dropped_total
from ..broker.message import Message
from ..broker.scheduler import Timer
from ..broker.stats import BrokerStats
from .figures import packet_counts, peak_resident_memory_bytes, resident_memory_bytes

__all__ = ["LOAD_WINDOWS", "SYS_PREFIX", "LoadAverage", "SysTree", "clear_sys_topics"]

logger = logging.getLogger("mqttd.sys")

SYS_PREFIX = "$SYS/broker/"

#: (seconds, topic suffix) of the three load averages, as Mosquitto names them.
LOAD_WINDOWS: tuple[tuple[float, str], ...] = ((60.0, "1min"), (300.0, "5min"), (900.0, "15min"))


class LoadAverage:
    """One load series: a counter's per-minute rate, exponentially decayed (Mosquitto's)."""

    __slots__ = ("_previous", "values")

    def __init__(self, total: int) -> None:
        self._previous = total
        #: The averages over LOAD_WINDOWS, in order; 0 until the first `update`.
        self.values = [0.0] * len(LOAD_WINDOWS)

    def update(self, total: int, elapsed: float) -> None:
        """Fold in the counter's new `total`, `elapsed` seconds after the previous one."""
        if elapsed <= 0:
            return
        rate = (total - self._previous) * 60.0 / elapsed
        self._previous = total
        for i, (window, _) in enumerate(LOAD_WINDOWS):
            decay = math.exp(-elapsed / window)
            self.values[i] = rate + decay * (self.values[i] - rate)


# Counter series with a load average: topic part -> how to read the counter.
_LOAD_SERIES: tuple[tuple[str, Callable[[BrokerStats], int]], ...] = (
    ("publish/received", lambda s: s.publish_received),
    ("publish/sent", lambda s: s.publish_sent),
    ("publish/dropped", dropped_total),
    ("bytes/received", lambda s: s.bytes_received),
    ("bytes/sent", lambda s: s.bytes_sent),
    ("connections", lambda s: s.clients_total),
)


def clear_sys_topics(broker: Broker, keep: frozenset[str] = frozenset()) -> int:
    """Clear every retained ``$SYS/broker/...`` message except `keep`; return how many.

    An empty retained message clears the topic [MQTT-3.3.1-10]; it is routed to
    current subscribers like any other message.
    """
    stale = [topic for topic, _ in broker.retained.match(SYS_PREFIX + "#") if topic not in keep]
    for topic in stale:
        broker.publish(Message(topic, b"", 0, True), None)
    return len(stale)


class SysTree:
    """Publishes the $SYS tree of one broker every `interval` seconds (module docstring).

    `start()` publishes every figure at once and arms the timer; `stop()` disarms it.
    `set_interval` changes the period of a running tree (0 stops it). `current` is what
    was last published, topic -> text.
    """

    def __init__(self, broker: Broker, interval: float, version: str = __version__) -> None:
        self.broker = broker
        self.interval = interval
        self.version = f"mqttd version {version}"
        self._started_at = broker.clock.now()
        self._published: dict[str, str] = {}
        self._timer: Timer | None = None
        self._last_update: float | None = None
        self._loads: dict[str, LoadAverage] = {}
        self._clients_maximum = 0
        #: More figures, topic (under $SYS/broker/) -> text, sampled at each update.
        self.sources: list[Callable[[], Mapping[str, str]]] = []

    @property
    def current(self) -> dict[str, str]:
        """Every $SYS topic published so far with its latest text."""
        return dict(self._published)

    @property
    def running(self) -> bool:
        """True while the timer is armed."""
        return self._timer is not None

    def start(self) -> None:
        """Publish every figure now, clear stale $SYS topics, then update every interval."""
        self.update()
        cleared = clear_sys_topics(self.broker, frozenset(self._published))
        if cleared:
            logger.debug("cleared %d stale $SYS topics", cleared)
        self._arm()

    def stop(self) -> None:
        """Stop updating (the retained values stay)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def set_interval(self, interval: float) -> None:
        """Update every `interval` seconds from now on; 0 stops the updates."""
        self.stop()
        self.interval = interval
        if interval > 0:
            self._arm()

    def _arm(self) -> None:
        if self.interval > 0:
            self._timer = self.broker.scheduler.call_later(self.interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.update()
        finally:
            self._arm()

    def update(self) -> int:
        """Sample the figures and publish those that changed; return how many went out."""
        values = self._sample()
        retain = self.broker.settings.retain_available
        published = 0
        for topic, text in values.items():
            if self._published.get(topic) == text:
                continue
            self._published[topic] = text
            self.broker.publish(Message(topic, text.encode(), 0, retain), None)
            published += 1
        return published

    def _sample(self) -> dict[str, str]:
        broker = self.broker
        stats = broker.refresh_gauges()
        now = broker.clock.now()
        connected = stats.clients_connected
        self._clients_maximum = max(self._clients_maximum, connected)
        held = stats.retained_messages + stats.messages_queued + stats.messages_inflight
        figures: dict[str, str] = {
            "version": self.version,
            "uptime": f"{int(now - self._started_at)} seconds",
            "clients/connected": str(connected),
            "clients/disconnected": str(max(0, stats.sessions - connected)),
            "clients/total": str(stats.sessions),
            "clients/maximum": str(self._clients_maximum),
            "clients/expired": str(stats.sessions_expired),
            "publish/messages/received": str(stats.publish_received),
            "publish/messages/sent": str(stats.publish_sent),
            "publish/messages/dropped": str(dropped_total(stats)),
            "bytes/received": str(stats.bytes_received),
            "bytes/sent": str(stats.bytes_sent),
            "retained messages/count": str(stats.retained_messages),
            "subscriptions/count": str(stats.subscriptions),
            "store/messages/count": str(held),
            "messages/stored": str(held),
        }
        for reason, count in dropped_by_reason(stats).items():
            figures[f"publish/messages/dropped/{reason}"] = str(count)
        figures["dead_letter/published"] = str(stats.dead_letters_published)
        figures["dead_letter/suppressed"] = str(stats.dead_letters_suppressed)
        heap = resident_memory_bytes()
        peak = peak_resident_memory_bytes()
        if heap is not None:
            figures["heap/current"] = str(heap)
            # getrusage's peak is sampled by the kernel and can trail the current RSS.
            peak = max(peak, heap)
        figures["heap/maximum"] = str(peak)
        series = list(_LOAD_SERIES)
        packets = packet_counts(stats)
        if packets is not None:
            received, sent = packets
            figures["messages/received"] = str(received)
            figures["messages/sent"] = str(sent)
            series.append(("messages/received", lambda _: received))
            series.append(("messages/sent", lambda _: sent))
        elapsed = 0.0 if self._last_update is None else now - self._last_update
        self._last_update = now
        for name, read in series:
            total = read(stats)
            load = self._loads.get(name)
            if load is None:
                load = self._loads[name] = LoadAverage(total)
            else:
                load.update(total, elapsed)
            for (_, suffix), value in zip(LOAD_WINDOWS, load.values, strict=True):
                figures[f"load/{name}/{suffix}"] = f"{value:.2f}"
        for source in self.sources:
            figures.update(source())
        return {SYS_PREFIX + key: text for key, text in figures.items()}
