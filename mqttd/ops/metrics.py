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
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from .. import __version__
from ..broker.broker import Broker
from ..broker.dead_letter import dropped_by_reason
from .figures import packet_counts, resident_memory_bytes

__all__ = [
    "CONTENT_TYPE",
    "Collector",
    "MetricFamily",
    "MetricsServer",
    "SupportsStats",
    "collect_broker",
    "collect_cluster",
    "collect_store",
    "render",
]

logger = logging.getLogger("mqttd.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

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


Collector = Callable[[], Iterable[MetricFamily]]
"""Something that yields metric families at scrape time."""


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(value: float) -> str:
    if isinstance(value, int):
        return str(int(value))  # int(): a bool would print as True
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def render(families: Iterable[MetricFamily]) -> str:
    """The text exposition format (0.0.4) of `families`; each name must appear once."""
    lines: list[str] = []
    seen: set[str] = set()
    for family in families:
        if family.name in seen:
            raise ValueError(f"metric {family.name!r} appears twice")
        seen.add(family.name)
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for labels, value in family.samples:
            if labels:
                inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                lines.append(f"{family.name}{{{inner}}} {_format_value(value)}")
            else:
                lines.append(f"{family.name} {_format_value(value)}")
    return "\n".join(lines) + "\n" if lines else ""


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
            "PUBLISH packets to clients, resends included",
            stats.publish_sent,
        ),
        _counter(
            "mqttd_messages_routed_total",
            "messages routed (from clients, wills and $SYS)",
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
        families: list[MetricFamily] = []
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
