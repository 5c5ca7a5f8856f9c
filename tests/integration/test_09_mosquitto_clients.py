"""Interoperability with Debian's mosquitto_pub and mosquitto_sub (libmosquitto)."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .conftest import PahoFactory
from .paho_client import V5

if TYPE_CHECKING:
    from conftest import MqttdProcess

pytestmark = pytest.mark.timeout(30)

VERSIONS = pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
MESSAGE_FORMAT = "MSG|%t|%q|%r|%P|%p"  # topic, QoS, retain flag, 5.0 user properties, payload


class Subscriber:
    """A running mosquitto_sub, started with -d so we can see its SUBACK arrive."""

    def __init__(self, binary: str, server: MqttdProcess, *args: str) -> None:
        self.lines: list[str] = []
        self.user_properties: list[str] = []
        self._subscribed = threading.Event()
        # stdout is a pipe, so libc would hold the SUBACK line back: line-buffer it.
        stdbuf = shutil.which("stdbuf")
        cmd = [stdbuf, "-oL"] if stdbuf else []
        cmd += [binary, "-h", server.host, "-p", str(server.port), "-d", "-F", MESSAGE_FORMAT]
        self.proc = subprocess.Popen(
            [*cmd, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if "received SUBACK" in line:
                self._subscribed.set()

    def wait_subscribed(self, timeout: float = 5.0) -> None:
        """Block until mosquitto_sub has its SUBACK (messages published now will arrive)."""
        if not self._subscribed.wait(timeout):
            self.proc.kill()
            raise AssertionError("mosquitto_sub got no SUBACK:\n" + "\n".join(self.lines))

    def finish(self, timeout: float = 8.0) -> tuple[int, list[tuple[str, int, bool, str]]]:
        """Wait for exit; return the exit code and the messages (topic, qos, retain, payload)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("mosquitto_sub did not exit:\n" + "\n".join(self.lines)) from None
        self._reader.join(2)
        messages = []
        for line in self.lines:
            if line.startswith("MSG|"):
                _, topic, qos, retain, user_properties, payload = line.split("|", 5)
                self.user_properties.append(user_properties)
                messages.append((topic, int(qos), retain == "1", payload))
        return code, messages

    def kill(self) -> None:
        """Stop it if still running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


StartSubscriber = Callable[..., Subscriber]


@pytest.fixture
def subscribers(mosquitto_sub: str, server: MqttdProcess) -> Iterator[StartSubscriber]:
    """Start mosquitto_sub processes; all are killed at teardown."""
    started: list[Subscriber] = []

    def start(*args: str) -> Subscriber:
        sub = Subscriber(mosquitto_sub, server, *args)
        started.append(sub)
        return sub

    yield start
    for sub in started:
        sub.kill()


def _pub(binary: str, server: MqttdProcess, *args: str) -> None:
    result = subprocess.run(
        [binary, "-h", server.host, "-p", str(server.port), *args],
        capture_output=True,
        timeout=10,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()


@VERSIONS
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mosquitto_sub_receives_mosquitto_pub_message(
    subscribers: StartSubscriber,
    mosquitto_pub: str,
    server: MqttdProcess,
    topic: str,
    version: str,
    qos: int,
) -> None:
    sub = subscribers("-V", version, "-t", topic, "-q", "2", "-C", "1", "-W", "8")
    sub.wait_subscribed()
    _pub(mosquitto_pub, server, "-V", version, "-t", topic, "-q", str(qos), "-m", f"hello {qos}")
    code, messages = sub.finish()
    assert code == 0
    assert messages == [(topic, qos, False, f"hello {qos}")]


@VERSIONS
def test_mosquitto_pub_retained_message_reaches_later_subscriber_and_is_cleared(
    subscribers: StartSubscriber, mosquitto_pub: str, server: MqttdProcess, topic: str, version: str
) -> None:
    _pub(mosquitto_pub, server, "-V", version, "-t", topic, "-q", "1", "-r", "-m", "kept")
    sub = subscribers("-V", version, "-t", topic, "-q", "1", "-C", "1", "-W", "8")
    code, messages = sub.finish()
    assert code == 0
    assert messages == [(topic, 1, True, "kept")]
    _pub(mosquitto_pub, server, "-V", version, "-t", topic, "-q", "1", "-r", "-n")  # clear
    empty = subscribers("-V", version, "-t", topic, "-q", "1", "-C", "1", "-W", "1")
    empty.wait_subscribed()
    code, messages = empty.finish()
    assert messages == []
    assert code == 27  # mosquitto_sub's "timed out" exit code: nothing was retained


@VERSIONS
def test_mosquitto_sub_gets_many_lines_in_order(
    subscribers: StartSubscriber,
    mosquitto_pub: str,
    server: MqttdProcess,
    topic: str,
    version: str,
    tmp_path: Path,
) -> None:
    lines = [f"line {i}" for i in range(30)]
    source = tmp_path / "lines.txt"
    source.write_text("\n".join(lines) + "\n")
    sub = subscribers("-V", version, "-t", f"{topic}/#", "-q", "1", "-C", "30", "-W", "8")
    sub.wait_subscribed()
    # -l: one message per line of stdin, over one connection.
    result = subprocess.run(
        [
            mosquitto_pub,
            "-h",
            server.host,
            "-p",
            str(server.port),
            "-V",
            version,
            "-t",
            f"{topic}/lines",
            "-q",
            "1",
            "-l",
        ],
        input=source.read_bytes(),
        capture_output=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr.decode()
    code, messages = sub.finish()
    assert code == 0
    assert [m[3] for m in messages] == lines


def test_mosquitto_pub_v31_reaches_paho_v5_subscriber(
    paho: PahoFactory, mosquitto_pub: str, server: MqttdProcess, uid: str, topic: str
) -> None:
    subscriber = paho(uid, protocol=V5)
    subscriber.subscribe(topic, 1)
    _pub(
        mosquitto_pub,
        server,
        "-V",
        "mqttv31",
        "-i",
        uid[:20] + "p",
        "-t",
        topic,
        "-q",
        "1",
        "-m",
        "from 3.1",
    )
    message = subscriber.expect_message()
    assert (message.payload, message.qos) == (b"from 3.1", 1)


def test_paho_publish_reaches_mosquitto_sub_with_user_property(
    subscribers: StartSubscriber, paho: PahoFactory, uid: str, topic: str
) -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    sub = subscribers("-V", "mqttv5", "-t", topic, "-q", "1", "-C", "1", "-W", "8")
    sub.wait_subscribed()
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = ("origin", "paho")
    paho(uid, protocol=V5).publish(topic, b"with props", 1, properties=properties)
    code, messages = sub.finish()
    assert code == 0
    assert messages == [(topic, 1, False, "with props")]
    assert sub.user_properties == ["origin:paho"]  # forwarded unaltered [MQTT-3.3.2-17]
