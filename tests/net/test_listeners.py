"""What every plain-TCP listener owes the broker, run on both kinds: asyncio's transports
(net/tcp.py, which TLS keeps) and our own epoll (net/epoll_tcp.py, plain TCP's default).

A fake Connection stands in for the broker core (tests/support/fake_net.py); each test
runs on asyncio's loop and on uvloop, for each listener. What only one kind has (the
transport's write buffer, the epoll's partial writes and lingering) is tested in
test_tcp.py and test_epoll_tcp.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from support.fake_net import FakeBroker, FakeConnection, Run, port_of, read_until_eof, until

from mqttd.net import epoll_tcp
from mqttd.net.epoll_tcp import serve_epoll_tcp
from mqttd.net.tcp import ListenerConnections, Sink, serve_tcp

Serve = Callable[..., Awaitable[Any]]


@pytest.fixture(params=["transports", "epoll"])
def serve(request: pytest.FixtureRequest) -> Serve:
    """`serve_tcp` or `serve_epoll_tcp`, as the parameter names."""
    if request.param == "epoll":
        if not epoll_tcp.AVAILABLE:
            pytest.skip("epoll is Linux's")
        return serve_epoll_tcp
    return serve_tcp


async def stop(server: Any) -> None:
    server.close()
    await asyncio.wait_for(server.wait_closed(), 5)


def test_peer_closing_calls_connection_lost_once(run: Run, serve: Serve) -> None:
    async def scenario() -> None:
        broker = FakeBroker()
        server = await serve(broker, "127.0.0.1", 0)
        _, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        conn = await broker.arrived.get()
        writer.close()
        await conn.lost.wait()
        conn.sink.write(b"to nobody")  # ignored, not an error
        conn.sink.close()
        conn.sink.pause_reading()
        conn.sink.resume_reading()
        await asyncio.sleep(0.05)
        assert conn.lost_calls == 1
        await stop(server)

    run(scenario())


def test_pause_reading_holds_bytes_back_until_resumed(run: Run, serve: Serve) -> None:
    async def scenario() -> None:
        broker = FakeBroker()
        server = await serve(broker, "127.0.0.1", 0)
        _, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        conn = await broker.arrived.get()
        conn.sink.pause_reading()
        writer.write(b"held")
        await writer.drain()
        await asyncio.sleep(0.1)
        assert conn.received == b""
        conn.sink.resume_reading()
        await until(lambda: bool(conn.received), "the held bytes arrived")
        assert conn.received == b"held"
        writer.close()
        await conn.lost.wait()
        await stop(server)

    run(scenario())


def test_max_connections_refuses_the_extra_socket(run: Run, serve: Serve) -> None:
    async def scenario() -> None:
        broker = FakeBroker()
        connections = ListenerConnections(max_connections=1)
        server = await serve(broker, "127.0.0.1", 0, connections=connections)
        _, first = await asyncio.open_connection("127.0.0.1", port_of(server))
        await broker.arrived.get()
        second_reader, second = await asyncio.open_connection("127.0.0.1", port_of(server))
        assert await read_until_eof(second_reader) == b""  # closed straight away
        assert len(broker.connections) == 1
        assert len(connections) == 1
        first.close()
        await broker.connections[0].lost.wait()
        assert len(connections) == 0
        _, third = await asyncio.open_connection("127.0.0.1", port_of(server))
        await broker.arrived.get()  # a place is free again
        second.close()
        third.close()
        await until(lambda: len(connections) == 0, "the third socket closed")
        await stop(server)

    run(scenario())


def test_a_failing_connection_drops_its_socket_not_the_listener(run: Run, serve: Serve) -> None:
    def explode(conn: FakeConnection, data: bytes) -> None:
        raise RuntimeError("bug in the core")

    async def scenario() -> None:
        broker = FakeBroker(explode)
        server = await serve(broker, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        conn = await broker.arrived.get()
        writer.write(b"boom")
        assert await read_until_eof(reader) == b""
        await conn.lost.wait()
        writer.close()
        _, again = await asyncio.open_connection("127.0.0.1", port_of(server))
        await broker.arrived.get()
        again.close()
        await stop(server)

    run(scenario())


def test_a_broker_refusing_a_socket_drops_it_not_the_listener(run: Run, serve: Serve) -> None:
    class Refusing(FakeBroker):
        def connection(
            self, sink: Sink, peer: str, listener: str = "tcp", identity: str | None = None
        ) -> FakeConnection:
            if not self.connections:
                self.connections.append(FakeConnection(sink, peer, listener))
                raise RuntimeError("bug in the core")
            return super().connection(sink, peer, listener)

    async def scenario() -> None:
        broker = Refusing()
        connections = ListenerConnections()
        server = await serve(broker, "127.0.0.1", 0, connections=connections)
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        assert await read_until_eof(reader) == b""
        _, again = await asyncio.open_connection("127.0.0.1", port_of(server))
        await broker.arrived.get()
        assert len(connections) == 1  # the refused socket was counted out
        writer.close()
        again.close()
        await until(lambda: len(connections) == 0, "the second socket closed")
        await stop(server)

    run(scenario())
