"""Signals to the real `mqttd` process: SIGHUP reloads, SIGTERM stops cleanly and flushes.

Each test starts ``python -m mqttd -c mqttd.toml`` through the shared fixtures
(tests/conftest.py) and talks to it with paho-mqtt.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from integration.paho_client import V311, PahoClient

if TYPE_CHECKING:
    from conftest import MqttdFactory, MqttdProcess

WAIT = 10.0  # seconds for a log line to appear: two shared cores, a cold interpreter

# Connection logs "<Connection ...>: DISCONNECT 0x00" at DEBUG only: a probe of the level.
DEBUG_PROBE = "DISCONNECT 0x00 received"


def probe_debug_line(server: MqttdProcess, client_id: str) -> None:
    """Connect and disconnect a client: the broker logs DEBUG_PROBE if DEBUG is on."""
    probe = PahoClient(server.host, server.port, client_id)
    probe.connect()
    probe.disconnect()
    # The INFO line about the same disconnect comes after the DEBUG one.
    server.wait_for_stderr(lambda s: f"client '{client_id}' disconnected" in s, WAIT)


def reload(server: MqttdProcess, config: str, expect: str) -> str:
    (server.cwd / "mqttd.toml").write_text(config)
    server.send_signal(signal.SIGHUP)
    return server.wait_for_stderr(lambda s: expect in s, WAIT)


def test_sighup_reloads_the_log_level_and_keeps_every_connection(
    mqttd_factory: MqttdFactory, uid: str, topic: str
) -> None:
    server = mqttd_factory(config='[log]\nlevel = "info"\n')
    with PahoClient(server.host, server.port, f"{uid}-kept", protocol=V311) as kept:
        kept.connect()
        kept.subscribe(f"{topic}/#", qos=1)
        probe_debug_line(server, f"{uid}-before")
        assert DEBUG_PROBE not in server.stderr

        text = reload(server, '[log]\nlevel = "debug"\n', 'reloaded: log.level "info" -> "debug"')
        assert "SIGHUP received: reloading the configuration" in text
        probe_debug_line(server, f"{uid}-after")
        assert DEBUG_PROBE in server.stderr

        # The client connected before the reload never noticed it.
        assert not kept.disconnected.is_set()
        kept.publish(f"{topic}/ping", b"still here", qos=1)
        assert kept.expect_message().payload == b"still here"

        reload(server, '[log]\nlevel = "info"\n', 'reloaded: log.level "debug" -> "info"')
        marker = len(server.stderr)
        probe_debug_line(server, f"{uid}-again")
        assert DEBUG_PROBE not in server.stderr[marker:]
    assert server.stop(signal.SIGTERM) == 0


def test_sighup_with_an_invalid_file_changes_nothing(
    mqttd_factory: MqttdFactory, uid: str, topic: str
) -> None:
    server = mqttd_factory(config='[log]\nlevel = "info"\n')
    with PahoClient(server.host, server.port, f"{uid}-kept") as kept:
        kept.connect()
        kept.subscribe(f"{topic}/#")
        text = reload(
            server, '[log]\nlevel = "loud"\n', "configuration not reloaded: the running one stays"
        )
        assert 'config error: log.level: "loud" is not allowed' in text
        kept.publish(f"{topic}/x", b"ok")
        assert kept.expect_message().payload == b"ok"
        assert not kept.disconnected.is_set()
    assert server.stop(signal.SIGTERM) == 0


def test_sighup_names_what_waits_for_a_restart(mqttd_factory: MqttdFactory) -> None:
    server = mqttd_factory(config="[limits]\nmax_inflight_messages = 20\n")
    text = reload(
        server,
        "[limits]\nmax_inflight_messages = 5\n",
        "changed, applied at the next start: limits",
    )
    assert "reloaded: nothing changed" in text
    assert server.stop(signal.SIGTERM) == 0


def test_sighup_without_a_config_file_is_harmless(mqttd_process: MqttdProcess, uid: str) -> None:
    if mqttd_process.reference:
        pytest.skip("mqttd's own log lines")
    mqttd_process.send_signal(signal.SIGHUP)
    mqttd_process.wait_for_stderr(lambda s: "SIGHUP received: no config file to reload" in s, WAIT)
    with PahoClient(mqttd_process.host, mqttd_process.port, f"{uid}-c") as client:
        client.connect()
    assert mqttd_process.stop(signal.SIGTERM) == 0


def test_sigterm_disconnects_clients_and_exits_0(mqttd_factory: MqttdFactory, uid: str) -> None:
    server = mqttd_factory(config="")
    with PahoClient(server.host, server.port, f"{uid}-c") as client:
        client.connect()
        assert server.stop(signal.SIGTERM) == 0
        client.wait_disconnected()
    assert "SIGTERM received: stopping" in server.stderr
    assert "mqttd stopped" in server.stderr


def test_sigterm_flushes_a_persistent_session_to_sqlite(
    mqttd_factory: MqttdFactory, uid: str, topic: str, tmp_path: Path
) -> None:
    db = tmp_path / "state.db"
    args = ["--db", str(db)]
    server = mqttd_factory(args=args, config="")
    with PahoClient(server.host, server.port, f"{uid}-sub", clean=False) as sub:
        sub.connect()
        sub.subscribe(f"{topic}/#", qos=1)
        sub.disconnect()
    with PahoClient(server.host, server.port, f"{uid}-pub") as pub:
        pub.connect()
        pub.publish(f"{topic}/queued", b"while offline", qos=1)  # PUBACK: it is ours now
        pub.publish(f"{topic}/kept", b"retained", qos=1, retain=True)
    assert server.stop(signal.SIGTERM) == 0

    server = mqttd_factory(args=args, config="")
    with PahoClient(server.host, server.port, f"{uid}-sub", clean=False) as sub:
        assert sub.connect().session_present
        got = sub.expect_message()
        assert (got.topic, got.payload, got.qos) == (f"{topic}/queued", b"while offline", 1)
    with PahoClient(server.host, server.port, f"{uid}-late") as late:
        late.connect()
        late.subscribe(f"{topic}/kept")
        got = late.expect_message()
        assert (got.payload, got.retain) == (b"retained", True)
    assert server.stop(signal.SIGTERM) == 0
