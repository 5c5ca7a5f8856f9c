"""A fake broker for the network layer's tests (tests/net): each test then checks only
what the listener does with real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from mqttd.net.tcp import Sink

__all__ = ["FakeBroker", "FakeConnection", "Run", "port_of", "read_until_eof", "until"]


class _Server(Protocol):
    @property
    def sockets(self) -> Any: ...


Run = Callable[[Coroutine[Any, Any, None]], None]


class FakeConnection:
    """Records what the shell tells a Connection; `on_data` may answer."""

    def __init__(self, sink: Sink, peer: str, listener: str) -> None:
        self.sink = sink
        self.peer = peer
        self.listener = listener
        self.received = bytearray()
        self.chunks = 0
        self.lost = asyncio.Event()
        self.lost_calls = 0
        self.writable: list[bool] = []
        self.on_data: Callable[[FakeConnection, bytes], None] | None = None

    def data_received(self, data: bytes) -> None:
        self.received += data
        self.chunks += 1
        if self.on_data is not None:
            self.on_data(self, data)

    def connection_lost(self) -> None:
        self.lost_calls += 1
        self.lost.set()

    def writable_changed(self, writable: bool) -> None:
        self.writable.append(writable)


class FakeBroker:
    """Hands out FakeConnections; `on_data` is given to each new one."""

    def __init__(self, on_data: Callable[[FakeConnection, bytes], None] | None = None) -> None:
        self.connections: list[FakeConnection] = []
        self.on_data = on_data
        self.arrived = asyncio.Queue[FakeConnection]()

    def connection(
        self, sink: Sink, peer: str, listener: str = "tcp", identity: str | None = None
    ) -> FakeConnection:
        conn = FakeConnection(sink, peer, listener)
        conn.on_data = self.on_data
        self.connections.append(conn)
        self.arrived.put_nowait(conn)
        return conn


def port_of(server: _Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def read_until_eof(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


async def until(check: Callable[[], object], what: str, tries: int = 200) -> None:
    """Wait (briefly, polling) until `check()` is true."""
    for _ in range(tries):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")
