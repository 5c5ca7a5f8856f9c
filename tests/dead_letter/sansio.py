"""A broker core on a fake clock, driven by byte-buffer clients (no sockets, no sleeping).

What the dead-letter unit tests need and no more: clients that connect (3.1.1 or 5.0,
with CONNECT properties), subscribe, publish, acknowledge and read back what the broker
wrote; `advance` moves the clock and runs the timers due, which is also what publishes
the dead letters waiting for their flush.
"""

from __future__ import annotations

from support.core import Harness, settings

from mqttd.broker.dead_letter import DeadLetterSettings, DropReason
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
)
from mqttd.store.memory import MemoryStore

ALL_REASONS = frozenset(DropReason)


class Client:
    """One client connection to the core."""

    def __init__(self, core: Core, level: int) -> None:
        self.core = core
        self.level = level
        # The shared driver moves the bytes; this class keeps the dead-letter tests'
        # shortcuts (automatic packet ids, retained messages returned by subscribe).
        self.wire = core.harness.client(level)
        self.sink = self.wire.sink
        self.conn = self.wire.conn
        self._held: list[Packet] = []  # what came after the CONNACK or SUBACK
        self.packet_id = 0

    def send(self, *packets: Packet) -> None:
        self.wire.send(*packets)

    def packets(self) -> list[Packet]:
        held, self._held = self._held, []
        return held + self.wire.packets()

    def connect(
        self, client_id: str, clean: bool = True, properties: Properties | None = None
    ) -> Client:
        self.send(Connect(client_id, self.level, clean, 0, None, None, None, properties))
        connack, *self._held = self.packets()
        assert isinstance(connack, Connack) and connack.reason_code == 0, connack
        return self

    def subscribe(self, topic_filter: str, qos: int = 0) -> list[Publish]:
        """Subscribe; return the retained messages that came with the SUBACK."""
        self.send(Subscribe(self._next_id(), [Subscription(topic_filter, qos)]))
        got = self.packets()
        assert isinstance(got[0], SubAck) and got[0].reason_codes == [qos], got
        return [p for p in got[1:] if isinstance(p, Publish)]

    def publish(
        self,
        topic: str,
        payload: bytes = b"x",
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        packet_id = self._next_id() if qos else None
        self.send(Publish(topic, payload, qos, retain, False, packet_id, properties))

    def publishes(self) -> list[Publish]:
        """The PUBLISH packets written since the last read (acks are skipped)."""
        return [p for p in self.packets() if isinstance(p, Publish)]

    def ack(self, publish: Publish) -> None:
        assert publish.qos == 1 and publish.packet_id is not None
        self.send(PubAck(publish.packet_id))

    def disconnect(self, properties: Properties | None = None) -> None:
        self.send(Disconnect(0, properties))

    def _next_id(self) -> int:
        self.packet_id = self.packet_id % 65_535 + 1
        return self.packet_id


class Core:
    """A started broker on a FakeClock and a MemoryStore, dead letters as asked."""

    def __init__(
        self,
        dead_letter: DeadLetterSettings | None = None,
        store: MemoryStore | None = None,
        **overrides: object,
    ) -> None:
        self.harness = Harness(settings(**overrides), store=store)
        self.clock = self.harness.clock
        self.store = self.harness.store
        self.broker = self.harness.broker
        self.broker.dead_letters.configure(
            dead_letter if dead_letter is not None else DeadLetterSettings(enabled=True)
        )

    async def start(self) -> Core:
        await self.broker.start()
        return self

    @property
    def stats(self) -> object:
        return self.broker.stats

    def client(
        self,
        client_id: str,
        level: int = 5,
        clean: bool = True,
        properties: Properties | None = None,
    ) -> Client:
        """A connected client."""
        return Client(self, level).connect(client_id, clean, properties)

    def advance(self, seconds: float = 0.0) -> int:
        """Move the clock on and run the timers due (the dead-letter flush among them)."""
        return self.harness.advance(seconds)


def user_properties(publish: Publish) -> dict[str, str]:
    """The user properties of a delivery, first value of each name."""
    props = publish.properties
    found: dict[str, str] = {}
    for name, value in props.user_property if props is not None else ():
        found.setdefault(name, value)
    return found
