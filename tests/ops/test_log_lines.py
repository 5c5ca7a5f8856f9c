"""What an operator reads at the default level (INFO): every connect, disconnect, refusal.

And what must never be there: a password or a message payload. The core is driven
without sockets (`core.Core`); records are captured with caplog.
"""

from __future__ import annotations

import json
import logging

import pytest

from mqttd.auth.hooks import AuthResult
from mqttd.ops.logging import JsonFormatter
from mqttd.protocol import Connack, Connect, Properties, Publish, Will
from mqttd.protocol.reason_codes import ReasonCode

from .core import Core

PASSWORD = b"pw-3f9c1e"
PAYLOAD = b"payload-7d2a90"


def info_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]


async def test_a_connect_line_names_client_address_level_clean_start_keepalive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    core = await Core().start()
    client = core.client(5, listener="ws")
    client.send(Connect("sensor-17", 5, False, 45))
    [line] = [m for m in info_lines(caplog) if "sensor-17" in m]
    for part in ("ws", client.conn.peer, "'sensor-17'", "level 5", "clean 0", "keepalive 45"):
        assert part in line, (part, line)


async def test_refused_connects_are_logged_with_address_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    core = await Core().start()
    client = core.client(3)
    client.send(Connect("", 3, True, 0, protocol_name="MQIsdp"))  # 3.1: an id is required
    [connack] = client.packets()
    assert isinstance(connack, Connack) and connack.reason_code == 2
    [line] = [m for m in info_lines(caplog) if "refused" in m]
    assert client.conn.peer in line and "empty client id" in line


async def test_a_refused_line_names_the_client_id_asked_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    core = await Core(max_client_id_length=23).start()
    client = core.client(4)
    client.send(Connect("x" * 30, 4, True, 0))
    [line] = [m for m in info_lines(caplog) if "refused" in m]
    assert "x" * 30 in line


async def test_every_disconnect_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    core = await Core().start()
    polite, dropped = core.client(4), core.client(4)
    polite.connect("polite")
    dropped.connect("dropped")
    polite.disconnect()
    dropped.conn.connection_lost()
    lines = info_lines(caplog)
    assert any("'polite'" in m and "disconnected" in m for m in lines), lines
    assert any("'dropped'" in m and "disconnected" in m for m in lines), lines


async def test_a_disconnect_line_says_why(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    core = await Core().start()
    polite, dropped = core.client(4), core.client(4)
    polite.connect("polite")
    dropped.connect("dropped")
    polite.disconnect()
    dropped.conn.connection_lost()
    [polite_line] = [m for m in info_lines(caplog) if "'polite'" in m and "disconnected" in m]
    [dropped_line] = [m for m in info_lines(caplog) if "'dropped'" in m and "disconnected" in m]
    assert polite_line != dropped_line.replace("dropped", "polite")


async def test_no_password_or_payload_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    core = await Core().start()
    sub = core.client(5)
    sub.connect("sub")
    sub.subscribe("t/#")
    client = core.client(5)
    will = Will("t/will", PAYLOAD + b"-will", 0, False)
    client.send(Connect("secretive", 5, True, 0, "user", PASSWORD, will))
    client.send(Publish("t/x", PAYLOAD, 0, True))
    client.conn.connection_lost()  # the will goes out
    refused = core.client(5)  # refused: no enhanced authentication method is supported
    auth = Properties(authentication_method="SCRAM-SHA-1")
    refused.send(Connect("refused", 5, True, 0, "user", PASSWORD, None, auth))
    assert len(sub.publishes()) == 2
    text = "\n".join(info_lines(caplog))
    assert "'secretive'" in text and "refused" in text  # the lines were captured
    for secret in (PASSWORD, PAYLOAD):
        assert secret.decode() not in text


async def test_a_bad_password_is_worded_as_such_with_the_user_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    core = await Core().start()
    core.broker._authenticate = lambda info: AuthResult(ReasonCode.BAD_USER_NAME_OR_PASSWORD)
    client = core.client(5)
    client.send(Connect("dev-9", 5, True, 0, "alice", PASSWORD))
    [connack] = client.packets()
    assert isinstance(connack, Connack) and connack.reason_code == 0x86
    [record] = [r for r in caplog.records if "refused" in r.getMessage()]
    line = record.getMessage()
    assert "user 'alice'" in line and "bad user name or password (0x86)" in line, line
    assert "not authorised" not in line
    # Structured fields for JSON logs: who, from where, on which listener, why.
    fields = {k: getattr(record, k) for k in ("client_id", "username", "listener", "reason_code")}
    assert fields == {
        "client_id": "dev-9",
        "username": "alice",
        "listener": "mqtt",
        "reason_code": 0x86,
    }
    assert record.address == client.conn.peer  # type: ignore[attr-defined]
    entry = json.loads(JsonFormatter().format(record))
    assert entry["username"] == "alice" and entry["reason_code"] == 0x86


async def test_a_connect_line_names_the_user(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    core = await Core().start()
    client = core.client(4)
    client.send(Connect("meter-1", 4, True, 30, "bob", b"x"))
    [record] = [r for r in caplog.records if "'meter-1'" in r.getMessage()]
    assert "user 'bob'" in record.getMessage()
    assert record.username == "bob" and record.client_id == "meter-1"  # type: ignore[attr-defined]
