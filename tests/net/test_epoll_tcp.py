"""The plain-TCP listener on one epoll (mqttd/net/epoll_tcp.py) with real loopback sockets.

A fake Connection stands in for the broker core (tests/support/fake_net.py); every test
runs on asyncio's loop and on uvloop. What is checked is what a transport gave before:
coalesced writes, partial writes finished on EPOLLOUT with back-pressure signals, pausing
reads, lingering close, a vanished peer, max_connections, shutdown.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import struct

import pytest
from support.fake_net import FakeBroker, FakeConnection, Run, port_of, read_until_eof, until

from mqttd.net import epoll_tcp, tcp
from mqttd.net.epoll_tcp import EpollServer, EpollSocket, serve_epoll_tcp
from mqttd.net.tcp import HIGH_WATER, ListenerConnections

pytestmark = pytest.mark.skipif(not epoll_tcp.AVAILABLE, reason="epoll is Linux's")


def sink_of(conn: FakeConnection) -> EpollSocket:
    assert isinstance(conn.sink, EpollSocket)
    return conn.sink


async def slow_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client with a small receive buffer: the server's writes soon stop fitting."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def stop(server: EpollServer) -> None:
    server.close()
    await asyncio.wait_for(server.wait_closed(), 5)


def test_bytes_flow_both_ways_and_replies_are_coalesced(run: Run) -> None:
    sends: list[int] = []

    def answer(conn: FakeConnection, data: bytes) -> None:
        sink = sink_of(conn)
        for piece in (b"one,", b"two,", b"three"):  # three writes, one handling
            conn.sink.write(piece)
        sends.append(len(sink._buffer or ()))

    async def scenario() -> None:
        broker = FakeBroker(answer)
        server = await serve_epoll_tcp(broker, "127.0.0.1", 0, name="plain")
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        conn = await broker.arrived.get()
        assert conn.listener == "plain"
        assert conn.peer == f"127.0.0.1:{writer.get_extra_info('sockname')[1]}"
        writer.write(b"\x10\x00")
        assert await reader.readexactly(len(b"one,two,three")) == b"one,two,three"
        assert bytes(conn.received) == b"\x10\x00"
        assert sends == [3]  # all three waited for one flush
        writer.close()
        await conn.lost.wait()
        assert conn.lost_calls == 1
        await stop(server)

    run(scenario())


def test_accepted_sockets_have_nodelay_and_are_non_blocking(run: Run) -> None:
    async def scenario() -> None:
        broker = FakeBroker()
        server = await serve_epoll_tcp(broker, "127.0.0.1", 0)
        _, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        conn = await broker.arrived.get()
        fd = sink_of(conn).fd
        assert not os.get_blocking(fd)
        sock = socket.socket(fileno=fd)
        try:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            sock.detach()
        writer.close()
        await conn.lost.wait()
        await stop(server)

    run(scenario())


def test_a_partial_write_finishes_on_epollout_with_backpressure_signals(run: Run) -> None:
    async def scenario() -> None:
        broker = FakeBroker()
        server = await serve_epoll_tcp(broker, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        conn = await broker.arrived.get()
        sink = sink_of(conn)
        # The client does not read: once the kernel's buffers are full the rest waits in
        # ours, and past HIGH_WATER the Connection is told it is not writable.
        written = bytearray()
        n = 0
        while not conn.writable and n < 4096:
            chunk = struct.pack(">I", n) * 4096  # numbered: order is checked below
            sink.write(chunk)
            written += chunk
            n += 1
            await asyncio.sleep(0)
        assert conn.writable == [False]
        assert sink._unsent is not None and len(sink._unsent) > HIGH_WATER
        received = bytearray()
        while len(received) < len(written):
            received += await reader.read(1 << 20)
        assert received == written
        await until(lambda: sink._unsent is None, "the unsent buffer emptied")
        assert conn.writable == [False, True]
        writer.close()
        await conn.lost.wait()
        await stop(server)

    run(scenario())


def test_a_peer_resetting_while_reading_is_paused_and_bytes_wait_is_lost(run: Run) -> None:
    async def scenario() -> None:
        broker = FakeBroker()
        server = await serve_epoll_tcp(broker, "127.0.0.1", 0)
        client = socket.create_connection(("127.0.0.1", port_of(server)))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn = await broker.arrived.get()
        sink = sink_of(conn)
        sink.pause_reading()
        n = 0
        while sink._unsent is None and n < 4096:
            sink.write(b"x" * 65536)
            n += 1
            await asyncio.sleep(0)
        assert sink._unsent is not None  # EPOLLOUT is watched, EPOLLIN is not
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset
        await asyncio.wait_for(conn.lost.wait(), 5)
        assert conn.lost_calls == 1 and sink.closed and sink.fd == -1
        await stop(server)

    run(scenario())


def test_close_sends_what_was_written_then_eof_and_lingers(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client keeps its side open: the socket closes when the linger ends (shortened).
    monkeypatch.setattr(tcp, "LINGER", 0.2)

    def refuse(conn: FakeConnection, data: bytes) -> None:
        conn.sink.write(b"\x20\x02")
        conn.sink.write(b"\x00\x87")
        conn.sink.close()
        conn.sink.write(b"after close")  # dropped

    async def scenario() -> None:
        broker = FakeBroker(refuse)
        server = await serve_epoll_tcp(broker, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        writer.write(b"hello")
        assert await read_until_eof(reader) == b"\x20\x02\x00\x87"
        conn = broker.connections[0]
        writer.write(b"read and discarded while lingering")
        assert not conn.lost.is_set()
        await asyncio.wait_for(conn.lost.wait(), 5)
        assert conn.lost_calls == 1
        assert conn.received == b"hello"
        writer.close()
        await stop(server)

    run(scenario())


def test_lingering_ends_at_the_clients_eof(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcp, "LINGER", 30.0)  # must not be what ends it

    async def scenario() -> None:
        broker = FakeBroker()
        server = await serve_epoll_tcp(broker, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        conn = await broker.arrived.get()
        conn.sink.write(b"bye")
        conn.sink.close()
        assert await read_until_eof(reader) == b"bye"
        writer.close()
        await asyncio.wait_for(conn.lost.wait(), 5)
        await stop(server)

    run(scenario())


def test_close_with_unsent_bytes_sends_them_all_before_eof(run: Run) -> None:
    async def scenario() -> None:
        broker = FakeBroker()
        server = await serve_epoll_tcp(broker, "127.0.0.1", 0)
        reader, writer = await slow_client(port_of(server))
        conn = await broker.arrived.get()
        sink = sink_of(conn)
        payload = bytes(range(256)) * 65536  # 16 MiB: more than the kernel takes at once
        sink.write(payload)
        sink.flush()
        assert sink._unsent is not None
        sink.close()
        assert await read_until_eof(reader) == payload
        writer.close()
        await asyncio.wait_for(conn.lost.wait(), 5)
        await stop(server)

    run(scenario())


def test_close_with_nothing_to_say_closes_at_once(run: Run) -> None:
    async def scenario() -> None:
        broker = FakeBroker()
        server = await serve_epoll_tcp(broker, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        conn = await broker.arrived.get()
        conn.sink.close()
        assert sink_of(conn).fd == -1
        assert not conn.lost.is_set()  # connection_lost comes from the loop, not from close
        await conn.lost.wait()
        assert await read_until_eof(reader) == b""
        writer.close()
        await stop(server)

    run(scenario())


def test_a_write_to_a_reset_peer_drops_the_socket(run: Run) -> None:
    async def scenario() -> None:
        broker = FakeBroker()
        server = await serve_epoll_tcp(broker, "127.0.0.1", 0)
        client = socket.create_connection(("127.0.0.1", port_of(server)))
        conn = await broker.arrived.get()
        sink = sink_of(conn)
        sink.pause_reading()  # the reset is only noticed by writing
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        await asyncio.sleep(0.05)
        for _ in range(3):
            sink.write(b"x" * 1000)
            sink.flush()
        await asyncio.wait_for(conn.lost.wait(), 5)
        assert conn.lost_calls == 1
        await stop(server)

    run(scenario())


def test_shutdown_waits_for_sockets_then_aborts_them_and_releases_the_epoll(run: Run) -> None:
    async def scenario() -> None:
        broker = FakeBroker()
        connections = ListenerConnections()
        server = await serve_epoll_tcp(broker, "127.0.0.1", 0, connections=connections)
        port = port_of(server)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = await broker.arrived.get()
        server.close()
        assert not server.is_serving()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)  # not accepting
        # The open socket still works until the end of the shutdown.
        writer.write(b"still here")
        await until(lambda: conn.received == b"still here", "a read after close()")
        assert not await connections.wait_closed(0.05)
        epoll = server._serving.epoll
        assert not epoll.closed
        connections.abort_all()
        assert await connections.wait_closed(5)
        await asyncio.wait_for(server.wait_closed(), 5)
        assert epoll.closed
        await conn.lost.wait()
        assert await read_until_eof(reader) == b""
        writer.close()

    run(scenario())


def test_many_connections_each_get_their_own_bytes(run: Run) -> None:
    def echo(conn: FakeConnection, data: bytes) -> None:
        conn.sink.write(data.upper())

    async def client(port: int, i: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        message = f"client {i};".encode()
        answer = b""
        for _ in range(3):
            writer.write(message)
            answer += await reader.readexactly(len(message))
        writer.close()
        return answer

    async def scenario() -> None:
        broker = FakeBroker(echo)
        connections = ListenerConnections()
        server = await serve_epoll_tcp(broker, "127.0.0.1", 0, connections=connections)
        port = port_of(server)
        for wave in range(2):  # the second wave reuses the first's fd numbers
            answers = await asyncio.gather(*(client(port, i) for i in range(150)))
            assert answers == [f"CLIENT {i};".encode() * 3 for i in range(150)]
            await until(lambda: len(connections) == 0, f"wave {wave} closed")
        assert len(broker.connections) == 300
        await until(lambda: all(c.lost.is_set() for c in broker.connections), "all lost")
        assert all(conn.lost_calls == 1 for conn in broker.connections)
        await stop(server)

    run(scenario())


def test_a_listener_binds_every_address_of_its_host(run: Run) -> None:
    async def scenario() -> None:
        infos = socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)
        families = {info[0] for info in infos}
        server = await serve_epoll_tcp(FakeBroker(), "localhost", 0)
        assert {sock.family for sock in server.sockets} == families
        await stop(server)
        # A port in use is a clear OSError (the app turns it into a StartupError).
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        try:
            with pytest.raises(OSError, match="bind"):
                await serve_epoll_tcp(FakeBroker(), "127.0.0.1", taken.getsockname()[1])
        finally:
            taken.close()

    run(scenario())


def test_the_loop_watches_one_fd_per_listener_not_one_per_socket(run: Run) -> None:
    async def scenario() -> None:
        broker = FakeBroker()
        server = await serve_epoll_tcp(broker, "127.0.0.1", 0)
        writers = []
        for _ in range(5):
            writers.append((await asyncio.open_connection("127.0.0.1", port_of(server)))[1])
            await broker.arrived.get()
        epoll = server._serving.epoll
        # The sockets are in our epoll; the loop knows the epoll and the listening socket.
        for conn in broker.connections:
            with pytest.raises(FileExistsError):
                epoll.register(sink_of(conn).fd, select.EPOLLIN)
        for writer in writers:
            writer.close()
        await until(lambda: all(c.lost.is_set() for c in broker.connections), "all closed")
        await stop(server)

    run(scenario())
