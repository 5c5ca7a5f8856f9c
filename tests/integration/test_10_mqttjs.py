"""Interoperability with MQTT.js (npm ``mqtt``) under Node, protocol versions 4 and 5."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import MqttdProcess

pytestmark = pytest.mark.timeout(30)

SCRIPT = Path(__file__).parent / "js" / "roundtrip.cjs"


@pytest.mark.parametrize("protocol_version", [4, 5])
def test_mqttjs_round_trip_at_every_qos_and_retained(
    node_with_mqtt_js: tuple[str, Path], server: MqttdProcess, topic: str, protocol_version: int
) -> None:
    node, node_modules = node_with_mqtt_js
    env = dict(os.environ, NODE_PATH=str(node_modules))
    url = f"mqtt://{server.host}:{server.port}"
    result = subprocess.run(
        [node, str(SCRIPT), url, str(protocol_version), topic],
        capture_output=True,
        timeout=20,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    events: list[dict[str, Any]] = [
        json.loads(line) for line in result.stdout.decode().splitlines() if line.startswith("{")
    ]
    report = f"stdout:\n{result.stdout.decode()}\nstderr:\n{result.stderr.decode()}"
    assert result.returncode == 0, report
    assert events[0] == {"event": "connect", "sessionPresent": False, "reasonCode": 0}, report
    assert events[1] == {"event": "suback", "granted": [2]}, report
    messages = sorted(
        (e["topic"], e["payload"], e["qos"], e["retain"]) for e in events if e["event"] == "message"
    )
    assert messages == [(f"{topic}/q{q}", str(q), q, False) for q in range(3)], report
    retained = [e for e in events if e["event"] == "retained"]
    assert retained == [
        {"event": "retained", "topic": f"{topic}/retained", "payload": "kept", "retain": True}
    ], report
    assert events[-1] == {"event": "done"}, report
