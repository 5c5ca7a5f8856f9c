"""Helpers of the bridge tests: an async test client, in-process brokers, a fake remote.

`Peer` is a small MQTT client for in-process tests (it runs on the test's event loop,
so it never blocks the brokers running there). It is built on `MqttClient`, the same
connection class the bridge uses, but the QoS flows here are the plain client ones:
it acknowledges what it receives and waits for the acknowledgements of what it sends.

The process-level tests (real mosquitto, mqttd processes) use paho instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from mqttd.app import App
from mqttd.bridge.client import FlowPacket, MqttClient
from mqttd.config import Config, config_from_dict
from mqttd.protocol import (
    Connack,
    Connect,
    PacketReader,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscription,
    encode,
)

TIMEOUT = 5.0


def broker_config(port: int = 0, **sections: Any) -> Config:
    """An in-process broker's config: 127.0.0.1:`port`, no persistence, no $SYS timer."""
    raw: dict[str, Any] = {
        "listeners": [{"port": port}],
        "persistence": {"enabled": False},
        "sys": {"interval": 0},
    }
    raw.update(sections)
    return config_from_dict(raw)


def bridge_table(name: str, port: int, topics: list[dict[str, Any]], **keys: Any) -> dict[str, Any]:
    """A `[[bridge]]` table to 127.0.0.1:`port` with fast reconnects."""
    table: dict[str, Any] = {
        "name": name,
        "addresses": [f"127.0.0.1:{port}"],
        "reconnect_delay_min": 0.05,
        "reconnect_delay_max": 0.3,
        "topics": topics,
    }
    table.update(keys)
    return table


@contextlib.asynccontextmanager
async def started(config: Config) -> AsyncIterator[App]:
    """A started App, stopped on the way out."""
    app = App(config)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll `predicate` until it holds; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


async def bridge_up(app: App, name: str, timeout: float = TIMEOUT) -> None:
    """Wait until the App's bridge `name` is connected to its remote."""
    await wait_for(lambda: app.bridges.get(name) == 1, timeout)


@contextlib.asynccontextmanager
async def bridged(topics: list[dict[str, Any]], **keys: Any) -> AsyncIterator[tuple[App, App]]:
    """Brokers A and B, A bridged to B as "ab" on `topics` (`keys`: more of the table),
    the bridge connected: the set-up of most two-broker tests."""
    async with started(broker_config()) as b:
        bridge = bridge_table("ab", b.port, topics, **keys)
        async with started(broker_config(bridge=[bridge])) as a:
            await bridge_up(a, "ab")
            yield a, b


@dataclass(slots=True)
class Received:
    """One message as a Peer received it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None


class Peer:
    """An async MQTT test client (see the module docstring)."""

    def __init__(self, name: str, level: int) -> None:
        self.name = name
        self.level = level
        self.messages: asyncio.Queue[Received] = asyncio.Queue()
        self.client: MqttClient | None = None
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._next_id = 1

    @classmethod
    async def connect(
        cls,
        port: int,
        client_id: str,
        level: int = 4,
        clean: bool = True,
        properties: Properties | None = None,
        bridge: bool = False,
    ) -> Peer:
        """A connected Peer (`bridge`: with the bridge bit, as a Mosquitto bridge)."""
        peer = cls(client_id, level)
        client = MqttClient(client_id, level, peer)
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: client, "127.0.0.1", port)
        connect = Connect(client_id, level, clean, 30, properties=properties, bridge=bridge)
        if level == 3:
            connect.protocol_name = "MQIsdp"
        await client.connect(connect, TIMEOUT)
        peer.client = client
        return peer

    async def subscribe(self, topic_filter: str, qos: int = 1, **options: Any) -> list[int]:
        """SUBSCRIBE one filter and wait for SUBACK."""
        assert self.client is not None
        return await self.client.subscribe([Subscription(topic_filter, qos, **options)], TIMEOUT)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """PUBLISH and, for QoS 1/2, wait until the flow is complete."""
        assert self.client is not None
        if qos == 0:
            self.client.send(Publish(topic, payload, 0, retain, False, None, properties))
            return
        pid = self._next_id
        self._next_id = pid % 65_535 + 1
        done = self._acks[pid] = asyncio.get_running_loop().create_future()
        self.client.send(Publish(topic, payload, qos, retain, False, pid, properties))
        await asyncio.wait_for(done, TIMEOUT)

    async def expect(self, count: int = 1, timeout: float = TIMEOUT) -> list[Received]:
        """The next `count` messages."""
        return [await asyncio.wait_for(self.messages.get(), timeout) for _ in range(count)]

    async def expect_none(self, duration: float) -> None:
        """Nothing arrives for `duration` seconds."""
        with contextlib.suppress(TimeoutError):
            message = await asyncio.wait_for(self.messages.get(), duration)
            raise AssertionError(f"{self.name}: unexpected {message}")

    async def close(self) -> None:
        """DISCONNECT."""
        if self.client is not None and not self.client.closed.done():
            self.client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.client.closed), TIMEOUT)

    # -- ClientHandler -------------------------------------------------------------------

    def flow_packet(self, client: MqttClient, packet: FlowPacket) -> None:
        if isinstance(packet, Publish):
            self.messages.put_nowait(
                Received(packet.topic, packet.payload, packet.qos, packet.retain, packet.properties)
            )
            if packet.qos == 1:
                assert packet.packet_id is not None
                client.send(PubAck(packet.packet_id))
            elif packet.qos == 2:
                assert packet.packet_id is not None
                client.send(PubRec(packet.packet_id))
        elif isinstance(packet, PubRel):
            client.send(PubComp(packet.packet_id))
        elif isinstance(packet, PubRec):
            client.send(PubRel(packet.packet_id))
        elif isinstance(packet, PubAck | PubComp):
            future = self._acks.pop(packet.packet_id, None)
            if future is not None and not future.done():
                future.set_result(None)

    def client_closed(self, client: MqttClient) -> None:
        pass

    def client_writable(self, client: MqttClient, writable: bool) -> None:
        pass


class FakeRemote:
    """A TCP server speaking just enough MQTT to test how a bridge connects.

    `answer(connect)` returns the CONNACK to send, or None to stay silent (no CONNACK,
    no PINGRESP: a remote that hangs). Every CONNECT received is kept in `connects`.
    SUBSCRIBE is answered with SUBACK granting what was asked.
    """

    def __init__(self, answer: Callable[[Connect], Connack | None]) -> None:
        self.answer = answer
        self.connects: list[Connect] = []
        self.pingresp = True  # False: never answer PINGREQ (a remote that hangs)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._transports: list[asyncio.Transport] = []

    async def start(self) -> FakeRemote:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _FakeProtocol(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for transport in self._transports:
            transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class _FakeProtocol(asyncio.Protocol):
    def __init__(self, remote: FakeRemote) -> None:
        self.remote = remote
        self.reader = PacketReader()
        self.level = 4
        self.silent = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.remote._transports.append(transport)

    def data_received(self, data: bytes) -> None:
        from mqttd.protocol import PingReq, PingResp, SubAck, Subscribe

        assert self.transport is not None
        for packet in self.reader.feed(data):
            if isinstance(packet, Connect):
                self.remote.connects.append(packet)
                self.level = packet.protocol_level
                connack = self.remote.answer(packet)
                if connack is None:
                    self.silent = True
                    continue
                self.transport.write(encode(connack, self.level))
                if connack.reason_code:
                    self.transport.close()
            elif self.silent:
                continue
            elif isinstance(packet, Subscribe):
                codes = [s.qos for s in packet.subscriptions]
                self.transport.write(encode(SubAck(packet.packet_id, codes), self.level))
            elif isinstance(packet, PingReq) and self.remote.pingresp:
                self.transport.write(encode(PingResp(), self.level))
