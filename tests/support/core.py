"""The one driver of the sans-IO broker core: clients without sockets, time without sleeping.

`Harness` holds one Broker on a FakeClock and a MemoryStore; `Harness.client()` opens a
Connection on a `MemorySink` and returns a `Client` that encodes packets with the codec,
feeds them to the Connection and decodes what the broker wrote back. The feature suites
(auth, dead letters, $SYS figures, the hostile-input model) build on these two classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from mqttd.auth.hooks import Authenticate
from mqttd.broker.broker import Broker
from mqttd.broker.clock import FakeClock
from mqttd.broker.memory_sink import MemorySink
from mqttd.broker.settings import BrokerSettings
from mqttd.protocol import (
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketReader,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    encode,
)
from mqttd.store.memory import MemoryStore

P = TypeVar("P")


class Client:
    """One client connection to the harness broker."""

    def __init__(
        self,
        broker: Broker,
        level: int,
        peer: str,
        listener: str = "tcp",
        identity: str | None = None,
    ) -> None:
        self.broker = broker
        self.level = level
        self.sink = MemorySink()
        self.conn = broker.connection(self.sink, peer, listener, identity)
        self._reader: PacketReader | None = None
        self._held: list[Packet] = []

    # -- sending ---------------------------------------------------------------------

    def send(self, *packets: Packet) -> None:
        self.conn.data_received(b"".join(encode(p, self.level) for p in packets))

    def send_bytes(self, data: bytes) -> None:
        self.conn.data_received(data)

    def send_raw_subscribe(self, packet_id: int, filters: list[str], qos: int = 0) -> None:
        """A SUBSCRIBE built by hand, so filters the encoder refuses can be sent."""
        body = bytearray(packet_id.to_bytes(2, "big"))
        if self.level == 5:
            body.append(0)  # no properties
        for topic_filter in filters:
            raw = topic_filter.encode()
            body += len(raw).to_bytes(2, "big") + raw + bytes((qos,))
        self.send_bytes(_frame(0x82, bytes(body)))

    def send_raw_publish(self, topic: str, payload: bytes = b"x") -> None:
        """A QoS 0 PUBLISH built by hand, so topics the encoder refuses can be sent."""
        raw = topic.encode()
        body = len(raw).to_bytes(2, "big") + raw + (b"\x00" if self.level == 5 else b"") + payload
        self.send_bytes(_frame(0x30, body))

    def connect(
        self,
        client_id: str = "client",
        clean_start: bool = True,
        keep_alive: int = 0,
        will: Will | None = None,
        properties: Properties | None = None,
        username: str | None = None,
        password: bytes | None = None,
    ) -> Connack:
        self.send(
            Connect(
                client_id,
                self.level,
                clean_start,
                keep_alive,
                username,
                password,
                will,
                properties,
                "MQIsdp" if self.level == 3 else "MQTT",
            )
        )
        return self.first(Connack)

    def first(self, cls: type[P]) -> P:
        """The first new packet, which must be a `cls`; the rest waits for packets()."""
        got = self.packets()
        assert got and isinstance(got[0], cls), f"expected a {cls.__name__} first: {got}"
        self._held = got[1:]
        return got[0]

    def subscribe(
        self,
        *subscriptions: str | Subscription,
        qos: int = 0,
        packet_id: int = 1,
        properties: Properties | None = None,
    ) -> SubAck:
        subs = [s if isinstance(s, Subscription) else Subscription(s, qos) for s in subscriptions]
        self.send(Subscribe(packet_id, subs, properties))
        # Retained messages follow the SUBACK; they wait for packets().
        return self.first(SubAck)

    def unsubscribe(self, *filters: str, packet_id: int = 2) -> UnsubAck:
        self.send(Unsubscribe(packet_id, list(filters)))
        return self.expect(UnsubAck)

    def publish(
        self,
        topic: str,
        payload: bytes = b"x",
        qos: int = 0,
        retain: bool = False,
        packet_id: int | None = None,
        properties: Properties | None = None,
        dup: bool = False,
    ) -> None:
        if qos and packet_id is None:
            packet_id = 1
        self.send(Publish(topic, payload, qos, retain, dup, packet_id, properties))

    def disconnect(self, reason_code: int = 0, properties: Properties | None = None) -> None:
        self.send(Disconnect(reason_code, properties))

    def lose(self) -> None:
        """The socket dropped without DISCONNECT."""
        self.conn.connection_lost()

    # -- receiving -------------------------------------------------------------------

    def packets(self) -> list[Packet]:
        """Every packet written since the last call."""
        if self._reader is None:
            self._reader = PacketReader(max_packet_size=1 << 28, protocol_level=self.level)
        data = self.sink.take()
        held, self._held = self._held, []
        return held + (self._reader.feed(data) if data else [])

    def expect(self, cls: type[P]) -> P:
        """Exactly one new packet, of class `cls`."""
        got = self.packets()
        assert len(got) == 1 and isinstance(got[0], cls), f"expected one {cls.__name__}: {got}"
        return got[0]

    def publishes(self) -> list[Publish]:
        """The new packets, which must all be PUBLISH."""
        got = self.packets()
        assert all(isinstance(p, Publish) for p in got), got
        return [p for p in got if isinstance(p, Publish)]

    def ack(self, publish: Publish) -> None:
        """Complete an inbound QoS 1/2 delivery (PUBACK, or PUBREC + PUBREL-reply PUBCOMP)."""
        assert publish.packet_id is not None
        if publish.qos == 1:
            self.send(PubAck(publish.packet_id))
        elif publish.qos == 2:
            self.send(PubRec(publish.packet_id))
            rel = self.expect(PubRel)
            self.send(PubComp(rel.packet_id))

    @property
    def closed(self) -> bool:
        return self.sink.closed


class DeferredStore(MemoryStore):
    """A memory store whose commits happen only when the test says so; `patient`
    records each `after_commit` call's flag, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Callable[[], None]] = []
        self.patient: list[bool] = []

    def after_commit(self, callback: Callable[[], None], patient: bool = False) -> None:
        self.waiting.append(callback)
        self.patient.append(patient)

    def commit(self) -> None:
        waiting, self.waiting = self.waiting, []
        for callback in waiting:
            callback()


class Harness:
    """A broker on a fake clock and a memory store."""

    def __init__(
        self,
        settings: BrokerSettings | None = None,
        store: Any = None,
        authenticate: Authenticate | None = None,
        clock: FakeClock | None = None,
    ) -> None:
        self.settings = settings or BrokerSettings()
        self.clock = clock or FakeClock()
        self.store = store if store is not None else MemoryStore()
        self.broker = Broker(self.settings, self.store, self.clock, authenticate)
        self._peers = 0

    def client(self, level: int = 4) -> Client:
        self._peers += 1
        return Client(self.broker, level, f"127.0.0.1:{50000 + self._peers}")

    def connected(self, client_id: str = "client", level: int = 4, **kwargs: Any) -> Client:
        """A client past a successful CONNACK."""
        client = self.client(level)
        connack = client.connect(client_id, **kwargs)
        assert connack.reason_code == 0, connack
        return client

    def advance(self, seconds: float = 0.0) -> int:
        """Move time on and run the timers that fell due; return how many ran."""
        self.clock.advance(seconds)
        return self.broker.scheduler.run_due()


def _frame(first: int, body: bytes) -> bytes:
    length = len(body)
    header = bytearray((first,))
    while True:
        digit, length = length % 128, length // 128
        header.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(header) + body


def settings(**overrides: Any) -> BrokerSettings:
    s = BrokerSettings()
    for key, value in overrides.items():
        if not hasattr(s, key):
            raise AttributeError(key)
        setattr(s, key, value)
    return s


HarnessFactory = Callable[..., Harness]
