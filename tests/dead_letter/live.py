"""The real App on its own event loop thread, and paho-mqtt clients talking to it.

`LiveBroker` runs `mqttd.app.App` (real listener, real sockets, the App's timer driver)
on a `FakeClock`, so message and session expiry are reached with `advance(seconds)`
instead of sleeping. `Paho` is a paho-mqtt 2.x client on its own network thread whose
received messages land in a queue, user properties included; `hold()` makes it a slow
subscriber (its on_message blocks, so it neither reads nor acknowledges).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqttd.app import App
from mqttd.broker.clock import FakeClock
from mqttd.broker.stats import BrokerStats
from mqttd.config import Config

T = TypeVar("T")
TIMEOUT = 5.0


class LiveBroker:
    """An App serving 127.0.0.1 on a free port, run by a thread of its own."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.clock = FakeClock()
        self.app: App | None = None
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mqttd-dead-letter", daemon=True)

    def start(self) -> LiveBroker:
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError("the broker did not start") from self._error
        return self

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        try:
            self.app = App(self.config, clock=self.clock)
            await self.app.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._stop = asyncio.get_running_loop().create_future()
        self._ready.set()
        try:
            await self._stop
        finally:
            await self.app.stop()

    @property
    def port(self) -> int:
        assert self.app is not None
        return self.app.port

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn()` on the broker's loop (where the core lives) and return its result."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(TIMEOUT)

    def stats(self) -> BrokerStats:
        """A copy of the broker's counters."""
        assert self.app is not None
        broker = self.app.broker
        return self.call(lambda: BrokerStats(**{f: getattr(broker.stats, f) for f in _FIELDS}))

    def advance(self, seconds: float) -> None:
        """Move the broker's clock on and run the timers due, on the broker's loop."""
        assert self.app is not None
        scheduler = self.app.broker.scheduler

        def move() -> None:
            self.clock.advance(seconds)
            scheduler.run_due()

        self.call(move)

    def stop(self) -> None:
        if self._stop is not None:
            stop = self._stop

            def release() -> None:
                if not stop.done():
                    stop.set_result(None)

            self.loop.call_soon_threadsafe(release)
        self._thread.join(10)


_FIELDS = tuple(BrokerStats.__dataclass_fields__)


@dataclass(slots=True)
class Received:
    """One message as paho delivered it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    user_properties: list[tuple[str, str]] = field(default_factory=list)
    expiry: int | None = None
    content_type: str | None = None

    @property
    def user(self) -> dict[str, str]:
        """The user properties by name (first value of each)."""
        found: dict[str, str] = {}
        for name, value in self.user_properties:
            found.setdefault(name, value)
        return found


class Paho:
    """A paho-mqtt client (MQTT 5.0 unless told) with blocking helpers for tests."""

    def __init__(
        self,
        port: int,
        client_id: str,
        *,
        v5: bool = True,
        clean: bool = True,
        session_expiry: int | None = None,
        maximum_packet_size: int | None = None,
        receive_maximum: int | None = None,
    ) -> None:
        self.port = port
        self.receive_maximum = receive_maximum
        self.v5 = v5
        self.clean = clean
        self.session_expiry = session_expiry
        self.maximum_packet_size = maximum_packet_size
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if v5 else clean,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
        )
        self.messages: queue.Queue[Received] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.reason_code: int | None = None
        self._release = threading.Event()
        self._release.set()
        self._subacks: queue.Queue[list[int]] = queue.Queue()
        self._pubacks: dict[int, int] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self._started = False

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.reason_code = rc.value
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.disconnected.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        self._subacks.put([c.value for c in codes])

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        self._pubacks[mid] = rc.value

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        self.messages.put(
            Received(
                message.topic,
                bytes(message.payload),
                message.qos,
                bool(message.retain),
                list(getattr(props, "UserProperty", []) or []),
                getattr(props, "MessageExpiryInterval", None),
                getattr(props, "ContentType", None),
            )
        )
        # A held client blocks here: paho's thread neither reads nor sends PUBACK.
        self._release.wait(TIMEOUT * 4)

    def connect(self) -> Paho:
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if self.session_expiry is not None:
                properties.SessionExpiryInterval = self.session_expiry
            if self.maximum_packet_size is not None:
                properties.MaximumPacketSize = self.maximum_packet_size
            if self.receive_maximum is not None:
                properties.ReceiveMaximum = self.receive_maximum
        self.client.connect(
            "127.0.0.1",
            self.port,
            keepalive=60,
            clean_start=self.clean if self.v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self.client.loop_start()
        self._started = True
        assert self.connected.wait(TIMEOUT), "no CONNACK"
        assert self.reason_code == 0, f"CONNACK {self.reason_code:#x}"
        return self

    def subscribe(self, topic_filter: str, qos: int = 0) -> list[int]:
        result, _ = self.client.subscribe(topic_filter, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS
        return self._subacks.get(timeout=TIMEOUT)

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        expiry: int | None = None,
    ) -> int:
        """Publish and wait for the QoS flow to end; return the PUBACK/PUBREC reason code."""
        properties = None
        if expiry is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = expiry
        info = self.client.publish(topic, payload, qos, retain, properties)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), f"publish to {topic!r} not completed"
        return self._pubacks.pop(info.mid, 0)

    def expect(self, count: int, timeout: float = TIMEOUT) -> list[Received]:
        """The next `count` messages."""
        return [self.messages.get(timeout=timeout) for _ in range(count)]

    def expect_none(self, duration: float = 0.3) -> None:
        with contextlib.suppress(queue.Empty):
            got = self.messages.get(timeout=duration)
            raise AssertionError(f"unexpected message {got}")

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Be a slow subscriber inside the block: each on_message waits for its end."""
        self._release.clear()
        try:
            yield
        finally:
            self._release.set()

    def disconnect(self) -> None:
        if self._started and not self.disconnected.is_set():
            self.client.disconnect()
            self.disconnected.wait(TIMEOUT)
        self.close()

    def close(self) -> None:
        self._release.set()
        if self._started:
            with contextlib.suppress(Exception):
                self.client.disconnect()
            self.disconnected.wait(1.0)
            self.client.loop_stop()
            self._started = False
