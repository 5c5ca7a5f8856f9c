"""A broker core on a fake clock with clients that are only byte buffers (no sockets).

Packets are built with mqttd's encoder and the broker's output is read back with its
reader; what these tests check is the figures the core counts and $SYS reports, so
every byte fed and written is also tallied here, independently of `BrokerStats`.
"""

from __future__ import annotations

from support.core import Client, Harness, settings

from mqttd.protocol import (
    Connack,
    Connect,
    Disconnect,
    Packet,
    Properties,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    encode,
)


class CoreClient:
    """One client of the core: packets in, packets out, bytes and packets tallied."""

    def __init__(self, core: Core, level: int, listener: str = "mqtt") -> None:
        self.core = core
        self.level = level
        # The shared driver moves the bytes; this class adds the tallies and the
        # figures-oriented shortcuts the $SYS and log tests read best.
        self.wire = Client(core.broker, level, f"10.0.0.{len(core.clients) + 1}:5000", listener)
        self.sink = self.wire.sink
        self.conn = self.wire.conn
        core.clients.append(self)

    def send(self, *packets: Packet) -> None:
        data = b"".join(encode(p, self.level) for p in packets)
        self.core.bytes_fed += len(data)
        self.core.packets_fed += len(packets)
        self.wire.send_bytes(data)

    def packets(self) -> list[Packet]:
        return self.wire.packets()

    def connect(self, client_id: str, clean: bool = True, expiry: int | None = None) -> Connack:
        props = Properties(session_expiry_interval=expiry) if expiry is not None else None
        self.send(Connect(client_id, self.level, clean, 0, None, None, None, props))
        [connack] = self.packets()
        assert isinstance(connack, Connack) and connack.reason_code == 0, connack
        return connack

    def subscribe(self, topic_filter: str, qos: int = 0, packet_id: int = 1) -> list[Packet]:
        self.send(Subscribe(packet_id, [Subscription(topic_filter, qos)]))
        got = self.packets()
        assert isinstance(got[0], SubAck), got
        return got[1:]

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, packet_id: int = 1
    ) -> None:
        self.send(Publish(topic, payload, qos, retain, False, packet_id if qos else None))

    def publishes(self) -> list[Publish]:
        got = self.packets()
        assert all(isinstance(p, Publish | PubAck) for p in got), got
        return [p for p in got if isinstance(p, Publish)]

    def disconnect(self) -> None:
        self.send(Disconnect(0))


class Core:
    """A started broker on a FakeClock and a MemoryStore, and its clients."""

    def __init__(self, **overrides: object) -> None:
        self.harness = Harness(settings(**overrides))
        self.broker = self.harness.broker
        self.clock = self.harness.clock
        self.advance = self.harness.advance
        self.clients: list[CoreClient] = []
        self.bytes_fed = 0
        self.packets_fed = 0

    async def start(self) -> Core:
        await self.broker.start()
        return self

    def client(self, level: int = 4, listener: str = "mqtt") -> CoreClient:
        return CoreClient(self, level, listener)

    @property
    def bytes_written(self) -> int:
        return sum(len(c.sink.buffer) for c in self.clients)
