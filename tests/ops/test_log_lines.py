"""What an operator reads at the default level (INFO): every connect, disconnect, refusal.

And what must never be there: a password or a message payload. The core is driven
without sockets (`core.Core`); records are captured with caplog.
"""

from __future__ import annotations

import logging

import pytest

from mqttd.protocol import Connack, Connect, Properties, Publish, Will

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
