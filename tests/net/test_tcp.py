"""The TCP/TLS shell: coalesced writes, close after flush, backpressure, limits, TLS.

A small fake Connection stands in for the broker core, so each test checks only what
`mqttd.net.tcp` does with real loopback sockets. Every socket test runs on both the
standard asyncio loop and uvloop (what `mqttd` uses in production).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path

import pytest
from support.fake_net import FakeBroker, FakeConnection, Run, port_of, read_until_eof
from support.selfsigned import self_signed

from mqttd.net import tcp
from mqttd.net.tcp import (
    HIGH_WATER,
    ListenerConnections,
    TcpSink,
    format_peer,
    serve_tcp,
    server_ssl_context,
)

# -- the sink on its own ---------------------------------------------------------------------


class RecordingTransport(asyncio.Transport):
    """Records write/close/abort calls in order."""

    def __init__(self, half_close: bool = True) -> None:
        super().__init__()
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False
        self.half_close = half_close  # False: like a TLS transport
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(("write", bytes(data)))

    def close(self) -> None:
        self.calls.append(("close", b""))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", b""))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.calls.append(("pause_reading", b""))
        self.reading = False

    def resume_reading(self) -> None:
        self.calls.append(("resume_reading", b""))
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def can_write_eof(self) -> bool:
        return self.half_close

    def write_eof(self) -> None:
        self.calls.append(("write_eof", b""))

    def get_write_buffer_size(self) -> int:
        return 0


async def test_writes_in_one_iteration_become_one_transport_write() -> None:
    transport = RecordingTransport()
    sink = TcpSink(transport, asyncio.get_running_loop())
    sink.write(b"\x20\x02")
    sink.write(b"\x00\x00")
    sink.write(b"\x30\x03abc")
    assert transport.calls == []  # nothing goes out before the loop turns
    await asyncio.sleep(0)
    assert transport.calls == [("write", b"\x20\x02\x00\x00\x30\x03abc")]
    sink.write(b"next")
    await asyncio.sleep(0)
    assert transport.calls[1:] == [("write", b"next")]


async def test_close_flushes_queued_bytes_first_and_drops_later_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tcp, "LINGER", 0.01)
    transport = RecordingTransport()
    sink = TcpSink(transport, asyncio.get_running_loop())
    sink.write(b"last")
    sink.write(b"words")
    sink.close()
    sink.write(b"too late")
    sink.close()  # idempotent
    await asyncio.sleep(0)
    # Lingering: FIN after the last words, the socket closed only after LINGER.
    assert transport.calls == [("write", b"lastwords"), ("write_eof", b"")]
    assert sink.closed
    await asyncio.sleep(0.05)
    assert transport.calls[2:] == [("close", b"")]


async def test_close_resumes_a_paused_socket_so_the_client_is_read_to_its_eof() -> None:
    transport = RecordingTransport()
    sink = TcpSink(transport, asyncio.get_running_loop())
    sink.pause_reading()
    sink.write(b"\xe0\x01\x93")
    sink.close()
    assert [name for name, _ in transport.calls] == [
        "pause_reading",
        "write",
        "write_eof",
        "resume_reading",
    ]
    sink.lost()  # the client closed: the linger timer is cancelled
    await asyncio.sleep(0)


@pytest.mark.parametrize("half_close", [True, False])
async def test_close_is_immediate_with_nothing_to_say_or_without_half_close(
    half_close: bool,
) -> None:
    transport = RecordingTransport(half_close)
    sink = TcpSink(transport, asyncio.get_running_loop())
    if not half_close:
        sink.write(b"said")
    sink.close()
    assert [name for name, _ in transport.calls][-1] == "close"


async def test_abort_drops_queued_bytes() -> None:
    transport = RecordingTransport()
    sink = TcpSink(transport, asyncio.get_running_loop())
    sink.write(b"never sent")
    sink.abort()
    await asyncio.sleep(0)
    assert transport.calls == [("abort", b"")]


async def test_pause_and_resume_reading_reach_the_transport_until_it_closes() -> None:
    transport = RecordingTransport()
    sink = TcpSink(transport, asyncio.get_running_loop())
    sink.pause_reading()
    sink.resume_reading()
    sink.close()
    sink.pause_reading()  # a closing transport is left alone
    assert [name for name, _ in transport.calls] == ["pause_reading", "resume_reading", "close"]


@pytest.mark.parametrize(
    ("peername", "text"),
    [
        (("127.0.0.1", 5000), "127.0.0.1:5000"),
        (("::1", 5000, 0, 0), "[::1]:5000"),
        (None, "?"),
    ],
)
def test_format_peer(peername: object, text: str) -> None:
    assert format_peer(peername) == text


# -- real sockets ----------------------------------------------------------------------------


def test_bytes_flow_both_ways_and_replies_are_coalesced(run: Run) -> None:
    def answer(conn: FakeConnection, data: bytes) -> None:
        for piece in (b"one,", b"two,", b"three"):  # three writes, one handling
            conn.sink.write(piece)

    async def scenario() -> None:
        broker = FakeBroker(answer)
        server = await serve_tcp(broker, "127.0.0.1", 0, name="plain")
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        conn = await broker.arrived.get()
        assert conn.listener == "plain"
        local_port = writer.get_extra_info("sockname")[1]
        assert conn.peer == f"127.0.0.1:{local_port}"
        writer.write(b"\x10\x00")
        assert await reader.readexactly(len(b"one,two,three")) == b"one,two,three"
        assert bytes(conn.received) == b"\x10\x00"
        writer.close()
        await conn.lost.wait()
        server.close()
        await server.wait_closed()

    run(scenario())


def test_accepted_sockets_have_nodelay_and_a_high_water_mark(run: Run) -> None:
    async def scenario() -> None:
        broker = FakeBroker()
        server = await serve_tcp(broker, "127.0.0.1", 0)
        _, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        conn = await broker.arrived.get()
        assert isinstance(conn.sink, TcpSink)
        transport = conn.sink._transport
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert transport.get_write_buffer_limits()[1] == HIGH_WATER
        writer.close()
        await conn.lost.wait()
        server.close()

    run(scenario())


def test_close_sends_what_was_written_then_eof(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    # The client keeps its side open: the socket closes when the linger ends (shortened).
    monkeypatch.setattr(tcp, "LINGER", 0.2)

    def refuse(conn: FakeConnection, data: bytes) -> None:
        conn.sink.write(b"\x20\x02")
        conn.sink.write(b"\x00\x87")
        conn.sink.close()

    async def scenario() -> None:
        broker = FakeBroker(refuse)
        server = await serve_tcp(broker, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        writer.write(b"hello")
        assert await read_until_eof(reader) == b"\x20\x02\x00\x87"
        conn = broker.connections[0]
        await conn.lost.wait()
        assert conn.lost_calls == 1
        writer.close()
        server.close()

    run(scenario())


def test_a_slow_reader_is_reported_unwritable_then_writable(run: Run) -> None:
    async def scenario() -> None:
        broker = FakeBroker()
        server = await serve_tcp(broker, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        conn = await broker.arrived.get()
        chunk = b"x" * 65536
        total = 0
        # The client does not read: once the kernel buffers are full the transport's
        # buffer passes HIGH_WATER and the Connection hears about it.
        while not conn.writable and total < 64 * 1024 * 1024:
            conn.sink.write(chunk)
            total += len(chunk)
            await asyncio.sleep(0)
        assert conn.writable == [False]
        received = 0
        while received < total:
            received += len(await reader.read(1 << 20))
        assert conn.writable == [False, True]
        writer.close()
        await conn.lost.wait()
        server.close()

    run(scenario())


def test_abort_all_drops_sockets_that_do_not_close(run: Run) -> None:
    async def scenario() -> None:
        broker = FakeBroker()
        connections = ListenerConnections()
        server = await serve_tcp(broker, "127.0.0.1", 0, connections=connections)
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        conn = await broker.arrived.get()
        assert not await connections.wait_closed(0.05)
        connections.abort_all()
        assert await connections.wait_closed(5)
        await conn.lost.wait()
        assert await read_until_eof(reader) == b""
        writer.close()
        server.close()

    run(scenario())


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost/127.0.0.1 and its key."""
    return self_signed(tmp_path_factory.mktemp("tls"))


def client_context(cert: Path, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    if maximum is not None:
        context.maximum_version = maximum
    return context


def test_tls_listener_serves_the_same_protocol(run: Run, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate

    def echo(conn: FakeConnection, data: bytes) -> None:
        conn.sink.write(data.upper())

    async def scenario() -> None:
        broker = FakeBroker(echo)
        context = server_ssl_context(str(cert), str(key))
        server = await serve_tcp(broker, "127.0.0.1", 0, ssl=context, name="mqtts")
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port_of(server), ssl=client_context(cert), server_hostname="localhost"
        )
        writer.write(b"secret")
        assert await reader.readexactly(6) == b"SECRET"
        conn = broker.connections[0]
        assert conn.listener == "mqtts"
        writer.close()
        await conn.lost.wait()
        server.close()

    run(scenario())


def test_tls_min_version_refuses_older_clients(run: Run, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate

    async def scenario() -> None:
        broker = FakeBroker()
        context = server_ssl_context(str(cert), str(key), min_version="1.3")
        server = await serve_tcp(broker, "127.0.0.1", 0, ssl=context)
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await asyncio.open_connection(
                "127.0.0.1",
                port_of(server),
                ssl=client_context(cert, maximum=ssl.TLSVersion.TLSv1_2),
                server_hostname="localhost",
            )
        assert broker.connections == []
        server.close()

    run(scenario())


def test_required_client_certificate_refuses_clients_without_one(
    run: Run, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate

    async def scenario() -> None:
        broker = FakeBroker()
        context = server_ssl_context(
            str(cert), str(key), cafile=str(cert), require_certificate=True
        )
        server = await serve_tcp(broker, "127.0.0.1", 0, ssl=context)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port_of(server), ssl=client_context(cert), server_hostname="localhost"
        )
        # TLS 1.3: the server checks the client's (absent) certificate after the client
        # thinks the handshake is done, so the refusal shows up as the first read failing.
        with pytest.raises((ssl.SSLError, ConnectionResetError, asyncio.IncompleteReadError)):
            await reader.readexactly(1)
        assert broker.connections == []
        writer.close()
        server.close()

    run(scenario())


def test_ssl_context_errors() -> None:
    with pytest.raises(OSError):
        server_ssl_context("/nonexistent/server.crt")
    with pytest.raises(ValueError, match="cafile"):
        server_ssl_context("/nonexistent/server.crt", require_certificate=True)


# -- with the real broker core -------------------------------------------------------------


def test_a_raw_connect_gets_a_connack_from_the_real_broker(run: Run) -> None:
    from mqttd.broker.broker import Broker
    from mqttd.broker.clock import MonotonicClock
    from mqttd.broker.settings import BrokerSettings
    from mqttd.store.memory import MemoryStore

    async def scenario() -> None:
        broker = Broker(BrokerSettings(), MemoryStore(), MonotonicClock())
        await broker.start()
        server = await serve_tcp(broker, "127.0.0.1", 0, name="smoke")
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        # MQTT 3.1.1 CONNECT: clean session, keep alive 60, client id "smoke".
        writer.write(b"\x10\x11\x00\x04MQTT\x04\x02\x00\x3c\x00\x05smoke")
        assert await reader.readexactly(4) == b"\x20\x02\x00\x00"
        [connection] = broker.connections
        assert (connection.client_id, connection.listener) == ("smoke", "smoke")
        writer.write(b"\xc0\x00")  # PINGREQ
        assert await reader.readexactly(2) == b"\xd0\x00"  # PINGRESP
        writer.write(b"\xe0\x00")  # DISCONNECT
        assert await reader.read() == b""
        server.close()
        await broker.stop()

    run(scenario())


def test_a_plain_client_on_a_tls_port_gets_a_log_line(
    run: Run, certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = certificate
    caplog.set_level(logging.INFO, logger="mqttd.net")

    async def scenario() -> None:
        broker = FakeBroker()
        context = server_ssl_context(str(cert), str(key))
        server = await serve_tcp(broker, "127.0.0.1", 0, ssl=context, name="mqtts")
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        writer.write(bytes.fromhex("101000044d5154540402003c000461626364"))  # CONNECT
        assert await asyncio.wait_for(reader.read(100), 5) == b""  # dropped
        writer.close()
        assert broker.connections == []
        server.close()

    run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.name == "mqttd.net"]
    assert lines == [
        "mqtts: TLS handshake failed (WRONG_VERSION_NUMBER): not TLS, "
        "a plain MQTT (or HTTP) client on this TLS port?"
    ]
