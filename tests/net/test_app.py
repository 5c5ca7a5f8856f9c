"""The App in-process: listeners from the config, the ready lines, the timer driver, shutdown.

These run the real broker core behind `running()`, with raw MQTT bytes over loopback.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from pathlib import Path

import pytest
from support.selfsigned import self_signed
from websockets.asyncio.client import connect as ws_connect
from websockets.typing import Subprotocol

from mqttd import __version__
from mqttd import app as app_module
from mqttd.app import App, StartupError, ephemeral_config, running
from mqttd.config import ConfigError, ListenerConfig, TLSConfig, config_from_dict
from mqttd.net import epoll_tcp, tcp
from mqttd.net.epoll_tcp import EpollServer

# MQTT 3.1.1 CONNECT (clean session, keep alive 60, empty client id) and its CONNACK.
CONNECT_311 = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"
CONNACK_311 = b"\x20\x02\x00\x00"
# MQTT 5.0 CONNECT, same fields, no properties.
CONNECT_50 = b"\x10\x0d\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x00"


def connect_packet(client_id: bytes, level: int = 4) -> bytes:
    props = b"\x00" if level == 5 else b""
    body = b"\x00\x04MQTT" + bytes([level, 0x02, 0x00, 0x3C]) + props
    body += len(client_id).to_bytes(2, "big") + client_id
    return bytes([0x10, len(body)]) + body


def subscribe_packet(topic: bytes, packet_id: int = 1) -> bytes:
    body = packet_id.to_bytes(2, "big") + len(topic).to_bytes(2, "big") + topic + b"\x00"
    return bytes([0x82, len(body)]) + body


def publish_packet(topic: bytes, payload: bytes) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + payload
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return b"\x30" + bytes(encoded) + body


async def read_packet(reader: asyncio.StreamReader) -> bytes:
    header = bytearray(await reader.readexactly(1))
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        header.append(byte)
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return bytes(header) + await reader.readexactly(length)


async def mqtt_connect(
    host: str, port: int, connect: bytes = CONNECT_311
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(connect)
    packet = await asyncio.wait_for(read_packet(reader), 5)
    assert packet[0] == 0x20, packet  # CONNACK
    assert packet[3] == 0, packet  # accepted (3.1.1 return code, 5.0 reason code)
    return reader, writer


async def test_running_serves_mqtt_on_a_free_loopback_port() -> None:
    async with running() as app:
        assert app.host == "127.0.0.1" and app.port != 0
        assert app.listeners == {"mqtt": ("127.0.0.1", app.port)}
        assert app.urls == {"mqtt": f"mqtt://127.0.0.1:{app.port}"}
        reader, writer = await asyncio.open_connection(app.host, app.port)
        writer.write(CONNECT_311)
        assert await asyncio.wait_for(read_packet(reader), 5) == CONNACK_311
        assert len(app.broker.connections) == 1
        writer.close()


async def test_ready_lines_come_after_every_listener(caplog: pytest.LogCaptureFixture) -> None:
    config = ephemeral_config()
    config.listeners.append(ListenerConfig(name="second", port=0))
    caplog.set_level(logging.INFO, logger="mqttd")
    async with running(config) as app:
        ours = [r.getMessage() for r in caplog.records if r.name == "mqttd"]
        first, second = app.listeners["mqtt"][1], app.listeners["second"][1]
        assert ours[-3:] == [
            f"mqttd {__version__} listening on mqtt://127.0.0.1:{first}",
            f"mqttd {__version__} listening on mqtt://127.0.0.1:{second}",
            "mqttd ready",
        ]


async def test_plain_tcp_is_served_by_the_epoll_listener() -> None:
    async with running() as app:
        _, writer = await mqtt_connect(app.host, app.port)
        listener = app._listeners[0]
        assert isinstance(listener, app_module._TcpListener)
        assert isinstance(listener.server, EpollServer) == epoll_tcp.AVAILABLE
        assert len(listener.connections) == 1
        writer.close()


async def test_without_epoll_plain_tcp_falls_back_to_transports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(epoll_tcp, "AVAILABLE", False)  # as on a system without epoll
    async with running() as app:
        _, writer = await mqtt_connect(app.host, app.port)
        listener = app._listeners[0]
        assert isinstance(listener, app_module._TcpListener)
        assert isinstance(listener.server, asyncio.Server)
        assert len(listener.connections) == 1
        writer.close()


async def test_stop_tells_mqtt5_clients_and_closes_every_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The clients keep their side open: their sockets close when the linger ends (shortened).
    monkeypatch.setattr(tcp, "LINGER", 0.2)
    async with running() as app:
        # Keep the writers referenced: a collected StreamWriter closes its socket.
        reader5, writer5 = await mqtt_connect(app.host, app.port, CONNECT_50)
        reader3, writer3 = await mqtt_connect(app.host, app.port, CONNECT_311)
        stopping = asyncio.ensure_future(app.stop())
        disconnect = await asyncio.wait_for(read_packet(reader5), 5)
        assert disconnect[0] == 0xE0 and disconnect[2] == 0x8B  # Server shutting down
        assert await asyncio.wait_for(reader5.read(), 5) == b""
        assert await asyncio.wait_for(reader3.read(), 5) == b""  # 3.x: just closed
        await stopping
        # Stopped: nothing listens any more.
        with pytest.raises(OSError):
            await asyncio.open_connection(app.host, app.port)
        await app.stop()  # idempotent (and running() stops it once more)
        writer5.close()
        writer3.close()


async def test_stop_is_bounded_when_a_client_stops_reading(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="mqttd")
    monkeypatch.setattr(app_module, "DRAIN_TIMEOUT", 0.3)  # the bound under test, shortened
    config = ephemeral_config()
    config.limits.max_queued_messages = 0  # let the subscriber's backlog grow
    async with running(config) as app:
        sub_reader, sub_writer = await mqtt_connect(app.host, app.port, connect_packet(b"sub"))
        sub_writer.write(subscribe_packet(b"flood"))
        assert (await asyncio.wait_for(read_packet(sub_reader), 5))[0] == 0x90  # SUBACK
        # The subscriber reads no more; the publisher sends far more than the socket buffers.
        _, pub_writer = await mqtt_connect(app.host, app.port, connect_packet(b"pub"))
        payload = b"x" * 60_000
        for _ in range(300):
            pub_writer.write(publish_packet(b"flood", payload))
            await pub_writer.drain()
        began = time.monotonic()
        await app.stop()
        assert time.monotonic() - began < app_module.DRAIN_TIMEOUT + 3
        assert "mqtt: dropping 1 sockets that did not close in time" in caplog.messages
        sub_writer.close()
        pub_writer.close()


async def test_the_timer_driver_runs_core_timers_without_waiting_half_a_second() -> None:
    async with running() as app:
        scheduler = app.broker.scheduler
        for _ in range(3):
            fired = asyncio.Event()
            began = time.monotonic()
            scheduler.call_later(0.05, fired.set)
            await asyncio.wait_for(fired.wait(), 2)
            # The driver may be sleeping up to 0.5 s; a new earlier timer wakes it.
            assert time.monotonic() - began < 0.3


async def test_connect_timeout_closes_a_silent_socket() -> None:
    config = ephemeral_config()
    config.limits.connect_timeout = 0.2
    async with running(config) as app:
        began = time.monotonic()
        reader, writer = await asyncio.open_connection(app.host, app.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.15 < time.monotonic() - began < 2
        writer.close()


async def test_two_apps_cannot_share_a_port_and_the_loser_cleans_up() -> None:
    async with running() as first:
        config = ephemeral_config()
        config.listeners[0].port = first.port
        loser = App(config)
        with pytest.raises(
            StartupError, match=rf"cannot listen on mqtt://127\.0\.0\.1:{first.port}: "
        ):
            await loser.start()
        # The first broker is unharmed.
        _, writer = await mqtt_connect(first.host, first.port)
        writer.close()


async def test_a_second_listener_failing_closes_the_first() -> None:
    async with running() as other:
        config = ephemeral_config()
        config.listeners.append(ListenerConfig(name="clash", port=other.port))
        app = App(config)
        with pytest.raises(StartupError):
            await app.start()
        host, port = app.listeners["mqtt"]
        with pytest.raises(OSError):
            await asyncio.open_connection(host, port)


async def test_max_connections_from_the_config() -> None:
    config = ephemeral_config()
    config.listeners[0].max_connections = 1
    async with running(config) as app:
        _, first = await mqtt_connect(app.host, app.port)
        reader, second = await asyncio.open_connection(app.host, app.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        first.close()
        second.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


async def test_an_mqtts_listener(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    config = ephemeral_config()
    config.listeners.append(
        ListenerConfig(name="secure", port=0, tls=TLSConfig(certfile=str(cert), keyfile=str(key)))
    )
    async with running(config) as app:
        host, port = app.listeners["secure"]
        assert app.urls["secure"] == f"mqtts://127.0.0.1:{port}"
        client = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection(
            host, port, ssl=client, server_hostname="localhost"
        )
        writer.write(CONNECT_311)
        assert await asyncio.wait_for(read_packet(reader), 5) == CONNACK_311
        writer.close()


async def test_unreadable_tls_files_are_a_config_error_before_anything_starts() -> None:
    config = ephemeral_config()
    config.listeners[0].tls = TLSConfig(certfile="/nonexistent/server.crt")
    app = App(config)
    with pytest.raises(ConfigError) as info:
        await app.start()
    assert info.value.lines == [
        "config error: listeners[0].tls: cannot load '/nonexistent/server.crt': "
        "No such file or directory"
    ]
    assert app.listeners == {}


async def test_a_ws_listener_from_the_config() -> None:
    config = config_from_dict(
        {"listeners": [{"port": 0}, {"type": "ws", "port": 0}], "persistence": {"enabled": False}}
    )
    async with running(config) as app:
        host, port = app.listeners["ws"]
        assert app.urls["ws"] == f"ws://127.0.0.1:{port}/mqtt"
        async with ws_connect(f"ws://{host}:{port}/mqtt", subprotocols=[Subprotocol("mqtt")]) as ws:
            await ws.send(CONNECT_311)
            assert await asyncio.wait_for(ws.recv(), 5) == CONNACK_311
            stopping = asyncio.ensure_future(app.stop())
            # The listener closes the WebSocket once the broker has closed the connection.
            await asyncio.wait_for(ws.wait_closed(), 5)
            await stopping


def test_urls_bracket_ipv6_hosts() -> None:
    from mqttd.app import _url

    assert _url("mqtt", "::1", 1883) == "mqtt://[::1]:1883"
    assert _url("ws", "127.0.0.1", 80, "/mqtt") == "ws://127.0.0.1:80/mqtt"
    assert re.fullmatch(r"mqtts://host:\d+", _url("mqtts", "host", 8883))
