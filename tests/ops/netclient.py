"""A tiny asyncio MQTT 3.1.1 client over a real socket, and a raw HTTP GET, for App tests."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from mqttd.protocol import (
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketReader,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    encode,
)

TIMEOUT = 5.0

P = TypeVar("P")


class NetClient:
    """One MQTT 3.1.1 connection: send packets, wait for the ones expected."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._decoder = PacketReader(max_packet_size=1 << 28, protocol_level=4)
        self._held: list[Packet] = []
        self.bytes_sent = 0  # what this client wrote, counted independently of the broker
        self.bytes_received = 0

    @classmethod
    async def connect(
        cls, address: tuple[str, int], client_id: str, clean: bool = True
    ) -> NetClient:
        reader, writer = await asyncio.open_connection(*address)
        client = cls(reader, writer)
        client.send(Connect(client_id, 4, clean, 0))
        connack = await client.expect(Connack)
        assert connack.reason_code == 0, connack
        return client

    def send(self, *packets: Packet) -> None:
        data = b"".join(encode(p, 4) for p in packets)
        self.bytes_sent += len(data)
        self.writer.write(data)

    async def next(self) -> Packet:
        while not self._held:
            data = await asyncio.wait_for(self.reader.read(65536), TIMEOUT)
            assert data, "the broker closed the connection"
            self.bytes_received += len(data)
            self._held.extend(self._decoder.feed(data))
        return self._held.pop(0)

    async def expect(self, cls: type[P]) -> P:
        packet = await self.next()
        assert isinstance(packet, cls), packet
        return packet

    async def subscribe(self, topic_filter: str, qos: int = 0) -> None:
        self.send(Subscribe(1, [Subscription(topic_filter, qos)]))
        await self.expect(SubAck)

    async def publish(self, topic: str, payload: bytes, qos: int = 0, packet_id: int = 1) -> None:
        self.send(Publish(topic, payload, qos, False, False, packet_id if qos else None))
        if qos == 1:
            await self.expect(PubAck)

    async def disconnect(self) -> None:
        self.send(Disconnect(0))
        await self.writer.drain()
        self.writer.close()


async def http_request(
    address: tuple[str, int], request: bytes
) -> tuple[str, dict[str, str], bytes]:
    """Send raw request bytes; return (status line, headers lower-cased, body) of the reply."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(request)
    raw = await asyncio.wait_for(reader.read(), TIMEOUT)  # the server closes after one reply
    writer.close()
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw
    status, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        assert colon and name == name.strip(), line
        assert name.lower() not in headers, f"header {name} twice"
        headers[name.lower()] = value.strip()
    return status, headers, body


async def http_get(
    address: tuple[str, int], path: str, method: str = "GET"
) -> tuple[str, dict[str, str], bytes]:
    """A well-formed HTTP/1.1 request for `path`."""
    return await http_request(
        address, f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n".encode()
    )
