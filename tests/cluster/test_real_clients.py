"""Other clients than paho across nodes: mosquitto_pub/mosquitto_sub (3.1.1 and 5.0) and
MQTT.js over WebSockets, each publisher on one node and its subscriber on another."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pytest

from .conftest import NodeFactory

if TYPE_CHECKING:
    from conftest import MqttdProcess

pytestmark = pytest.mark.timeout(60)

WS_SUBSCRIBER = Path(__file__).parent / "js" / "ws_subscriber.cjs"
WS_LISTENER = """
[[listeners]]
type = "mqtt"

[[listeners]]
type = "ws"
port = 0
"""


class Lines:
    """The stdout lines of a child process, read on a thread; the child is killed at close."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.put(raw.decode().rstrip("\n"))

    def next(self, timeout: float = 10) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout}s: {self.stderr()}") from None

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def children() -> Iterator[list[Lines]]:
    started: list[Lines] = []
    yield started
    for child in started:
        child.close()


def pub(mosquitto_pub: str, node: MqttdProcess, topic: str, payload: str, version: str) -> None:
    subprocess.run(
        [
            mosquitto_pub,
            "-h",
            "127.0.0.1",
            "-p",
            str(node.port),
            "-V",
            version,
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ],
        check=True,
        timeout=10,
        stdin=subprocess.DEVNULL,
    )


def probe_until(
    mosquitto_pub: str, node: MqttdProcess, topic: str, seen: Lines, is_probe: str
) -> None:
    """Publish probes on `topic` from `node` until `seen` prints `is_probe`, then drain."""
    deadline = time.monotonic() + 10
    while True:
        assert time.monotonic() < deadline, "nothing crossed the cluster within 10 s"
        pub(mosquitto_pub, node, topic, "probe", "mqttv311")
        try:
            line = seen.next(0.3)
        except AssertionError:
            continue
        assert is_probe in line, line
        break
    time.sleep(0.5)
    while not seen.lines.empty():
        assert is_probe in seen.next(0.1)


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_pub_on_one_node_reaches_mosquitto_sub_on_another(
    cluster_node: NodeFactory,
    mosquitto_pub: str,
    mosquitto_sub: str,
    children: list[Lines],
    version: str,
) -> None:
    a, b = cluster_node("a"), cluster_node("b")
    sub = Lines(
        [
            mosquitto_sub,
            "-h",
            "127.0.0.1",
            "-p",
            str(b.port),
            "-V",
            version,
            "-q",
            "1",
            "-v",
            "-t",
            "mx/#",
        ]
    )
    children.append(sub)
    probe_until(mosquitto_pub, a, "mx/probe", sub, "mx/probe probe")
    for i in range(5):
        pub(mosquitto_pub, a, f"mx/data/{i}", f"m{i}", version)
    assert [sub.next() for _ in range(5)] == [f"mx/data/{i} m{i}" for i in range(5)]
    with pytest.raises(AssertionError):
        sub.next(0.5)  # nothing twice


def test_mqttjs_over_websockets_on_one_node_gets_mosquitto_pub_from_another(
    cluster_node: NodeFactory,
    mosquitto_pub: str,
    node_with_mqtt_js: tuple[str, Path],
    children: list[Lines],
) -> None:
    a, b = cluster_node("a"), cluster_node("b", WS_LISTENER)
    ws = next(lst for lst in b.listeners if lst.scheme == "ws")
    node, node_modules = node_with_mqtt_js
    env = dict(os.environ, NODE_PATH=str(node_modules))
    js = Lines([node, str(WS_SUBSCRIBER), f"ws://127.0.0.1:{ws.port}/mqtt", "5", "js/#", "3"], env)
    children.append(js)
    assert json.loads(js.next(15)) == {"event": "ready"}
    probe_until(mosquitto_pub, a, "js/probe", js, '"payload":"probe"')
    for i in range(3):
        pub(mosquitto_pub, a, f"js/{i}", f"hello {i}", "mqttv5")
    got = [json.loads(js.next()) for _ in range(4)]
    assert got == [
        {"event": "message", "topic": f"js/{i}", "payload": f"hello {i}", "qos": 1}
        for i in range(3)
    ] + [{"event": "done"}]
    assert js.proc.wait(10) == 0
