"""A paho-mqtt 2.x client wrapped for tests: blocking calls that wait on events, not sleeps.

paho runs its network loop in its own thread (``loop_start``); callbacks only put what
they see into queues and set events, and the test thread waits on those with timeouts.
No lock of ours is ever held around a paho call, so a callback can never deadlock
against ``publish()``. Automatic reconnection is off: a test that is disconnected
(takeover, keepalive, shutdown) must stay disconnected so it can look at why.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["V5", "V31", "V311", "ConnectResult", "PahoClient", "Received"]

V31 = MQTTProtocolVersion.MQTTv31
V311 = MQTTProtocolVersion.MQTTv311
V5 = MQTTProtocolVersion.MQTTv5

TIMEOUT = 5.0


@dataclass(slots=True)
class ConnectResult:
    """What CONNACK said."""

    reason_code: int
    session_present: bool
    properties: Properties | None


@dataclass(slots=True)
class Received:
    """One application message as paho delivered it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None


class PahoClient:
    """One paho client on its own network thread, with blocking helpers for tests."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str = "",
        *,
        protocol: MQTTProtocolVersion = V311,
        clean: bool = True,
        keepalive: int = 30,
        session_expiry: int | None = None,
        will: tuple[str, bytes, int, bool] | None = None,
        will_properties: Properties | None = None,
        transport: Literal["tcp", "websockets"] = "tcp",
    ) -> None:
        self.host, self.port = host, port
        self.protocol = protocol
        self.clean = clean
        self.keepalive = keepalive
        self.session_expiry = session_expiry
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            # 5.0 takes clean start at connect(); paho insists clean_session is None then.
            clean_session=None if protocol == V5 else clean,
            protocol=protocol,
            reconnect_on_failure=False,
            transport=transport,
        )
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos, retain, will_properties)
        self.messages: queue.Queue[Received] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connect_result: ConnectResult | None = None
        self.disconnect_reason: int | None = None
        self._subacks: dict[int, list[int]] = {}
        self._unsubacks: dict[int, list[int]] = {}
        self._acks_changed = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self._started = False

    # ------------------------------------------------------------------ callbacks

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connect_result = ConnectResult(reason_code.value, flags.session_present, properties)
        self.connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.disconnect_reason = reason_code.value
        self.disconnected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        self.messages.put(
            Received(
                message.topic, bytes(message.payload), message.qos, bool(message.retain), props
            )
        )

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._acks_changed:
            self._subacks[mid] = [rc.value for rc in reason_codes]
            self._acks_changed.notify_all()

    def _on_unsubscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._acks_changed:
            self._unsubacks[mid] = [rc.value for rc in reason_codes]
            self._acks_changed.notify_all()

    # ------------------------------------------------------------------ operations

    def connect(self, *, timeout: float = TIMEOUT, expect_success: bool = True) -> ConnectResult:
        """Connect, start the network thread and wait for CONNACK.

        A connection that ends before its CONNACK (a refused TLS certificate, a broker
        that closes the socket) raises ConnectionError at once instead of a late timeout.
        """
        ended_before = self.disconnected.is_set()
        clean_start: Any = self.clean if self.protocol == V5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        self.client.connect(
            self.host,
            self.port,
            keepalive=self.keepalive,
            clean_start=clean_start,
            properties=self.connect_properties_for_paho(),
        )
        self.client.loop_start()
        self._started = True
        deadline = time.monotonic() + timeout
        while not self.connected.wait(0.02):
            if not ended_before and self.disconnected.is_set():
                raise ConnectionError("the connection ended before CONNACK")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no CONNACK within {timeout}s")
        assert self.connect_result is not None
        if expect_success and self.connect_result.reason_code != 0:
            raise AssertionError(f"CONNACK refused: {self.connect_result.reason_code:#x}")
        return self.connect_result

    def connect_properties_for_paho(self) -> Properties | None:
        """The CONNECT properties: 5.0's Session Expiry Interval when one was given."""
        if self.protocol != V5 or self.session_expiry is None:
            return None
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.session_expiry
        return properties

    def subscribe(
        self, topic: str, qos: int = 0, *, timeout: float = TIMEOUT, **kw: Any
    ) -> list[int]:
        """Subscribe and wait for SUBACK; return the granted QoS / reason codes."""
        result, mid = self.client.subscribe(topic, qos, **kw)
        assert result == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed: {result}"
        assert mid is not None
        with self._acks_changed:
            if not self._acks_changed.wait_for(lambda: mid in self._subacks, timeout):
                raise TimeoutError(f"no SUBACK for {topic!r} within {timeout}s")
            return self._subacks.pop(mid)

    def unsubscribe(self, topic: str, *, timeout: float = TIMEOUT) -> list[int]:
        """Unsubscribe and wait for UNSUBACK."""
        result, mid = self.client.unsubscribe(topic)
        assert result == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe failed: {result}"
        assert mid is not None
        with self._acks_changed:
            if not self._acks_changed.wait_for(lambda: mid in self._unsubacks, timeout):
                raise TimeoutError(f"no UNSUBACK for {topic!r} within {timeout}s")
            return self._unsubacks.pop(mid)

    def publish(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        *,
        timeout: float = TIMEOUT,
        properties: Properties | None = None,
    ) -> None:
        """Publish and wait until the QoS flow is complete (sent, for QoS 0)."""
        info = self.client.publish(topic, payload, qos, retain, properties)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError(f"publish to {topic!r} at QoS {qos} not completed within {timeout}s")

    def expect_message(self, timeout: float = TIMEOUT) -> Received:
        """The next message delivered, waiting at most ``timeout``."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout}s") from None

    def expect_messages(self, count: int, timeout: float = TIMEOUT) -> list[Received]:
        """The next ``count`` messages, all within ``timeout``."""
        import time

        deadline = time.monotonic() + timeout
        got: list[Received] = []
        while len(got) < count:
            try:
                got.append(self.messages.get(timeout=max(deadline - time.monotonic(), 0.001)))
            except queue.Empty:
                raise AssertionError(
                    f"received {len(got)} of {count} messages within {timeout}s: {got}"
                ) from None
        return got

    def expect_no_message(self, duration: float) -> None:
        """Require that nothing is delivered for ``duration`` seconds."""
        try:
            message = self.messages.get(timeout=duration)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message {message}")

    def wait_disconnected(self, timeout: float = TIMEOUT) -> int | None:
        """Wait until the broker closes the connection; return paho's reason code."""
        if not self.disconnected.wait(timeout):
            raise AssertionError(f"still connected after {timeout}s")
        return self.disconnect_reason

    def disconnect(self, *, timeout: float = TIMEOUT) -> None:
        """Send DISCONNECT, wait for the network thread to notice, and stop it."""
        if self._started and not self.disconnected.is_set():
            self.client.disconnect()
            self.disconnected.wait(timeout)
        self.close()

    def abort(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a crashed device would.

        Shutting the socket down (instead of closing it under paho's feet) makes both the
        broker and paho's own thread see the end of the stream.
        """
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.disconnected.wait(TIMEOUT)
        self.close()

    def close(self) -> None:
        """Disconnect if still connected and stop the network thread (idempotent).

        Sending DISCONNECT also wakes paho's select() at once; a bare loop_stop() would
        wait for its one-second poll.
        """
        if self._started:
            if not self.disconnected.is_set():
                with contextlib.suppress(Exception):
                    self.client.disconnect()
                self.disconnected.wait(1.0)
            self._started = False
            self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
