"""Real Mosquitto and mqttd bridged, both run from mosquitto.conf files.

- Mosquitto bridges into mqttd: mqttd runs a mosquitto.conf with a password file made by
  mosquitto_passwd and an ACL; Mosquitto's `connection` section logs in with
  remote_username/remote_password. Mosquitto's own state notification arrives on mqttd
  under the name Mosquitto gives it ("<hostname>.<connection>"), the name the converter
  gives mqttd's bridges too.
- mqttd bridges to Mosquitto from a `connection` section: messages cross both ways and
  the state is published on both brokers, as Mosquitto's notifications are.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from integration.paho_client import PahoClient

from .conftest import MosquittoFactory, PahoFactory

if TYPE_CHECKING:
    from conftest import MqttdFactory

pytestmark = pytest.mark.timeout(120)


def expect_state(watcher: PahoClient, topic: str, payload: bytes, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            message = watcher.expect_message(max(deadline - time.monotonic(), 0.01))
        except AssertionError:
            break
        seen.append((message.topic, message.payload))
        if (message.topic, message.payload) == (topic, payload):
            return
    raise AssertionError(f"no {topic} = {payload!r}; saw {seen}")


def test_mosquitto_bridges_into_mqttd_run_from_a_mosquitto_conf(
    tmp_path: Path,
    mosquitto_factory: MosquittoFactory,
    mqttd_factory: MqttdFactory,
    paho_factory: PahoFactory,
) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "edge", "s3cret"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "reader", "r34d"], check=True)
    acl = tmp_path / "acl"
    acl.write_text(
        "user edge\n"
        "topic readwrite site1/#\n"
        "topic write $SYS/broker/connection/#\n"
        "user reader\n"
        "topic read site1/#\n"
        "topic read $SYS/broker/connection/#\n"
        "topic write cmd/#\n"
        "pattern read cmd/%u/#\n"
    )
    conf = tmp_path / "mqttd-mosquitto.conf"
    conf.write_text(
        f"listener 1883\nallow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n"
    )
    server = mqttd_factory(["-c", str(conf)])
    reader = PahoClient("127.0.0.1", server.port, "reader")
    reader.client.username_pw_set("reader", "r34d")
    reader.connect()
    try:
        reader.subscribe("site1/#", 1)
        reader.subscribe("$SYS/broker/connection/#", 1)
        edge = mosquitto_factory(
            "connection up\n"
            f"address 127.0.0.1:{server.port}\n"
            "remote_username edge\n"
            "remote_password s3cret\n"
            'topic sensors/# out 1 "" site1/\n'
            'topic cmd/# in 1 "" site1/\n'
            "restart_timeout 1\n"
        )
        # Mosquitto's remote client id, and so its state topic: "<hostname>.<name>".
        expect_state(reader, f"$SYS/broker/connection/{socket.gethostname()}.up/state", b"1")
        on_edge = paho_factory(edge.port, "on-edge")
        on_edge.subscribe("cmd/#", 1)
        on_edge.publish("sensors/t1", b"21.5", 1)
        message = reader.expect_message()
        assert (message.topic, message.payload) == ("site1/sensors/t1", b"21.5")
        # ... and back: the reader may not write site1/cmd (ACL), the edge user may.
        writer = PahoClient("127.0.0.1", server.port, "writer")
        writer.client.username_pw_set("edge", "s3cret")
        writer.connect()
        writer.publish("site1/cmd/open", b"1", 1)
        got = on_edge.expect_message()
        assert (got.topic, got.payload) == ("cmd/open", b"1")
        writer.close()
    finally:
        reader.close()


def test_mqttd_bridges_to_mosquitto_from_a_connection_section(
    tmp_path: Path,
    mosquitto_factory: MosquittoFactory,
    mqttd_factory: MqttdFactory,
    paho_factory: PahoFactory,
) -> None:
    remote = mosquitto_factory()
    watcher = paho_factory(remote.port, "watcher")
    watcher.subscribe("$SYS/broker/connection/#", 1)
    watcher.subscribe("site1/#", 1)
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        "listener 1883\n"
        "allow_anonymous true\n"
        "connection cloud\n"
        f"address 127.0.0.1:{remote.port}\n"
        'topic sensors/# out 1 "" site1/\n'
        'topic cmd/# in 1 "" site1/\n'
        "restart_timeout 1 2\n"
    )
    server = mqttd_factory(["-c", str(conf)])
    topic = f"$SYS/broker/connection/{socket.gethostname()}.cloud/state"
    expect_state(watcher, topic, b"1")  # published on the remote, as Mosquitto does
    local = paho_factory(server.port, "local")
    local.subscribe("$SYS/broker/connection/#", 1)
    got = local.expect_message()
    assert (got.topic, got.payload, got.retain) == (topic, b"1", True)
    local.subscribe("cmd/#", 1)
    local.publish("sensors/t1", b"7", 1)
    message = watcher.expect_message()
    assert (message.topic, message.payload) == ("site1/sensors/t1", b"7")
    watcher.publish("site1/cmd/x", b"go", 1)
    got = local.expect_message()
    assert (got.topic, got.payload) == ("cmd/x", b"go")
    server.kill()  # no DISCONNECT: the remote publishes the bridge's will
    expect_state(watcher, topic, b"0")
