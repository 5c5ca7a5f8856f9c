"""The metrics endpoint: exposition format 0.0.4 parsed strictly, values after traffic, HTTP.

`parse_exposition` below is an independent, strict reader of the text format: it
refuses anything the format does not allow (a sample before its TYPE, a family split
in two, a bad escape, a counter without _total, a repeated series), so a scrape that
parses is a scrape Prometheus accepts.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import pytest

from mqttd import __version__
from mqttd.app import App, ephemeral_config
from mqttd.config import Config, ListenerConfig
from mqttd.ops.metrics import (
    CONTENT_TYPE,
    MetricFamily,
    MetricsServer,
    collect_store,
    render,
)
from mqttd.store.memory import MemoryStore

from .netclient import NetClient, http_get, http_request

# -- a strict reader of the text format ----------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_HELP = re.compile(rf"# HELP ({_NAME}) (.*)\Z")
_TYPE = re.compile(rf"# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)\Z")
_SAMPLE = re.compile(rf"({_NAME})(?:\{{(.*)\}})? (\S+)\Z")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    type: str = "untyped"
    help: str | None = None
    samples: dict[Labels, float] = field(default_factory=dict)


def _unescape_help(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            nxt = text[i + 1]
            assert nxt in ("\\", "n"), f"bad escape in HELP: {text!r}"
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _labels(text: str) -> Labels:
    labels: dict[str, str] = {}
    i = 0
    while i < len(text):
        match = _LABEL.match(text, i)
        assert match, f"bad label at {text[i:]!r}"
        name, i = match.group(1), match.end()
        value: list[str] = []
        while True:
            assert i < len(text), f"unterminated label value in {text!r}"
            c = text[i]
            if c == "\\":
                assert text[i + 1] in _ESCAPES, f"bad escape in {text!r}"
                value.append(_ESCAPES[text[i + 1]])
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                assert c != "\n"
                value.append(c)
                i += 1
        assert name not in labels, f"label {name} twice"
        labels[name] = "".join(value)
        if i < len(text):
            assert text[i] == "," and i + 1 < len(text), f"bad separator in {text!r}"
            i += 1
    return tuple(sorted(labels.items()))


def _value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    assert _NUMBER.match(text), f"bad value {text!r}"
    return float(text)


def parse_exposition(text: str) -> dict[str, Family]:
    """Parse the 0.0.4 text format strictly (see the module docstring)."""
    assert text.endswith("\n"), "the last line must end with a newline"
    families: dict[str, Family] = {}
    current: str | None = None
    done: set[str] = set()
    for line in text[:-1].split("\n"):
        if line.startswith("#"):
            if m := _HELP.match(line):
                name = m.group(1)
                family = families.setdefault(name, Family())
                assert family.help is None, f"second HELP for {name}"
                assert not family.samples, f"HELP for {name} after its samples"
                family.help = _unescape_help(m.group(2))
            elif m := _TYPE.match(line):
                name = m.group(1)
                family = families.setdefault(name, Family())
                assert family.type == "untyped" and not family.samples, f"late TYPE for {name}"
                family.type = m.group(2)
            else:
                raise AssertionError(f"unexpected comment line {line!r}")
            assert name not in done, f"{name} appears again after another family"
            if current is not None and current != name:
                done.add(current)
            current = name
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name = m.group(1)
        assert name in families, f"sample of {name} before its TYPE"
        assert name == current, f"samples of {name} are not together"
        family = families[name]
        labels = _labels(m.group(2) or "")
        assert labels not in family.samples, f"series {name}{labels} twice"
        value = _value(m.group(3))
        if family.type == "counter":
            assert name.endswith("_total"), f"counter {name} without _total"
            assert value >= 0 or math.isnan(value), f"negative counter {name}"
        family.samples[labels] = value
    for name, family in families.items():
        assert family.help is not None and family.type != "untyped", name
    return families


def value(families: Mapping[str, Family], name: str, **labels: str) -> float:
    return families[name].samples[tuple(sorted(labels.items()))]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("# HELP a h\n# TYPE a gauge\na 1", "newline"),
        ("a 1\n", "before its TYPE"),
        ("# HELP a h\n# TYPE a counter\na 1\n", "without _total"),
        ("# HELP a h\n# TYPE a gauge\na 1\na 2\n", "twice"),
        ('# HELP a h\n# TYPE a gauge\na{x="\\q"} 1\n', "bad escape"),
        ('# HELP a h\n# TYPE a gauge\na{x="1",} 1\n', "bad separator"),
        ("# HELP a h\n# TYPE a gauge\na one\n", "bad value"),
        (
            "# HELP a h\n# TYPE a gauge\n# HELP b h\n# TYPE b gauge\nb 1\na 1\n",
            "not together",
        ),
    ],
)
def test_the_reader_is_strict(text: str, complaint: str) -> None:
    with pytest.raises(AssertionError, match=complaint):
        parse_exposition(text)


# -- rendering -------------------------------------------------------------------------------


def test_render_escapes_label_values_and_help_text() -> None:
    tricky = 'a "quoted" \\ back\nslash'
    text = render(
        [MetricFamily("x_total", "counter", "first\\line\nsecond").add(3, listener=tricky)]
    )
    assert text == (
        "# HELP x_total first\\\\line\\nsecond\n"
        "# TYPE x_total counter\n"
        'x_total{listener="a \\"quoted\\" \\\\ back\\nslash"} 3.0\n'
    )
    family = parse_exposition(text)["x_total"]
    assert family.help == "first\\line\nsecond"
    assert family.samples == {(("listener", tricky),): 3.0}


@pytest.mark.parametrize(
    ("number", "text"),
    [
        # prometheus_client writes every value as a float (Go's strconv style).
        (7, "7.0"),
        (0.25, "0.25"),
        (3.0, "3.0"),
        (1e20, "1e+20"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
        (True, "1.0"),
    ],
)
def test_values_are_written_as_the_format_wants(number: float, text: str) -> None:
    assert render([MetricFamily("g", "gauge", "h").add(number)]).endswith(f"\ng {text}\n")


def test_wrong_names_are_refused_where_they_are_made() -> None:
    with pytest.raises(ValueError, match="must end in _total"):
        MetricFamily("bytes", "counter", "h")
    with pytest.raises(ValueError, match="invalid metric name"):
        MetricFamily("2bytes", "gauge", "h")
    with pytest.raises(ValueError, match="invalid label name"):
        MetricFamily("g", "gauge", "h").add(1, __reserved="x")
    with pytest.raises(ValueError, match="appears twice"):
        render([MetricFamily("g", "gauge", "h"), MetricFamily("g", "gauge", "h")])


def test_store_figures_follow_the_stats_protocol() -> None:
    class StatsStore(MemoryStore):
        def stats(self) -> dict[str, float]:
            return {
                "commits_total": 5,
                "commit_seconds_total": 0.25,
                "pending_writes": 3,
                "not a name": 1,
                "flag": True,  # not a number: skipped
            }

    families = parse_exposition(render(collect_store(StatsStore())))
    assert {n: (f.type, value(families, n)) for n, f in families.items()} == {
        "mqttd_store_commits_total": ("counter", 5),
        "mqttd_store_commit_seconds_total": ("counter", 0.25),
        "mqttd_store_pending_writes": ("gauge", 3),
    }
    assert collect_store(MemoryStore()) == []  # no stats(): nothing


# -- the endpoint of a running App --------------------------------------------------------


def metrics_config(*listener_names: str) -> Config:
    config = ephemeral_config()
    config.sys.interval = 0  # $SYS would add retained messages and traffic of its own
    config.metrics.enabled = True
    config.metrics.port = 0
    for name in listener_names:
        config.listeners.append(ListenerConfig(name=name, port=0))
    return config


async def scrape(app: App) -> dict[str, Family]:
    assert app.metrics_address is not None
    status, headers, body = await http_get(app.metrics_address, "/metrics")
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"] == CONTENT_TYPE
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    assert "date" in headers
    return parse_exposition(body.decode())


async def test_scrape_after_traffic() -> None:
    app = App(metrics_config("backup"))
    await app.start()
    try:
        sub = await NetClient.connect(app.listeners["mqtt"], "sub")
        await sub.subscribe("t/#")
        pub = await NetClient.connect(app.listeners["backup"], "pub")
        for _ in range(3):
            await pub.publish("t/x", b"reading")
        await pub.publish("t/q", b"acked", qos=1)
        for _ in range(4):
            await sub.next()
        families = await scrape(app)
        assert value(families, "mqttd_build_info", version=__version__) == 1
        assert value(families, "mqttd_clients_connected", listener="mqtt") == 1
        assert value(families, "mqttd_clients_connected", listener="backup") == 1
        assert value(families, "mqttd_connections_open", listener="backup") == 1
        assert value(families, "mqttd_connects_total") == 2
        assert value(families, "mqttd_sessions") == 2
        assert value(families, "mqttd_subscriptions") == 1
        assert value(families, "mqttd_publish_received_total") == 4
        assert value(families, "mqttd_publish_sent_total") == 4
        assert value(families, "mqttd_bytes_received_total") == sub.bytes_sent + pub.bytes_sent
        assert value(families, "mqttd_bytes_sent_total") == (
            sub.bytes_received + pub.bytes_received
        )
        for reason in ("queue_full", "expired", "too_large"):
            assert value(families, "mqttd_messages_dropped_total", reason=reason) == 0
        assert value(families, "process_cpu_seconds_total") > 0
        assert families["mqttd_uptime_seconds"].type == "gauge"

        await pub.disconnect()
        await asyncio.sleep(0.05)
        families = await scrape(app)
        assert value(families, "mqttd_clients_connected", listener="backup") == 0
        assert value(families, "mqttd_connects_total") == 2  # a counter keeps its count
        await sub.disconnect()
    finally:
        await app.stop()


async def test_dropped_messages_are_counted_by_reason() -> None:
    config = metrics_config()
    config.limits.max_queued_messages = 1
    app = App(config)
    await app.start()
    try:
        offline = await NetClient.connect(app.listeners["mqtt"], "offline", clean=False)
        await offline.subscribe("q/#", qos=1)
        await offline.disconnect()
        pub = await NetClient.connect(app.listeners["mqtt"], "pub")
        for packet_id in (1, 2, 3):
            await pub.publish("q/1", b"x", qos=1, packet_id=packet_id)
        families = await scrape(app)
        assert value(families, "mqttd_messages_dropped_total", reason="queue_full") == 2
        assert value(families, "mqttd_messages_queued") == 1
        assert value(families, "mqttd_clients_disconnected") == 1
        await pub.disconnect()
    finally:
        await app.stop()


async def test_a_store_with_stats_is_scraped(monkeypatch: pytest.MonkeyPatch) -> None:
    class StatsStore(MemoryStore):
        def stats(self) -> dict[str, float]:
            return {"commits_total": 12, "last_batch_size": 4}

    monkeypatch.setattr("mqttd.app.build_store", lambda persistence: StatsStore())
    app = App(metrics_config())
    await app.start()
    try:
        families = await scrape(app)
        assert value(families, "mqttd_store_commits_total") == 12
        assert value(families, "mqttd_store_last_batch_size") == 4
    finally:
        await app.stop()


# -- HTTP ------------------------------------------------------------------------------------


async def test_health_is_ok_while_running_and_the_listener_goes_with_the_broker() -> None:
    app = App(metrics_config())
    await app.start()
    address = app.metrics_address
    assert address is not None
    status, headers, body = await http_get(address, "/health")
    assert (status, body) == ("HTTP/1.1 200 OK", b"ok\n")
    assert headers["content-length"] == "3"
    await app.stop()
    assert not app.running
    with pytest.raises(OSError):
        await http_get(address, "/health")


async def test_health_is_503_when_the_broker_is_not_running() -> None:
    server = MetricsServer([], healthy=lambda: False)
    address = await server.start("127.0.0.1", 0)
    try:
        status, _, body = await http_get(address, "/health")
        assert (status, body) == ("HTTP/1.1 503 Service Unavailable", b"unavailable\n")
    finally:
        await server.stop()


@pytest.fixture
async def server() -> AsyncIterator[MetricsServer]:
    families = [MetricFamily("demo_total", "counter", "a demo").add(1)]
    server = MetricsServer([lambda: families], healthy=lambda: True)
    await server.start("127.0.0.1", 0)
    yield server
    await server.stop()


async def test_head_sends_the_headers_without_the_body(server: MetricsServer) -> None:
    assert server.address is not None
    _, get_headers, get_body = await http_get(server.address, "/metrics")
    status, headers, body = await http_get(server.address, "/metrics", method="HEAD")
    assert (status, body) == ("HTTP/1.1 200 OK", b"")
    assert headers["content-length"] == get_headers["content-length"] == str(len(get_body))


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /metrics?name=x HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 200 OK"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 404 Not Found"),
        (b"GET /metrics/x HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 404 Not Found"),
        (b"POST /metrics HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"),
        (b"hello\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (b"GET /metrics SPDY/3\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (b"GET /health HTTP/1.1\r\nX: " + b"y" * 9000 + b"\r\n\r\n", "HTTP/1.1 400 Bad Request"),
    ],
)
async def test_routes_and_bad_requests(
    server: MetricsServer, request_bytes: bytes, status: str
) -> None:
    assert server.address is not None
    got, headers, body = await http_request(server.address, request_bytes)
    assert got == status
    assert int(headers["content-length"]) == len(body)
    if "405" in status:
        assert headers["allow"] == "GET, HEAD"


async def test_a_silent_client_does_not_hold_up_a_scrape(server: MetricsServer) -> None:
    assert server.address is not None
    _, idle = await asyncio.open_connection(*server.address)
    try:
        status, _, body = await http_get(server.address, "/metrics")
        assert status == "HTTP/1.1 200 OK"
        assert parse_exposition(body.decode())["demo_total"].samples == {(): 1.0}
    finally:
        idle.close()


async def test_a_collector_that_fails_gives_500_not_a_dead_listener() -> None:
    def broken() -> list[MetricFamily]:
        raise RuntimeError("boom")

    server = MetricsServer([broken], healthy=lambda: True)
    address = await server.start("127.0.0.1", 0)
    try:
        status, _, _ = await http_get(address, "/metrics")
        assert status == "HTTP/1.1 500 Internal Server Error"
        status, _, _ = await http_get(address, "/health")
        assert status == "HTTP/1.1 200 OK"
    finally:
        await server.stop()


async def test_collectors_registered_after_the_start_are_scraped() -> None:
    app = App(metrics_config())
    await app.start()
    try:

        def bridges() -> list[MetricFamily]:
            up = MetricFamily("mqttd_bridge_up", "gauge", "1 while the bridge is connected")
            return [up.add(1, bridge="cloud")]

        app.metrics_collectors.append(bridges)
        families = await scrape(app)
        assert value(families, "mqttd_bridge_up", bridge="cloud") == 1
        assert value(families, "mqttd_sessions") == 0  # the broker's figures are still there
    finally:
        await app.stop()
