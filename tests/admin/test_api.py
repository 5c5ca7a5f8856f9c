"""The admin HTTP API driven by a real HTTP client (aiohttp) against a started broker.

MQTT clients are real sockets speaking hand-written packets (tests/mqtt_raw.py), so a
kick is seen on the wire: the 5.0 client reads DISCONNECT 0x98 and then EOF.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from mqtt_raw import gen_connect, gen_publish, gen_subscribe

from mqttd.admin.auth import keygen
from mqttd.app import App, ephemeral_config, running
from mqttd.auth.password_file import PasswordFile
from mqttd.broker.backplane import InProcessBackplane, InProcessHub
from mqttd.broker.message import Message
from mqttd.config import Config

CONNACK = 0x20
DISCONNECT = 0xE0


class MqttClient:
    """A minimal asyncio MQTT client over raw packets (the broker shares our loop)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, app: App, client_id: str, proto_ver: int = 4, clean: bool = True, **kw: object
    ) -> MqttClient:
        reader, writer = await asyncio.open_connection(app.host, app.port)
        client = cls(reader, writer)
        writer.write(gen_connect(client_id, proto_ver=proto_ver, clean_session=clean, **kw))  # type: ignore[arg-type]
        first, body = await client.packet()
        assert first == CONNACK, hex(first)
        assert body[-1 if proto_ver != 5 else 1] == 0, body
        return client

    async def packet(self) -> tuple[int, bytes]:
        head = await asyncio.wait_for(self.reader.readexactly(1), 5)
        length, shift = 0, 0
        while True:
            byte = (await self.reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return head[0], await self.reader.readexactly(length)

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 5) == b""

    def close(self) -> None:
        self.writer.close()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def admin_config(**admin: object) -> Config:
    config = ephemeral_config()
    config.sys.interval = 0
    config.admin.enabled = True
    config.admin.port = 0
    for key, value in admin.items():
        setattr(config.admin, key, value)
    return config


@pytest.fixture
async def app() -> AsyncIterator[App]:
    async with running(admin_config()) as app:
        yield app


@pytest.fixture
async def http(app: App) -> AsyncIterator[aiohttp.ClientSession]:
    assert app.admin is not None
    async with aiohttp.ClientSession(base_url=app.admin.url) as session:
        yield session


async def test_clients_list_filters_and_pages(app: App, http: aiohttp.ClientSession) -> None:
    clients = [await MqttClient.connect(app, f"dev-{i:02d}") for i in range(5)]
    clients.append(await MqttClient.connect(app, "sensor-a", proto_ver=5, username="alice"))
    offline = await MqttClient.connect(app, "sleepy", clean=False)
    offline.close()
    await asyncio.sleep(0.05)
    try:
        async with http.get("/api/v1/clients", params={"limit": "2", "page": "2"}) as r:
            assert r.status == 200
            body = await r.json()
        assert body["meta"] == {"page": 2, "limit": 2, "count": 7, "hasnext": True}
        assert [c["clientid"] for c in body["data"]] == ["dev-02", "dev-03"]

        async with http.get("/api/v1/clients", params={"like_clientid": "sens"}) as r:
            (row,) = (await r.json())["data"]
        assert row["clientid"] == "sensor-a"
        assert row["username"] == "alice"
        assert row["proto_ver"] == 5
        assert row["connected"] is True
        assert row["ip_address"] == "127.0.0.1"
        assert row["keepalive"] == 60
        assert row["connected_at"].endswith("Z")

        async with http.get("/api/v1/clients", params={"proto_ver": "5"}) as r:
            assert [c["clientid"] for c in (await r.json())["data"]] == ["sensor-a"]
        async with http.get("/api/v1/clients", params={"like_username": "ali"}) as r:
            assert [c["clientid"] for c in (await r.json())["data"]] == ["sensor-a"]
        async with http.get("/api/v1/sessions", params={"conn_state": "disconnected"}) as r:
            body = await r.json()
        assert [c["clientid"] for c in body["data"]] == ["sleepy"]
        assert body["data"][0]["persistent"] is True
        async with http.get("/api/v1/clients", params={"ip_address": "10.0.0.1"}) as r:
            assert (await r.json())["meta"]["count"] == 0
        async with http.get("/api/v1/clients", params={"limit": "5000"}) as r:
            assert r.status == 400
            assert (await r.json())["code"] == "BAD_REQUEST"
    finally:
        for client in clients:
            client.close()


async def test_client_detail_shows_subscriptions_and_queues(
    app: App, http: aiohttp.ClientSession
) -> None:
    client = await MqttClient.connect(app, "watcher", clean=False)
    client.writer.write(gen_subscribe(1, [("a/+", 1), ("b/#", 0)]))
    await client.packet()  # SUBACK
    client.close()
    await asyncio.sleep(0.05)
    publisher = await MqttClient.connect(app, "pub")
    publisher.writer.write(gen_publish("a/x", qos=1, mid=1, payload=b"queued"))
    await publisher.packet()  # PUBACK
    try:
        async with http.get("/api/v1/clients/watcher") as r:
            detail = await r.json()
        assert detail["connected"] is False
        assert detail["queued"] == 1
        assert [s["topic"] for s in detail["subscriptions"]] == ["a/+", "b/#"]
        assert detail["subscriptions"][0]["qos"] == 1
        async with http.get("/api/v1/subscriptions", params={"match_topic": "b/c/d"}) as r:
            rows = (await r.json())["data"]
        assert [(s["clientid"], s["topic"]) for s in rows] == [("watcher", "b/#")]
        async with http.get("/api/v1/clients/nobody") as r:
            assert r.status == 404
            assert (await r.json())["code"] == "CLIENTID_NOT_FOUND"
    finally:
        publisher.close()


async def test_kick_sends_disconnect_0x98_and_is_logged(
    app: App, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    client = await MqttClient.connect(app, "bad-device", proto_ver=5)
    caplog.set_level(logging.INFO, "mqttd.admin")
    async with http.delete("/api/v1/clients/bad-device") as r:
        assert r.status == 200
        assert (await r.json())["was_connected"] is True
    first, body = await client.packet()
    assert first == DISCONNECT and body[0] == 0x98
    assert await client.closed()
    (line,) = [r for r in caplog.records if r.name == "mqttd.admin"]
    assert "kick by anonymous@loopback from 127.0.0.1" in line.getMessage()
    assert line.client_id == "bad-device"  # type: ignore[attr-defined]


async def test_kick_with_discard_session_ends_a_persistent_session(
    app: App, http: aiohttp.ClientSession
) -> None:
    client = await MqttClient.connect(app, "keeper", clean=False)
    async with http.delete("/api/v1/clients/keeper") as r:
        assert r.status == 200
    assert await client.closed()
    assert "keeper" in app.broker.sessions  # a kick alone keeps the session
    async with http.delete("/api/v1/clients/keeper", params={"discard_session": "true"}) as r:
        assert (await r.json())["session_discarded"] is True
    assert "keeper" not in app.broker.sessions


async def test_retained_list_get_delete_by_topic_and_filter(
    app: App, http: aiohttp.ClientSession
) -> None:
    for i in range(25):
        app.broker.publish(Message(f"site/{i:02d}/temp", str(i).encode(), 1, True))
    app.broker.publish(Message("bin/blob", b"\xff\x00", 0, True))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"filter": "site/#", "limit": "10", "count": "true"}
        if cursor:
            params["cursor"] = cursor
        async with http.get("/api/v1/retained", params=params) as r:
            body = await r.json()
        seen += [m["topic"] for m in body["data"]]
        assert body["meta"]["count"] == (25 if cursor is None else None)  # first page only
        cursor = body["meta"]["cursor"]
        if not body["meta"]["hasnext"]:
            break
    assert seen == [f"site/{i:02d}/temp" for i in range(25)]

    async with http.get("/api/v1/retained/bin/blob") as r:
        blob = await r.json()
    assert blob["payload"] is None
    assert base64.b64decode(blob["payload_base64"]) == b"\xff\x00"

    async with http.delete("/api/v1/retained/site/03/temp") as r:
        assert (await r.json()) == {"deleted": 1}
    assert app.broker.retained.get("site/03/temp") is None
    async with http.delete("/api/v1/retained/site/03/temp") as r:
        assert r.status == 404
    async with http.delete("/api/v1/retained", params={"filter": "site/+/temp"}) as r:
        assert (await r.json()) == {"deleted": 24}
    async with http.get("/api/v1/retained", params={"filter": "#"}) as r:
        assert [m["topic"] for m in (await r.json())["data"]] == ["bin/blob"]
    async with http.get("/api/v1/retained", params={"filter": "a/#/b"}) as r:
        assert r.status == 400


async def test_publish_reaches_a_subscriber(app: App, http: aiohttp.ClientSession) -> None:
    client = await MqttClient.connect(app, "listener")
    client.writer.write(gen_subscribe(1, "cmd/#"))
    await client.packet()
    try:
        async with http.post(
            "/api/v1/publish", json={"topic": "cmd/reboot", "payload": "now", "qos": 0}
        ) as r:
            assert r.status == 200
            assert (await r.json())["matched"] is True
        first, body = await client.packet()
        assert first >> 4 == 3 and body.endswith(b"cmd/reboot" + b"now")
        async with http.post("/api/v1/publish", json={"topic": "a/+", "payload": "x"}) as r:
            assert r.status == 400
            assert (await r.json())["code"] == "BAD_TOPIC"
        async with http.post("/api/v1/publish", data=b"not json") as r:
            assert r.status == 400
    finally:
        client.close()


async def test_stats_have_broker_process_and_store_figures(
    app: App, http: aiohttp.ClientSession
) -> None:
    async with http.get("/api/v1/stats") as r:
        body = await r.json()
    assert body["broker"]["clients_connected"] == 0
    process = body["process"]
    assert process["open_fds"] > 3
    assert process["resident_memory_bytes"] > 1_000_000
    assert process["peak_resident_memory_bytes"] >= process["resident_memory_bytes"]


async def test_reload_without_a_config_file_says_so(http: aiohttp.ClientSession) -> None:
    async with http.post("/api/v1/reload") as r:
        assert r.status == 409
        assert (await r.json())["code"] == "NO_CONFIG_FILE"


async def test_api_keys_and_admin_users(tmp_path: Path) -> None:
    key, line = keygen("ops")
    keys = tmp_path / "keys"
    keys.write_text(f"# comment\n{line}\n")
    passwords = PasswordFile()
    passwords.set("root", "s3cret")
    passwords.set("mallory", "pw")
    passwords.save(tmp_path / "passwd")
    config = admin_config(api_key_file=str(keys), users=["root"])
    config.auth.password_file = str(tmp_path / "passwd")
    async with running(config) as app:
        assert app.admin is not None
        async with aiohttp.ClientSession(base_url=app.admin.url) as http:
            async with http.get("/api/v1/clients") as r:
                assert r.status == 401  # loopback is not enough once credentials exist
                assert "Basic" in r.headers["WWW-Authenticate"]
            bearer = {"Authorization": f"Bearer {key}"}
            async with http.get("/api/v1/clients", headers=bearer) as r:
                assert r.status == 200
            wrong = {"Authorization": "Bearer " + "x" * 43}
            async with http.get("/api/v1/clients", headers=wrong) as r:
                assert r.status == 401
            async with http.get("/api/v1/clients", headers=basic("root", "s3cret")) as r:
                assert r.status == 200
            async with http.get("/api/v1/clients", headers=basic("root", "no")) as r:
                assert r.status == 401
            async with http.get("/api/v1/clients", headers=basic("mallory", "pw")) as r:
                assert r.status == 403  # a valid MQTT user without the admin role


def test_never_anonymous_off_loopback() -> None:
    from mqttd.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError) as caught:
        config_from_dict({"admin": {"enabled": True, "host": "0.0.0.0"}})
    assert "never anonymous off loopback" in str(caught.value)
    config_from_dict({"admin": {"enabled": True, "host": "0.0.0.0", "api_key_file": "k"}})


async def test_dashboards_own_origins_may_call_the_api_others_may_not() -> None:
    from mqttd.config import ListenerConfig

    config = admin_config()
    config.listeners.append(ListenerConfig(name="ws", type="ws", port=0))
    async with running(config) as app:
        assert app.admin is not None
        ws_port = app.listeners["ws"][1]
        own = f"http://localhost:{ws_port}"
        async with aiohttp.ClientSession(base_url=app.admin.url) as http:
            preflight = {
                "Origin": own,
                "Access-Control-Request-Method": "DELETE",
                "Access-Control-Request-Headers": "authorization",
            }
            async with http.options("/api/v1/clients/x", headers=preflight) as r:
                assert r.status == 204
                assert r.headers["Access-Control-Allow-Origin"] == own
                assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
            async with http.get("/api/v1/stats", headers={"Origin": own}) as r:
                assert r.headers["Access-Control-Allow-Origin"] == own
            evil = {**preflight, "Origin": "http://evil.example"}
            async with http.options("/api/v1/clients/x", headers=evil) as r:
                assert r.status == 403
                assert "Access-Control-Allow-Origin" not in r.headers
        # The page learns where the API is, and its CSP lets it connect there.
        host, port = app.listeners["ws"]
        async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/") as r:
            page = await r.text()
            csp = r.headers["Content-Security-Policy"]
        assert f'<meta name="admin-api" content="http:{app.admin.address[1]}">' in page  # type: ignore[index]
        assert f"connect-src 'self' http://*:{app.admin.address[1]};" in csp  # type: ignore[index]


async def test_reload_applies_the_file_and_lists_what_changed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import copy

    async with running(admin_config()) as app:
        assert app.admin is not None
        new = copy.deepcopy(app.config)
        new.dead_letter.max_rate = 5.0
        new.limits.max_connections = 10
        app.config_loader = lambda: copy.deepcopy(new)
        # The API was started before the loader was set: give it the reload hook now.
        app.admin.reload = app._admin_reload
        caplog.set_level(logging.INFO, "mqttd.admin")
        async with (
            aiohttp.ClientSession(base_url=app.admin.url) as http,
            http.post("/api/v1/reload") as r,
        ):
            assert r.status == 200
            changes = (await r.json())["changes"]
        assert changes == [
            "dead_letter.max_rate 100.0 -> 5.0",
            "limits.max_connections 0 -> 10 (applied at the next start)",
        ]
        assert app.config.dead_letter.max_rate == 5.0
        assert any("admin: reload by anonymous@loopback" in r.getMessage() for r in caplog.records)


async def test_publish_of_a_message_the_cluster_cannot_carry_is_refused() -> None:
    """In a cluster a message larger than NATS carries goes nowhere: 413, not "matched"."""
    app = App(admin_config())
    backplane = InProcessBackplane(InProcessHub())
    backplane.max_payload = 4
    app.broker.use_backplane(backplane)
    await app.start()
    try:
        assert app.admin is not None
        async with aiohttp.ClientSession(base_url=app.admin.url) as http:
            async with http.post("/api/v1/publish", json={"topic": "t", "payload": "12345"}) as r:
                assert r.status == 413
                assert (await r.json())["code"] == "TOO_LARGE"
            async with http.post("/api/v1/publish", json={"topic": "t", "payload": "1234"}) as r:
                assert r.status == 200
    finally:
        await app.stop()
