"""Prometheus metrics and a health check on a small HTTP listener of their own.

``GET /metrics`` answers in the Prometheus text exposition format, version 0.0.4
(``Content-Type: text/plain; version=0.0.4; charset=utf-8``): per metric family one
``# HELP`` and one ``# TYPE`` line, then its samples; counters end in ``_total``; label
values escape backslash, double quote and newline. ``GET /health`` answers 200 ``ok``
while the broker runs and 503 once it stops (container and load-balancer checks).
``HEAD`` works on both; any other path is 404, any other method 405.

The HTTP side is deliberately minimal and correct HTTP/1.1: one request per
connection, answered with Date, Content-Type, Content-Length and ``Connection: close``.
The request head is bounded (8 KiB, 10 seconds), so a slow or hostile client costs
one socket for a short while, nothing more.

What is exported: the same counters and gauges as $SYS (`collect_broker`), connection
counts per listener (label ``listener``), dropped messages by reason (label
``reason``), process memory and CPU time, and the figures of any store that has a
``stats()`` method (`SupportsStats`): each key becomes ``mqttd_store_<key>``, a counter
when the key ends in ``_total``, a gauge otherwise. Load averages are not exported:
Prometheus computes rates from the counters itself (``rate(mqttd_bytes_sent_total[5m])``).
More figures (bridge states) plug in through `MetricsServer.collectors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
import re
import resource
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import CollectorRegistry

from .. import __version__
from ..broker.broker import Broker
from ..broker.dead_letter import dropped_by_reason
from ..store.stats import Histogram, StoreStats
from .figures import open_file_descriptors, packet_counts, resident_memory_bytes
from .loop_lag import LoopLagMonitor

__all__ = [
    "CONTENT_TYPE",
    "Collector",
    "MetricFamily",
    "MetricsServer",
    "SupportsStats",
    "collect_broker",
    "collect_cluster",
    "collect_process",
    "collect_store",
    "collect_store_histograms",
    "render",
]

logger = logging.getLogger("mqttd.metrics")

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # "text/plain; version=0.0.4; charset=utf-8"

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_TYPES = ("counter", "gauge", "untyped")

MAX_REQUEST_HEAD = 8 * 1024  # bytes of request line and headers
REQUEST_TIMEOUT = 10.0  # seconds to send the request head, and to take the response


@runtime_checkable
class SupportsStats(Protocol):
    """A store (or anything) that reports its own figures.

    Keys are metric name suffixes in base units (seconds, bytes), e.g. ``commits_total``,
    ``commit_seconds_total``, ``writes_total``, ``pending_writes``; a key ending in
    ``_total`` is a counter (only grows), any other a gauge. Values are numbers.
    """

    def stats(self) -> Mapping[str, float]:
        """The current figures, key -> value."""
        ...


@dataclass(slots=True)
class MetricFamily:
    """One metric: name, type (counter, gauge, untyped), help text and its samples."""

    name: str
    type: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Wrong names are bugs of ours, not input: fail loudly where they are made.
        if not _METRIC_NAME.match(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        if self.type not in _TYPES:
            raise ValueError(f"invalid metric type {self.type!r}")
        if self.type == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name!r} must end in _total")

    def add(self, value: float, **labels: str) -> MetricFamily:
        """Append one sample with `labels`; returns self, so calls chain."""
        for name in labels:
            if not _LABEL_NAME.match(name) or name.startswith("__"):
                raise ValueError(f"invalid label name {name!r}")
        self.samples.append((labels, value))
        return self


Collector = Callable[[], Iterable[MetricFamily | Metric]]
"""Something that yields metric families (ours or prometheus_client's) at scrape time."""


def _to_prometheus(family: MetricFamily) -> Metric:
    """The prometheus_client metric family of one of ours (same name, type, samples)."""
    names = sorted({name for labels, _ in family.samples for name in labels})
    made: CounterMetricFamily | GaugeMetricFamily | UnknownMetricFamily
    if family.type == "counter":
        made = CounterMetricFamily(family.name, family.help, labels=names)
    elif family.type == "gauge":
        made = GaugeMetricFamily(family.name, family.help, labels=names)
    else:
        made = UnknownMetricFamily(family.name, family.help, labels=names)
    for labels, value in family.samples:
        made.add_metric([labels.get(name, "") for name in names], float(value))
    return made


class _Families:
    """A prometheus_client collector over families already collected (one scrape)."""

    def __init__(self, families: Iterable[MetricFamily | Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            yield _to_prometheus(family) if isinstance(family, MetricFamily) else family


def render(families: Iterable[MetricFamily | Metric]) -> str:
    """The text exposition format (0.0.4) of `families`, written by prometheus_client.

    Each name must appear once. Families are ours (`MetricFamily`) or prometheus_client's
    own (a store's latency histogram is a `HistogramMetricFamily`).
    """
    listed = list(families)
    seen: set[str] = set()
    for family in listed:
        name = family.name
        if isinstance(family, Metric) and family.type == "counter":
            name += "_total"  # prometheus_client keeps a counter's name without it
        if name in seen:
            raise ValueError(f"metric {name!r} appears twice")
        seen.add(name)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(listed))
    return generate_latest(registry).decode("utf-8")


def _counter(name: str, help: str, value: float) -> MetricFamily:
    return MetricFamily(name, "counter", help).add(value)


def _gauge(name: str, help: str, value: float) -> MetricFamily:
    return MetricFamily(name, "gauge", help).add(value)


def collect_broker(
    broker: Broker, listeners: Iterable[str] = (), started_at: float | None = None
) -> list[MetricFamily]:
    """The broker's figures: counters, gauges, per-listener connections, drops by reason.

    `listeners` names listeners to report even while they have no connection;
    `started_at` (on the broker clock) gives ``mqttd_uptime_seconds``.
    """
    stats = broker.refresh_gauges()
    connected: dict[str, int] = dict.fromkeys(listeners, 0)
    sockets: dict[str, int] = dict.fromkeys(listeners, 0)
    for connection in broker.connections:
        name = connection.listener
        sockets[name] = sockets.get(name, 0) + 1
        connected[name] = connected.get(name, 0) + int(connection.connected)
    clients = MetricFamily(
        "mqttd_clients_connected", "gauge", "clients connected (past CONNACK), by listener"
    )
    for name, count in connected.items():
        clients.add(count, listener=name)
    open_ = MetricFamily(
        "mqttd_connections_open",
        "gauge",
        "connections open, CONNECT received or not, by listener",
    )
    for name, count in sockets.items():
        open_.add(count, listener=name)
    dropped = MetricFamily(
        "mqttd_messages_dropped_total",
        "counter",
        "messages discarded instead of sent, by reason (no_subscribers: nobody subscribed)",
    )
    for reason, count in dropped_by_reason(stats).items():
        dropped.add(count, reason=reason.value)
    families = [
        MetricFamily("mqttd_build_info", "gauge", "mqttd version").add(1, version=__version__),
        clients,
        open_,
        _gauge(
            "mqttd_clients_disconnected",
            "sessions kept for clients that are offline",
            max(0, stats.sessions - stats.clients_connected),
        ),
        _gauge("mqttd_sessions", "sessions, connected or not", stats.sessions),
        _gauge("mqttd_subscriptions", "subscriptions of every session", stats.subscriptions),
        _gauge("mqttd_retained_messages", "retained messages", stats.retained_messages),
        _gauge(
            "mqttd_messages_inflight",
            "outbound QoS 1/2 messages awaiting acknowledgement",
            stats.messages_inflight,
        ),
        _gauge(
            "mqttd_messages_queued",
            "outbound messages waiting in session queues",
            stats.messages_queued,
        ),
        _counter(
            "mqttd_connects_total", "CONNECTs accepted (CONNACK success)", stats.clients_total
        ),
        _counter(
            "mqttd_connects_refused_total",
            "CONNECTs refused (CONNACK with an error code)",
            stats.connections_refused,
        ),
        _counter(
            "mqttd_publish_received_total", "PUBLISH packets from clients", stats.publish_received
        ),
        _counter(
            "mqttd_publish_sent_total",
            "PUBLISH packets to clients, resends included, $SYS figures not counted",
            stats.publish_sent,
        ),
        _counter(
            "mqttd_messages_routed_total",
            "messages routed (from clients and wills; the broker's own $SYS not counted)",
            stats.messages_routed,
        ),
        dropped,
        _counter(
            "mqttd_dead_letters_published_total",
            "dead letters published for dropped messages",
            stats.dead_letters_published,
        ),
        _counter(
            "mqttd_dead_letters_suppressed_total",
            "dead letters not published: over dead_letter.max_rate",
            stats.dead_letters_suppressed,
        ),
        _counter("mqttd_bytes_received_total", "MQTT bytes received", stats.bytes_received),
        _counter("mqttd_bytes_sent_total", "MQTT bytes sent", stats.bytes_sent),
        _counter(
            "mqttd_sessions_expired_total", "sessions ended by expiry", stats.sessions_expired
        ),
        _counter(
            "mqttd_keepalive_timeouts_total",
            "connections closed for keep alive",
            stats.keepalive_timeouts,
        ),
        _counter(
            "mqttd_protocol_errors_total",
            "connections closed for a protocol error",
            stats.protocol_errors,
        ),
        _counter("mqttd_wills_published_total", "will messages published", stats.wills_published),
        _counter(
            "mqttd_takeovers_total", "connections taken over by the same client id", stats.takeovers
        ),
    ]
    packets = packet_counts(stats)
    if packets is not None:
        families.append(
            _counter("mqttd_packets_received_total", "MQTT packets received", packets[0])
        )
        families.append(_counter("mqttd_packets_sent_total", "MQTT packets sent", packets[1]))
    if started_at is not None:
        families.append(
            _gauge(
                "mqttd_uptime_seconds",
                "seconds since the broker started",
                broker.clock.now() - started_at,
            )
        )
    rss = resident_memory_bytes()
    if rss is not None:
        families.append(_gauge("process_resident_memory_bytes", "resident memory size", rss))
    times = os.times()
    families.append(
        _counter("process_cpu_seconds_total", "user and system CPU time", times.user + times.system)
    )
    return families


def collect_process(loop_lag: LoopLagMonitor | None = None) -> list[MetricFamily]:
    """Open file descriptors, the fd limit, and the event loop's lag (when monitored).

    Resident memory and CPU time come with `collect_broker` (``process_*``, the names
    Prometheus's own process collector uses).
    """
    families: list[MetricFamily] = []
    fds = open_file_descriptors()
    if fds is not None:
        families.append(_gauge("process_open_fds", "open file descriptors", fds))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        families.append(_gauge("process_max_fds", "file descriptor limit (soft)", soft))
    if loop_lag is not None:
        families.append(
            _gauge(
                "mqttd_event_loop_lag_seconds",
                "how late the event loop ran a due callback, last sample (every 0.5 s)",
                loop_lag.lag,
            )
        )
        families.append(
            _gauge(
                "mqttd_event_loop_lag_max_seconds",
                "largest event-loop lag since the previous scrape",
                loop_lag.take_max(),
            )
        )
    return families


def _histogram(name: str, help: str, histogram: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name,
        help,
        buckets=[(bound, float(count)) for bound, count in histogram.cumulative()],
        sum_value=histogram.total,
    )


def collect_store_histograms(store: object) -> list[Metric]:
    """Commit latency and batch sizes of a store that keeps `StoreStats` (SQLite)."""
    statistics = getattr(store, "statistics", None)
    if not isinstance(statistics, StoreStats):
        return []
    return [
        _histogram(
            "mqttd_store_commit_seconds",
            "time of one store transaction (group commit), seconds",
            statistics.commit_seconds,
        ),
        _histogram(
            "mqttd_store_batch_changes",
            "changes (rows written or deleted) in one store transaction",
            statistics.batch_changes,
        ),
    ]


def collect_store(store: object) -> list[MetricFamily]:
    """``mqttd_store_<key>`` for each figure of a store with `stats()`; else nothing.

    Keys that are not valid metric names and values that are not numbers are skipped
    (logged at DEBUG), so a store cannot break the endpoint.
    """
    if not isinstance(store, SupportsStats):
        return []
    families: list[MetricFamily] = []
    source = type(store).__name__
    for key, value in sorted(store.stats().items()):
        name = f"mqttd_store_{key}"
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not _METRIC_NAME.match(name) or not number:
            logger.debug("store figure %r = %r skipped", key, value)
            continue
        kind = "counter" if key.endswith("_total") else "gauge"
        families.append(MetricFamily(name, kind, f"{source}.stats() {key}").add(value))
    return families


def collect_cluster(figures: Mapping[str, float], node: str) -> list[MetricFamily]:
    """``mqttd_cluster_<key>{node=...}`` for each figure of a cluster node (docs/cluster.md).

    A key ending in ``_total`` is a counter, any other a gauge.
    """
    families: list[MetricFamily] = []
    for key, value in sorted(figures.items()):
        kind = "counter" if key.endswith("_total") else "gauge"
        family = MetricFamily(f"mqttd_cluster_{key}", kind, f"cluster: {key.replace('_', ' ')}")
        families.append(family.add(value, node=node))
    return families


# -- the HTTP listener ----------------------------------------------------------------------

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _response(
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    head: bool = False,
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    headers = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        "Server: mqttd",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in extra),
    ]
    return ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)


class MetricsServer:
    """The /metrics and /health HTTP listener.

    `collectors` are called at each scrape, in order; their families are rendered
    together (names must not repeat). The list is kept as given, so a collector
    appended to it later is scraped too. `healthy` says whether /health answers 200.
    """

    def __init__(self, collectors: list[Collector], healthy: Callable[[], bool]) -> None:
        self.collectors = collectors
        self.healthy = healthy
        self.address: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        """``http://host:port`` of the bound listener."""
        if self.address is None:
            raise RuntimeError("the metrics listener is not started")
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Bind `host:port` (0 = a free port); return the bound (host, port)."""
        self._server = await asyncio.start_server(
            self._serve, host or None, port, limit=MAX_REQUEST_HEAD
        )
        names = sorted((s.getsockname() for s in self._server.sockets), key=len)
        self.address = (str(names[0][0]), int(names[0][1]))
        return self.address

    async def stop(self) -> None:
        """Stop listening and close any connection still open."""
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._clients):
            writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self._server = None

    def scrape(self) -> str:
        """The body of GET /metrics."""
        families: list[MetricFamily | Metric] = []
        for collect in self.collectors:
            families.extend(collect())
        return render(families)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return
            except asyncio.LimitOverrunError:
                writer.write(_response(400, b"request head too large\n"))
            else:
                writer.write(self._answer(head))
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        finally:
            self._clients.discard(writer)
            writer.close()

    def _answer(self, head: bytes) -> bytes:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _response(400, b"bad request\n")
        method, target, _ = parts
        path = target.split("?", 1)[0]
        is_head = method == "HEAD"
        if path not in ("/metrics", "/health"):
            return _response(404, b"not found\n", head=is_head)
        if method not in ("GET", "HEAD"):
            return _response(405, b"method not allowed\n", extra=(("Allow", "GET, HEAD"),))
        if path == "/health":
            if self.healthy():
                return _response(200, b"ok\n", head=is_head)
            return _response(503, b"unavailable\n", head=is_head)
        try:
            body = self.scrape().encode()
        except Exception:
            logger.exception("collecting metrics failed")
            return _response(500, b"collecting metrics failed\n", head=is_head)
        return _response(200, body, CONTENT_TYPE, head=is_head)
