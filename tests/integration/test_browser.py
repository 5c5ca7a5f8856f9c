"""MQTT over WebSocket in a real browser: headless Debian Chromium against the mqttd process.

Chromium is driven over the DevTools protocol (see browser/chromium.py for why not
Playwright). The broker is the real `python -m mqttd` with a TCP and a WebSocket listener;
paho-mqtt publishes over TCP and the page subscribes over ws://.

- MQTT.js (protocol 4 and 5) receives QoS 0, 1 and 2 messages and a retained one, in order;
- the built-in dashboard loads, shows $SYS figures and messages on a filter typed into it;
- a wrong subprotocol, a wrong path and a too-large frame are refused, and the broker goes
  on serving the page's other connection;
- a page from another origin cannot open the MQTT WebSocket (cross-site WebSocket
  hijacking) unless `allowed_origins` names it; the dashboard, same origin, can.

Set MQTTD_DASHBOARD_PNG=path to also save the dashboard screenshot there (docs/dashboard.png).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mqttd.net.ws import serve_ws

from .browser.chromium import Page, chromium_path
from .browser.fixtures import browser as browser  # a fixture of these tests
from .browser.fixtures import page as page  # a fixture of these tests
from .paho_client import V5, V311, PahoClient

if TYPE_CHECKING:
    from conftest import MqttdFactory, MqttdProcess

ROOT = Path(__file__).resolve().parents[2]
PAGES = Path(__file__).resolve().parent / "browser"
MQTT_JS = ROOT / ".test-deps" / "node_modules" / "mqtt" / "dist" / "mqtt.min.js"

MAX_PACKET_SIZE = 4096

# A TCP listener (first: the fixture's -p 0 sets its port) and a WebSocket listener.
CONFIG = f"""
[limits]
max_packet_size = {MAX_PACKET_SIZE}

[sys]
interval = 1

[[listeners]]
type = "mqtt"

[[listeners]]
type = "ws"
port = 0
"""

pytestmark = pytest.mark.skipif(
    chromium_path() is None, reason="Chromium is not installed (scripts/test.sh installs it)"
)


class _PagesHandler(SimpleHTTPRequestHandler):
    """Serves tests/integration/browser/, and /mqtt.min.js from .test-deps/."""

    def translate_path(self, path: str) -> str:
        if path.split("?", 1)[0] == "/mqtt.min.js":
            return str(MQTT_JS)
        return super().translate_path(path)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def pages() -> Iterator[str]:
    """Base URL of a local HTTP server with the test pages (nothing from the internet)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_PagesHandler, directory=str(PAGES)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def broker(mqttd_factory: MqttdFactory, pages: str) -> MqttdProcess:
    """A real mqttd process with TCP and WebSocket listeners; the test pages' origin (another
    port) is allowed on the WebSocket listener."""
    return mqttd_factory(config=CONFIG + f'allowed_origins = ["{pages}"]\n')


def ws_url(broker: MqttdProcess, path: str = "/mqtt") -> str:
    [ws] = [listener for listener in broker.listeners if listener.scheme == "ws"]
    return f"ws://{ws.host}:{ws.port}{path}"


def dashboard_url(broker: MqttdProcess) -> str:
    return ws_url(broker, "/").replace("ws://", "http://", 1)


@pytest.fixture
def publisher(broker: MqttdProcess) -> Iterator[PahoClient]:
    """A paho-mqtt client connected over TCP."""
    client = PahoClient(broker.host, broker.port, "browser-test-publisher")
    client.connect()
    yield client
    client.close()


# ---- (a) MQTT.js in the browser ----------------------------------------------------------


@pytest.mark.parametrize("protocol_version", [4, 5])
def test_mqttjs_receives_retained_then_qos_0_1_2_in_order(
    broker: MqttdProcess, publisher: PahoClient, page: Page, pages: str, topic: str,
    protocol_version: int,
) -> None:  # fmt: skip
    if not MQTT_JS.is_file():
        pytest.skip(f"MQTT.js is not installed at {MQTT_JS} (scripts/test.sh installs it)")
    publisher.publish(f"{topic}/retained", b"kept for later", qos=1, retain=True)

    page.goto(f"{pages}/mqttjs.html")
    granted = page.evaluate(
        f"startMqttJs({json.dumps(ws_url(broker))}, {protocol_version}, "
        f"{json.dumps(topic + '/#')}, 2)"
    )
    assert granted == [2]
    page.wait_for("probe.received.length >= 1")
    for qos in (0, 1, 2):
        publisher.publish(f"{topic}/q{qos}", f"message at QoS {qos}", qos=qos)
    page.wait_for("probe.received.length >= 4")

    received = page.evaluate("probe.received")
    assert received == [
        {"topic": f"{topic}/retained", "payload": "kept for later", "qos": 1, "retain": True},
        {"topic": f"{topic}/q0", "payload": "message at QoS 0", "qos": 0, "retain": False},
        {"topic": f"{topic}/q1", "payload": "message at QoS 1", "qos": 1, "retain": False},
        {"topic": f"{topic}/q2", "payload": "message at QoS 2", "qos": 2, "retain": False},
    ]
    shown = page.evaluate(
        "[...document.querySelectorAll('#received li')].map(li => li.textContent)"
    )
    assert shown == [
        f"{topic}/retained qos=1 retain=true kept for later",
        f"{topic}/q0 qos=0 retain=false message at QoS 0",
        f"{topic}/q1 qos=1 retain=false message at QoS 1",
        f"{topic}/q2 qos=2 retain=false message at QoS 2",
    ]
    assert page.evaluate("probe.errors") == []


# ---- (b) the built-in dashboard --------------------------------------------------------


def open_dashboard(page: Page, broker: MqttdProcess) -> None:
    page.goto(dashboard_url(broker))
    page.wait_for("document.body.dataset.state === 'connected'")


def type_and_subscribe(page: Page, topic_filter: str, qos: int) -> None:
    """Type into the filter box as a person would, pick the QoS, press Subscribe."""
    page.evaluate("document.getElementById('topic-filter').focus()")
    page.send("Input.insertText", {"text": topic_filter})
    page.evaluate(f"document.getElementById('qos').value = '{qos}'")
    page.evaluate("document.getElementById('subscribe-btn').click()")
    page.wait_for(
        f"[...document.querySelectorAll('#subscriptions .chip')].some(c => "
        f"c.dataset.filter === {json.dumps(topic_filter)} && "
        f"c.querySelector('.chip-qos').textContent === 'QoS {qos}')"
    )


def message_rows(page: Page) -> list[dict[str, str]]:
    """The dashboard's message table, oldest first."""
    rows: list[dict[str, str]] = page.evaluate(
        "[...document.querySelectorAll('#messages tbody tr')].reverse().map(r => ({"
        "topic: r.querySelector('.topic').textContent, qos: r.querySelector('.qos').textContent,"
        "retain: r.querySelector('.retain').textContent,"
        "payload: r.querySelector('.payload').textContent}))"
    )
    return rows


def test_dashboard_loads_and_shows_messages_on_a_typed_filter(
    broker: MqttdProcess, publisher: PahoClient, page: Page, topic: str
) -> None:
    open_dashboard(page, broker)
    assert page.evaluate("document.title") == "mqttd dashboard"
    assert page.evaluate("document.getElementById('broker-url').textContent") == ws_url(broker)
    assert page.console() == []  # no CSP violation, no script error

    publisher.publish(f"{topic}/kitchen/temperature", b"21.5", qos=1, retain=True)
    type_and_subscribe(page, f"{topic}/#", 1)
    page.wait_for("document.querySelectorAll('#messages tbody tr').length >= 1")
    publisher.publish(f"{topic}/hall/humidity", b'{"rh": 48, "t": 19.2}', qos=1)
    publisher.publish(f"{topic}/hall/raw", bytes([0, 1, 2, 0xFE, 0xFF]), qos=0)
    page.wait_for("document.querySelectorAll('#messages tbody tr').length >= 3")

    rows = [(r["topic"], r["qos"], r["retain"], r["payload"]) for r in message_rows(page)]
    assert rows == [
        (f"{topic}/kitchen/temperature", "1", "retained", "21.5"),
        (f"{topic}/hall/humidity", "1", "", '{"rh": 48, "t": 19.2}'),
        (f"{topic}/hall/raw", "0", "", "00 01 02 fe ff"),  # not UTF-8: shown as hex
    ]
    assert page.evaluate("document.getElementById('message-count').textContent") == "3"

    # Leave a tidy picture: the screenshot is part of the documentation.
    page.evaluate("document.getElementById('topic-filter').blur()")
    target = os.environ.get("MQTTD_DASHBOARD_PNG")
    if target:
        # Let the $SYS figures (published every second here) fill in first.
        page.wait_for(
            "document.getElementById('stat-sent-rate').textContent !== '—'"
            " && document.getElementById('stat-clients').textContent !== '0'"
        )
        page.screenshot(Path(target))


def test_dashboard_shows_broker_figures_from_sys(
    broker: MqttdProcess, publisher: PahoClient, page: Page
) -> None:
    # The figures come from $SYS (published every second here); they start as "—".
    open_dashboard(page, broker)
    clients = page.wait_for(
        "(t => t !== '—' && parseInt(t.replace(/,/g, '')) >= 2 && t)"
        "(document.getElementById('stat-clients').textContent)"
    )
    assert int(clients.replace(",", "")) >= 2  # the publisher and the dashboard itself
    page.wait_for("document.getElementById('stat-uptime').textContent !== '—'")


# ---- (c) refusals, seen from the browser -----------------------------------------------


def handshake_errors(page: Page) -> list[str]:
    return [e["errorMessage"] for e in page.events("Network.webSocketFrameError")]


def test_browser_refusals_are_clear_and_the_broker_keeps_serving(
    broker: MqttdProcess, publisher: PahoClient, page: Page, pages: str, topic: str
) -> None:
    if not MQTT_JS.is_file():
        pytest.skip(f"MQTT.js is not installed at {MQTT_JS} (scripts/test.sh installs it)")
    page.goto(f"{pages}/mqttjs.html")
    page.evaluate(f"startMqttJs({json.dumps(ws_url(broker))}, 4, {json.dumps(topic)}, 1)")

    wrong_protocol = page.evaluate(f"tryWebSocket({json.dumps(ws_url(broker))}, ['wamp'])")
    assert wrong_protocol["opened"] is False and wrong_protocol["code"] == 1006
    wrong_path = page.evaluate(f"tryWebSocket({json.dumps(ws_url(broker, '/chat'))}, ['mqtt'])")
    assert wrong_path["opened"] is False and wrong_path["code"] == 1006
    page.browser.pump(0.2)
    assert handshake_errors(page) == [
        "Error during WebSocket handshake: Unexpected response code: 400",
        "Error during WebSocket handshake: Unexpected response code: 404",
    ]

    too_large = page.evaluate(
        f"tryWebSocket({json.dumps(ws_url(broker))}, ['mqtt'], {MAX_PACKET_SIZE + 1})"
    )
    assert too_large == {
        "opened": True,
        "protocol": "mqtt",
        "code": 1009,
        "reason": f"frame with {MAX_PACKET_SIZE + 1} bytes exceeds limit of "
        f"{MAX_PACKET_SIZE} bytes",
        "error": False,
    }

    # The page's MQTT.js connection was never disturbed.
    publisher.publish(topic, b"still here", qos=1)
    page.wait_for("probe.received.length >= 1")
    assert page.evaluate("probe.received[0].payload") == "still here"
    assert page.evaluate("probe.state") == "subscribed"


def test_a_page_from_another_origin_cannot_open_the_websocket(
    mqttd_factory: MqttdFactory, page: Page, pages: str
) -> None:
    """Cross-site WebSocket hijacking: by default only the listener's own pages connect."""
    broker = mqttd_factory(config=CONFIG)  # allowed_origins left at its default
    page.goto(f"{pages}/mqttjs.html")  # another origin: same host, another port
    hijack = page.evaluate(f"tryWebSocket({json.dumps(ws_url(broker))}, ['mqtt'])")
    assert hijack["opened"] is False and hijack["code"] == 1006
    page.browser.pump(0.2)
    assert handshake_errors(page) == [
        "Error during WebSocket handshake: Unexpected response code: 403"
    ]
    open_dashboard(page, broker)  # the listener's own page still connects


def test_dashboard_policy_blocks_other_origins(broker: MqttdProcess, page: Page) -> None:
    """The CSP sent with the page lets it load its scripts and connect back, nothing more."""
    open_dashboard(page, broker)
    blocked = page.evaluate(
        "fetch('https://example.invalid/').then(() => 'fetched', e => 'blocked: ' + e.name)"
    )
    assert blocked == "blocked: TypeError"
    assert any("Content Security Policy" in line for line in page.console())


@pytest.mark.parametrize("version", [V311, V5])
def test_paho_over_websocket_transport(broker: MqttdProcess, publisher: PahoClient, topic: str,
                                       version: Any) -> None:  # fmt: skip
    """Not a browser, but the same listener: paho's own WebSocket transport works too."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    [ws] = [listener for listener in broker.listeners if listener.scheme == "ws"]
    got = threading.Event()
    received: list[tuple[str, bytes]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, transport="websockets", protocol=version)
    client.ws_set_options(path="/mqtt")

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received.append((message.topic, bytes(message.payload)))
        got.set()

    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(topic, 1)
    client.connect(ws.host, ws.port)
    client.loop_start()
    try:
        assert subscribed.wait(5)
        publisher.publish(topic, b"over ws", qos=1)
        assert got.wait(5)
        assert received == [(topic, b"over ws")]
    finally:
        client.disconnect()
        client.loop_stop()


# ---- the dashboard's own MQTT client against a scripted server ------------------------


def _mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _packet(first: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        digit, length = length % 128, length // 128
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes([first, *encoded]) + body


def _publish(
    topic: str, payload: bytes, qos: int = 0, packet_id: int = 0, dup: bool = False
) -> bytes:
    header = 0x30 | (qos << 1) | (0x08 if dup else 0)
    ident = packet_id.to_bytes(2, "big") if qos else b""
    return _packet(header, _mqtt_string(topic) + ident + payload)


class ScriptedConnection:
    """Answers the dashboard like a broker, but frames its answers awkwardly on purpose."""

    def __init__(self, sink: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.sink = sink
        self.loop = loop
        self.buffer = b""
        self.acks: list[tuple[int, int]] = []  # (packet type, packet id) the client sent

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 2:
            length, multiplier, i = 0, 1, 1
            while True:
                length += (self.buffer[i] & 0x7F) * multiplier
                multiplier *= 128
                i += 1
                if not self.buffer[i - 1] & 0x80:
                    break
            if len(self.buffer) < i + length:
                return
            first, body = self.buffer[0], self.buffer[i : i + length]
            self.buffer = self.buffer[i + length :]
            self.handle(first >> 4, body)

    def later(self, delay: float, data: bytes) -> None:
        self.loop.call_later(delay, self.sink.write, data)

    def handle(self, kind: int, body: bytes) -> None:
        if kind == 1:  # CONNECT: CONNACK one byte per frame
            for n, byte in enumerate(b"\x20\x02\x00\x00"):
                self.later(0.02 * n, bytes([byte]))
        elif kind == 8:  # SUBSCRIBE
            packet_id = body[:2]
            topic_filter = body[4 : 4 + int.from_bytes(body[2:4], "big")].decode()
            suback = _packet(0x90, packet_id + bytes([body[-1]]))
            if topic_filter == "$SYS/#":  # SUBACK and figures, all in one frame
                self.sink.write(
                    suback
                    + _publish("$SYS/broker/clients/connected", b"5")
                    + _publish("$SYS/broker/uptime", b"90 seconds")
                    + _publish("$SYS/broker/subscriptions/count", b"12345")
                )
            else:
                self.sink.write(suback)
                first = _publish("lab/one", b"split across frames", 1, 10)
                self.later(0.05, first[:5])
                self.later(0.10, first[5:])
                second = _publish("lab/two", b"exactly once", 2, 11)
                resent = _publish("lab/two", b"exactly once", 2, 11, dup=True)
                self.later(0.15, second + resent)
        elif kind in (4, 5, 7):  # PUBACK, PUBREC, PUBCOMP
            self.acks.append((kind, int.from_bytes(body[:2], "big")))
            if kind == 5:
                self.sink.write(_packet(0x62, body[:2]))  # PUBREL
        elif kind == 12:
            self.sink.write(b"\xd0\x00")

    def connection_lost(self) -> None:
        pass

    def writable_changed(self, writable: bool) -> None:
        pass


class ScriptedBroker:
    def __init__(self) -> None:
        self.connections: list[ScriptedConnection] = []

    def connection(
        self, sink: Any, peer: str, listener: str = "ws", identity: str | None = None, /
    ) -> ScriptedConnection:
        conn = ScriptedConnection(sink, asyncio.get_running_loop())
        self.connections.append(conn)
        return conn


@pytest.fixture
def scripted() -> Iterator[tuple[str, ScriptedBroker]]:
    """serve_ws in a thread of its own with a ScriptedBroker behind it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    broker = ScriptedBroker()
    server = asyncio.run_coroutine_threadsafe(serve_ws(broker, "127.0.0.1", 0), loop).result(10)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/", broker

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_dashboard_client_reassembles_frames_and_acknowledges(
    scripted: tuple[str, ScriptedBroker], page: Page
) -> None:
    url, broker = scripted
    page.goto(url)
    page.wait_for("document.body.dataset.state === 'connected'")
    page.wait_for("document.getElementById('stat-subscriptions').textContent === '12,345'")
    assert page.evaluate("document.getElementById('stat-clients').textContent") == "5"
    assert page.evaluate("document.getElementById('stat-uptime').textContent") == "1m 30s"

    type_and_subscribe(page, "lab/#", 2)
    page.wait_for("document.querySelectorAll('#messages tbody tr').length >= 2")
    page.browser.pump(0.3)  # a duplicate would show up by now
    rows = [(r["topic"], r["qos"], r["payload"]) for r in message_rows(page)]
    assert rows == [("lab/one", "1", "split across frames"), ("lab/two", "2", "exactly once")]
    # PUBACK for QoS 1; PUBREC for QoS 2 and again for the resent copy; PUBCOMP for each
    # PUBREL (the scripted server answers each PUBREC with one).
    assert broker.connections[0].acks == [(4, 10), (5, 11), (5, 11), (7, 11), (7, 11)]
