"""The MQTT-over-WebSocket listener: handshake rules, framing, the sink, the dashboard, wss.

Most tests drive `serve_ws` with a recording fake Connection, so they prove what the shell
does with bytes; the ones at the end put the real broker core behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.typing import Subprotocol

from mqttd.net.ws import WebSocketSink, serve_ws

# ---- a fake broker that records what the shell does ------------------------------------


@dataclass
class FakeConnection:
    """Records bytes and events; `on_data` lets a test script the core's reaction."""

    sink: Any
    peer: str
    listener: str
    data: list[bytes] = field(default_factory=list)
    lost: int = 0
    writable: list[bool] = field(default_factory=list)
    on_data: Callable[[FakeConnection, bytes], None] | None = None
    got_data: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    def data_received(self, data: bytes) -> None:
        self.data.append(data)
        self.got_data.set()
        if self.on_data is not None:
            self.on_data(self, data)

    def connection_lost(self) -> None:
        self.lost += 1
        self.gone.set()

    def writable_changed(self, writable: bool) -> None:
        self.writable.append(writable)


class FakeBroker:
    """Hands out FakeConnections; `on_data` is copied into each."""

    def __init__(self) -> None:
        self.connections: list[FakeConnection] = []
        self.on_data: Callable[[FakeConnection, bytes], None] | None = None
        self.connected = asyncio.Event()

    def connection(
        self, sink: Any, peer: str, listener: str = "tcp", identity: str | None = None, /
    ) -> FakeConnection:
        conn = FakeConnection(sink, peer, listener, on_data=self.on_data)
        self.connections.append(conn)
        self.connected.set()
        return conn


def url_of(server: Server, path: str = "/mqtt", scheme: str = "ws") -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"{scheme}://{host}:{port}{path}"


@pytest.fixture
async def fake() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
async def server(fake: FakeBroker) -> AsyncIterator[Server]:
    srv = await serve_ws(fake, "127.0.0.1", 0, max_size=4096)
    yield srv
    srv.close()
    await srv.wait_closed()


async def mqtt_client(url: str, **kwargs: Any) -> ClientConnection:
    kwargs.setdefault("subprotocols", ["mqtt"])
    return await connect(url, **kwargs)


async def http_get(
    server: Server, path: str, method: str = "GET", headers: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 request (no upgrade); returns status, headers, body."""
    host, port = server.sockets[0].getsockname()[:2]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    fields = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), fields, body


# ---- handshake: path, subprotocol, origin -----------------------------------------------


async def test_upgrade_echoes_mqtt_subprotocol_and_reports_peer(
    server: Server, fake: FakeBroker
) -> None:
    async with await mqtt_client(url_of(server), subprotocols=["mqttv3.1", "mqtt"]) as ws:
        assert ws.subprotocol == "mqtt"
        await ws.send(b"\x10\x00")
        await asyncio.wait_for(fake.connections[0].got_data.wait(), 5)
    conn = fake.connections[0]
    assert conn.listener == "ws"
    assert conn.peer.startswith("127.0.0.1:")


async def test_mqttv31_subprotocol_is_accepted_for_old_clients(server: Server) -> None:
    async with await mqtt_client(url_of(server), subprotocols=["mqttv3.1"]) as ws:
        assert ws.subprotocol == "mqttv3.1"


async def test_root_path_and_query_string_are_accepted(server: Server) -> None:
    async with await mqtt_client(url_of(server, "/")) as ws:
        assert ws.subprotocol == "mqtt"
    async with await mqtt_client(url_of(server, "/mqtt?token=x")) as ws:
        assert ws.subprotocol == "mqtt"


async def test_missing_subprotocol_is_refused_with_400_naming_it(server: Server) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(url_of(server))
    response = refused.value.response
    assert response.status_code == 400
    assert b"Missing Sec-WebSocket-Protocol" in response.body
    assert b"mqtt" in response.body


async def test_wrong_subprotocol_is_refused_with_400_naming_it(server: Server) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(url_of(server), subprotocols=[Subprotocol("wamp")])
    response = refused.value.response
    assert response.status_code == 400
    assert b"Unsupported WebSocket subprotocol wamp" in response.body


async def test_wrong_path_is_refused_with_404_naming_the_right_one(server: Server) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await mqtt_client(url_of(server, "/chat"))
    response = refused.value.response
    assert response.status_code == 404
    assert b"/chat" in response.body and b"/mqtt" in response.body


async def test_refused_upgrades_are_logged_once_with_the_reason(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(InvalidStatus):
        await connect(url_of(server), subprotocols=[Subprotocol("wamp")])
    refusals = [r.getMessage() for r in caplog.records if r.name == "mqttd.ws"]
    assert len(refusals) == 1
    assert "ws: refused a WebSocket upgrade from 127.0.0.1:" in refusals[0]
    assert "400 Unsupported WebSocket subprotocol wamp" in refusals[0]
    # The library's own chatter ("connection rejected", "connection open") is DEBUG only.
    library = [r for r in caplog.records if r.name == "mqttd.ws.websockets"]
    assert library and all(r.levelno == logging.DEBUG for r in library)


async def test_configured_subprotocols_replace_the_defaults(fake: FakeBroker) -> None:
    srv = await serve_ws(fake, "127.0.0.1", 0, subprotocols=["mqtt"])
    try:
        with pytest.raises(InvalidStatus) as refused:
            await mqtt_client(url_of(srv), subprotocols=["mqttv3.1"])
        assert b"offer mqtt." in refused.value.response.body
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"path": "mqtt"}, "must start with '/'"),
        ({"subprotocols": []}, "at least one WebSocket subprotocol"),
        ({"subprotocols": ["bad name"]}, "invalid subprotocol"),
    ],
)
async def test_bad_listener_options_raise(
    fake: FakeBroker, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await serve_ws(fake, "127.0.0.1", 0, **options)


async def test_origin_allow_list(fake: FakeBroker) -> None:
    srv = await serve_ws(fake, "127.0.0.1", 0, allowed_origins=["https://ops.example.com"])
    try:
        with pytest.raises(InvalidStatus) as refused:
            await mqtt_client(url_of(srv), origin="https://evil.example.net")
        assert refused.value.response.status_code == 403
        assert b"https://evil.example.net" in refused.value.response.body
        async with await mqtt_client(url_of(srv), origin="https://ops.example.com") as ws:
            assert ws.subprotocol == "mqtt"
        # Non-browser clients send no Origin and cannot be hijacked cross-site.
        async with await mqtt_client(url_of(srv)) as ws:
            assert ws.subprotocol == "mqtt"
    finally:
        srv.close()
        await srv.wait_closed()


async def test_trust_proxy_takes_last_forwarded_for(fake: FakeBroker) -> None:
    srv = await serve_ws(fake, "127.0.0.1", 0, trust_proxy=True)
    plain = await serve_ws(fake, "127.0.0.1", 0)
    forged = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}
    try:
        async with await mqtt_client(url_of(srv), additional_headers=forged):
            await asyncio.wait_for(fake.connected.wait(), 5)
        async with await mqtt_client(url_of(plain), additional_headers=forged):
            pass
    finally:
        for s in (srv, plain):
            s.close()
            await s.wait_closed()
    assert fake.connections[0].peer == "203.0.113.7"
    assert fake.connections[1].peer.startswith("127.0.0.1:")


# ---- inbound bytes ----------------------------------------------------------------------


async def test_packet_spanning_frames_reaches_the_connection_in_order(
    server: Server, fake: FakeBroker
) -> None:
    connect_packet = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c"
    async with await mqtt_client(url_of(server)) as ws:
        for i in range(len(connect_packet)):
            await ws.send(connect_packet[i : i + 1])
        await ws.send(b"\xc0\x00\xc0\x00")  # two PINGREQs in one frame
        conn = await wait_for_connection(fake)
        await wait_until(lambda: len(conn.data) == len(connect_packet) + 1)
    assert b"".join(conn.data) == connect_packet + b"\xc0\x00\xc0\x00"
    assert conn.data[-1] == b"\xc0\x00\xc0\x00"


async def test_too_large_frame_closes_with_1009_and_others_are_served(
    server: Server, fake: FakeBroker
) -> None:
    async with await mqtt_client(url_of(server)) as big:
        await big.send(b"\x30" + b"x" * 5000)  # max_size is 4096
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(big.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert "exceeds limit of 4096 bytes" in closed.value.rcvd.reason
    assert fake.connections[0].data == []
    await asyncio.wait_for(fake.connections[0].gone.wait(), 5)
    async with await mqtt_client(url_of(server)) as other:
        await other.send(b"\xc0\x00")
        await asyncio.wait_for(fake.connections[1].got_data.wait(), 5)


async def test_text_frame_closes_with_1003(server: Server, fake: FakeBroker) -> None:
    async with await mqtt_client(url_of(server)) as ws:
        await ws.send("hello")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
    await asyncio.wait_for(fake.connections[0].gone.wait(), 5)
    assert fake.connections[0].data == []
    assert fake.connections[0].lost == 1


async def test_connection_lost_once_when_the_client_goes(server: Server, fake: FakeBroker) -> None:
    ws = await mqtt_client(url_of(server))
    await asyncio.wait_for(fake.connected.wait(), 5)
    ws.transport.abort()
    conn = fake.connections[0]
    await asyncio.wait_for(conn.gone.wait(), 5)
    await asyncio.sleep(0.05)
    assert conn.lost == 1


async def test_pause_reading_holds_frames_until_resumed(server: Server, fake: FakeBroker) -> None:
    fake.on_data = lambda conn, data: conn.sink.pause_reading()
    async with await mqtt_client(url_of(server)) as ws:
        for n in range(3):
            await ws.send(bytes([0xC0, 0, n]))
        conn = await wait_for_connection(fake)
        await asyncio.wait_for(conn.got_data.wait(), 5)
        await asyncio.sleep(0.1)
        assert len(conn.data) == 1
        conn.on_data = None
        conn.sink.resume_reading()
        await wait_until(lambda: len(conn.data) == 3)


# ---- outbound bytes: the sink -----------------------------------------------------------


async def test_writes_in_one_iteration_leave_in_one_frame(server: Server, fake: FakeBroker) -> None:
    def answer(conn: FakeConnection, data: bytes) -> None:
        for n in range(5):
            conn.sink.write(bytes([0x30, 1, n]))

    fake.on_data = answer
    async with await mqtt_client(url_of(server)) as ws:
        await ws.send(b"go")
        frame = await asyncio.wait_for(ws.recv(), 5)
    assert frame == b"".join(bytes([0x30, 1, n]) for n in range(5))


async def test_close_flushes_then_closes_normally(server: Server, fake: FakeBroker) -> None:
    def answer(conn: FakeConnection, data: bytes) -> None:
        conn.sink.write(b"\x20\x02\x00\x00")  # CONNACK
        conn.sink.close()
        conn.sink.write(b"after close is dropped")
        conn.sink.close()  # idempotent

    fake.on_data = answer
    async with await mqtt_client(url_of(server)) as ws:
        await ws.send(b"x")
        assert await asyncio.wait_for(ws.recv(), 5) == b"\x20\x02\x00\x00"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    await asyncio.wait_for(fake.connections[0].gone.wait(), 5)
    assert fake.connections[0].lost == 1


class StalledWebSocket:
    """Stands in for a ServerConnection whose peer stopped reading until `unblock`."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.flowing = asyncio.Event()
        self.closed_with: int | None = None

    async def send(self, frame: bytes) -> None:
        await self.flowing.wait()
        self.frames.append(frame)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed_with = code


async def test_sink_backpressure_reports_unwritable_then_writable() -> None:
    ws = StalledWebSocket()
    sink = WebSocketSink(ws, high_water=10_000, low_water=2_000)  # type: ignore[arg-type]
    conn = FakeConnection(sink, "p", "ws")
    sink.attach(conn)
    writer = asyncio.create_task(sink.run_writer())
    for _ in range(30):
        sink.write(b"x" * 1000)
        await asyncio.sleep(0)
    assert conn.writable == [False]
    assert sink.queued_bytes == 30_000
    ws.flowing.set()
    await wait_until(lambda: sink.queued_bytes == 0)
    assert conn.writable == [False, True]
    assert b"".join(ws.frames) == b"x" * 30_000
    assert len(ws.frames) < 30  # coalesced while the peer was stalled
    sink.close()
    await asyncio.wait_for(writer, 5)
    assert ws.closed_with == 1000


async def test_sink_splits_frames_between_writes_never_inside_one() -> None:
    ws = StalledWebSocket()
    ws.flowing.set()
    sink = WebSocketSink(ws)  # type: ignore[arg-type]
    writer = asyncio.create_task(sink.run_writer())
    chunks = [bytes([n]) * 40_000 for n in range(4)] + [b"z" * 200_000]
    for chunk in chunks:
        sink.write(chunk)
    sink.close()
    await asyncio.wait_for(writer, 5)
    assert b"".join(ws.frames) == b"".join(chunks)
    assert [len(f) for f in ws.frames] == [40_000, 40_000, 40_000, 40_000, 200_000]


async def test_slow_websocket_reader_makes_connection_unwritable(fake: FakeBroker) -> None:
    srv = await serve_ws(fake, "127.0.0.1", 0, high_water=256 * 1024, low_water=64 * 1024)
    try:
        ws = await mqtt_client(url_of(srv), max_queue=1)
        await ws.send(b"\xc0\x00")
        conn = await wait_for_connection(fake)
        await asyncio.wait_for(conn.got_data.wait(), 5)
        chunk = b"\x30" * 65536
        written = 0
        while False not in conn.writable and written < 256 * 1024 * 1024:
            conn.sink.write(chunk)
            written += len(chunk)
            await asyncio.sleep(0)
        assert conn.writable == [False]
        received = 0
        while received < written:
            received += len(await asyncio.wait_for(ws.recv(), 10))
        assert received == written
        assert conn.writable == [False, True]
        await ws.close()
    finally:
        srv.close()
        await srv.wait_closed()


# ---- permessage-deflate -----------------------------------------------------------------


@pytest.mark.parametrize("compression", [False, True])
async def test_permessage_deflate_offer_works_accepted_or_declined(
    fake: FakeBroker, compression: bool
) -> None:
    fake.on_data = lambda conn, data: conn.sink.write(data)  # echo
    srv = await serve_ws(fake, "127.0.0.1", 0, compression=compression)
    try:
        async with await mqtt_client(
            url_of(srv), extensions=[ClientPerMessageDeflateFactory()], compression=None
        ) as ws:
            negotiated = ws.response is not None and ws.response.headers.get(
                "Sec-WebSocket-Extensions"
            )
            assert bool(negotiated) is compression
            payload = b"\x30\x0b\x00\x03a/b" + b"hello" * 1 + b"!!"
            await ws.send(payload)
            assert await asyncio.wait_for(ws.recv(), 5) == payload
    finally:
        srv.close()
        await srv.wait_closed()


# ---- the dashboard on plain HTTP --------------------------------------------------------


async def test_dashboard_served_on_plain_get(server: Server) -> None:
    status, headers, body = await http_get(server, "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert b'<meta name="mqtt-path" content="mqtt">' in body
    assert "default-src 'self'" in headers["content-security-policy"]
    status, headers, body = await http_get(server, "/dashboard.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert b"MqttClient" in body
    status, headers, body = await http_get(server, "/mqtt-client.js", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1000


async def test_plain_http_errors_are_clear(server: Server) -> None:
    status, _, body = await http_get(server, "/secret")
    assert status == 404 and b"/secret" in body
    status, headers, body = await http_get(server, "/mqtt")
    assert status == 426 and headers["upgrade"] == "websocket"
    assert b"MQTT over WebSocket endpoint" in body
    status, headers, _ = await http_get(server, "/", method="DELETE")
    assert status == 405 and headers["allow"] == "GET, HEAD"


async def test_dashboard_can_be_turned_off(fake: FakeBroker) -> None:
    srv = await serve_ws(fake, "127.0.0.1", 0, dashboard=False, path="/ws")
    try:
        status, _, body = await http_get(srv, "/")
        assert status == 426 and b"/ws" in body
        status, _, _ = await http_get(srv, "/dashboard.js")
        assert status == 404
    finally:
        srv.close()
        await srv.wait_closed()


async def test_dashboard_learns_a_configured_path(fake: FakeBroker) -> None:
    srv = await serve_ws(fake, "127.0.0.1", 0, path="/brokers/a")
    try:
        _, _, body = await http_get(srv, "/index.html")
        assert b'content="brokers/a"' in body
        async with await mqtt_client(url_of(srv, "/brokers/a")) as ws:
            assert ws.subprotocol == "mqtt"
    finally:
        srv.close()
        await srv.wait_closed()


# ---- wss --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_wss_with_a_certificate(fake: FakeBroker, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    fake.on_data = lambda conn, data: conn.sink.write(data)
    srv = await serve_ws(fake, "127.0.0.1", 0, ssl=server_ctx, name="wss")
    try:
        async with await mqtt_client(url_of(srv, scheme="wss"), ssl=client_ctx) as ws:
            await ws.send(b"\xc0\x00")
            assert await asyncio.wait_for(ws.recv(), 5) == b"\xc0\x00"
        assert fake.connections[0].listener == "wss"
        # A client that does not trust the certificate fails the TLS handshake.
        with pytest.raises(ssl.SSLCertVerificationError):
            await mqtt_client(url_of(srv, scheme="wss"), ssl=ssl.create_default_context())
    finally:
        srv.close()
        await srv.wait_closed()


# ---- with the real broker core behind the listener ----------------------------------


def mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def mqtt_packet(first: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        digit, length = length % 128, length // 128
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes([first, *encoded]) + body


def connect_311(client_id: str) -> bytes:
    return mqtt_packet(0x10, mqtt_string("MQTT") + b"\x04\x02\x00\x3c" + mqtt_string(client_id))


def split_packets(data: bytes) -> list[tuple[int, bytes]]:
    """(first byte, body) of each packet in `data`, which must hold whole packets."""
    packets, at = [], 0
    while at < len(data):
        length, multiplier, i = 0, 1, at + 1
        while True:
            length += (data[i] & 0x7F) * multiplier
            multiplier *= 128
            i += 1
            if not data[i - 1] & 0x80:
                break
        packets.append((data[at], data[i : i + length]))
        at = i + length
    return packets


async def read_packets(ws: ClientConnection, count: int) -> list[tuple[int, bytes]]:
    """Read frames until `count` whole packets arrived (however they were framed)."""
    data = b""
    async with asyncio.timeout(5):
        while True:
            frame = await ws.recv()
            assert isinstance(frame, bytes), "the broker must send binary frames"
            data += frame
            try:
                packets = split_packets(data)
            except IndexError:
                continue
            if len(packets) >= count:
                return packets


@contextlib.asynccontextmanager
async def ws_broker(**limits: int) -> AsyncIterator[tuple[str, tuple[str, int]]]:
    """An in-process mqttd with these `[limits]`: its WebSocket URL and TCP address."""
    from mqttd.app import running
    from mqttd.config import config_from_dict

    config = config_from_dict(
        {
            "listeners": [{"host": "127.0.0.1", "port": 0}, {"type": "ws", "port": 0}],
            "persistence": {"enabled": False},
            "limits": limits,
        }
    )
    async with running(config) as app:
        host, port = app.listeners["ws"]
        yield f"ws://{host}:{port}/mqtt", app.listeners["mqtt"]


@pytest.fixture
async def real_ws() -> AsyncIterator[tuple[str, tuple[str, int]]]:
    """An in-process mqttd (TCP and WebSocket listeners), max packet size 4096."""
    async with ws_broker(max_packet_size=4096) as addresses:
        yield addresses


async def test_real_broker_connect_split_byte_by_byte_across_frames(
    real_ws: tuple[str, tuple[str, int]],
) -> None:
    url, _ = real_ws
    async with await mqtt_client(url) as ws:
        for byte in connect_311("split"):
            await ws.send(bytes([byte]))
        [(first, body)] = await read_packets(ws, 1)
    assert first == 0x20 and body == b"\x00\x00"  # CONNACK, accepted


async def test_real_broker_several_packets_in_one_frame(
    real_ws: tuple[str, tuple[str, int]],
) -> None:
    url, _ = real_ws
    subscribe = mqtt_packet(0x82, b"\x00\x07" + mqtt_string("ws/echo") + b"\x00")
    publish = mqtt_packet(0x30, mqtt_string("ws/echo") + b"hello")
    pingreq = b"\xc0\x00"
    async with await mqtt_client(url) as ws:
        await ws.send(connect_311("many") + subscribe + publish + pingreq)
        packets = await read_packets(ws, 4)
    assert [first for first, _ in packets] == [0x20, 0x90, 0x30, 0xD0]
    assert packets[1][1] == b"\x00\x07\x00"  # SUBACK id 7, QoS 0 granted
    assert packets[2][1] == mqtt_string("ws/echo") + b"hello"


async def test_real_broker_tcp_publisher_reaches_websocket_subscriber(
    real_ws: tuple[str, tuple[str, int]],
) -> None:
    url, (host, port) = real_ws
    async with await mqtt_client(url) as ws:
        await ws.send(connect_311("ws-sub"))
        await ws.send(mqtt_packet(0x82, b"\x00\x01" + mqtt_string("t/#") + b"\x01"))
        assert [p[0] for p in await read_packets(ws, 2)] == [0x20, 0x90]
        _, writer = await asyncio.open_connection(host, port)
        writer.write(connect_311("tcp-pub") + mqtt_packet(0x30, mqtt_string("t/x") + b"42"))
        await writer.drain()
        [(first, body)] = await read_packets(ws, 1)
        writer.close()
        await writer.wait_closed()
    assert first == 0x30 and body == mqtt_string("t/x") + b"42"


async def test_real_broker_bounds_frames_by_max_packet_size(
    real_ws: tuple[str, tuple[str, int]],
) -> None:
    url, _ = real_ws
    async with await mqtt_client(url) as ws:
        await ws.send(connect_311("big"))
        await read_packets(ws, 1)
        await ws.send(mqtt_packet(0x30, mqtt_string("t") + b"x" * 5000))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    async with await mqtt_client(url) as other:
        await other.send(connect_311("after-big"))
        assert (await read_packets(other, 1))[0][0] == 0x20


# ---- helpers ----------------------------------------------------------------------------


async def wait_for_connection(fake: FakeBroker) -> FakeConnection:
    await asyncio.wait_for(fake.connected.wait(), 5)
    return fake.connections[-1]


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# ---- issue 14: Origin by default, and the pre-CONNECT message bound ----------------------


async def test_default_origin_rule_is_the_listeners_own(fake: FakeBroker) -> None:
    srv = await serve_ws(fake, "127.0.0.1", 0)
    host, port = srv.sockets[0].getsockname()[:2]
    try:
        with pytest.raises(InvalidStatus) as refused:
            await mqtt_client(url_of(srv), origin="https://evil.example.net")
        assert refused.value.response.status_code == 403
        with pytest.raises(InvalidStatus) as other_port:
            await mqtt_client(url_of(srv), origin=f"http://{host}:{port + 1}")
        assert other_port.value.response.status_code == 403
        async with await mqtt_client(url_of(srv), origin=f"http://{host}:{port}") as ws:
            assert ws.subprotocol == "mqtt"  # the dashboard's own origin
        async with await mqtt_client(url_of(srv)) as ws:
            assert ws.subprotocol == "mqtt"  # no Origin: not a browser
    finally:
        srv.close()
        await srv.wait_closed()


async def test_star_allows_every_origin(fake: FakeBroker) -> None:
    srv = await serve_ws(fake, "127.0.0.1", 0, allowed_origins=["*"])
    try:
        async with await mqtt_client(url_of(srv), origin="https://evil.example.net") as ws:
            assert ws.subprotocol == "mqtt"
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.mark.parametrize(
    ("listener_host", "origin", "host_header", "allowed"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080", "127.0.0.1:8080", True),
        ("127.0.0.1", "http://localhost:8080", "localhost:8080", True),
        ("::1", "http://[::1]:8080", "[::1]:8080", True),
        ("0.0.0.0", "https://mqtt.example.com", "mqtt.example.com", True),  # behind a proxy
        ("0.0.0.0", "https://mqtt.example.com", "mqtt.example.com:8443", False),
        ("0.0.0.0", "http://mqtt.example.com:8080", "MQTT.example.com:8080", True),
        # DNS rebinding: a name the attacker controls, pointed at 127.0.0.1.
        ("127.0.0.1", "http://rebind.evil.net:8080", "rebind.evil.net:8080", False),
        ("127.0.0.1", "null", "127.0.0.1:8080", False),  # a file:// page or a sandbox
        ("127.0.0.1", "http://127.0.0.1:8080", None, False),
    ],
)
def test_same_origin_rule(
    listener_host: str, origin: str, host_header: str | None, allowed: bool
) -> None:
    from mqttd.auth.limits import is_loopback_host
    from mqttd.net.ws import _Gate

    gate = _Gate("ws", False, "/mqtt", [], None, None, is_loopback_host(listener_host))
    assert gate.origin_allowed(origin, host_header) is allowed


async def test_real_broker_bounds_messages_before_connect_by_max_connect_size() -> None:
    async with ws_broker(max_connect_size=1000) as (url, _):
        async with await mqtt_client(url) as ws:
            # A CONNECT claiming 250 MB whose first 5000 bytes come in one message.
            await ws.send(b"\x10\x80\xe5\x9a\x77" + b"\x00" * 5000)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        async with await mqtt_client(url) as ws:
            await ws.send(connect_311("after"))
            assert (await read_packets(ws, 1))[0][0] == 0x20
            # Accepted: messages up to max_packet_size again.
            await ws.send(mqtt_packet(0x82, b"\x00\x01" + mqtt_string("big") + b"\x00"))
            await ws.send(mqtt_packet(0x30, mqtt_string("big") + b"x" * 5000))
            packets = await read_packets(ws, 2)
        assert [first for first, _ in packets] == [0x90, 0x30]


async def test_real_broker_flood_over_receive_maximum_reads_disconnect_0x93() -> None:
    async with ws_broker(receive_maximum=2) as (url, _):
        async with await mqtt_client(url) as ws:
            connect = mqtt_string("MQTT") + b"\x05\x02\x00\x3c\x00" + mqtt_string("flood")
            await ws.send(mqtt_packet(0x10, connect))
            assert (await read_packets(ws, 1))[0][0] == 0x20
            for i in range(1, 33):  # QoS 2, 16 KiB each: the third is over the maximum
                body = mqtt_string("t") + i.to_bytes(2, "big") + b"\x00" + b"x" * 16384
                await ws.send(mqtt_packet(0x34, body))
            packets: list[tuple[int, bytes]] = []
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(5):
                    while True:
                        frame = await ws.recv()
                        assert isinstance(frame, bytes)
                        packets += split_packets(frame)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        disconnects = [body for first, body in packets if first == 0xE0]
        assert disconnects and disconnects[0][0] == 0x93
