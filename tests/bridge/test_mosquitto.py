"""Bridges with a real remote: Debian's mosquitto and mqttd processes, paho clients.

- mqttd -> mosquitto (our bridge client), MQTT 3.1.1 and 5.0, topics remapped both ways;
- mosquitto -> mqttd (mosquitto's bridge connects to us, with the bridge bit in 3.1.1);
- QoS 1 across a remote that is stopped and started again mid-stream: none lost, in order;
- queued messages that survive a restart of mqttd itself (SQLite);
- TLS to the remote, with a certificate made on the fly, and with the wrong CA.

Every process is started on a free port and killed at teardown.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from integration.paho_client import V5, V311, PahoClient

from .conftest import MosquittoFactory, PahoFactory, TlsFiles, free_port

if TYPE_CHECKING:
    from conftest import MqttdFactory, MqttdProcess

pytestmark = pytest.mark.timeout(120)

LEVELS = [pytest.param(4, V311, id="mqtt311"), pytest.param(5, V5, id="mqtt5")]


def bridge_toml(name: str, port: int, topics: str, **keys: object) -> str:
    """A [[bridge]] table (TOML) to 127.0.0.1:`port` that reconnects quickly."""
    lines = [
        "[[bridge]]",
        f'name = "{name}"',
        f'addresses = ["127.0.0.1:{port}"]',
        "reconnect_delay_min = 0.2",
        "reconnect_delay_max = 1.0",
    ]
    for key, value in keys.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n" + topics


def wait_bridge_up(server: MqttdProcess, name: str, times: int = 1, timeout: float = 15) -> None:
    """Wait for the `times`-th "bridge NAME: connected" line of an mqttd process."""
    marker = f"bridge {name}: connected to"
    server.wait_for_stderr(lambda text: text.count(marker) >= times, timeout)


def wait_mosquitto_bridge_up(watcher: PahoClient, timeout: float = 15) -> None:
    """Wait until mosquitto announces its bridge connected ($SYS/.../state = 1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = watcher.expect_message(max(deadline - time.monotonic(), 0.01))
        if message.topic.startswith("$SYS/broker/connection/") and message.payload == b"1":
            return
    raise AssertionError("mosquitto's bridge did not connect")


# -- mqttd -> mosquitto ---------------------------------------------------------------------


@pytest.mark.parametrize(("level", "paho_level"), LEVELS)
def test_mqttd_bridges_to_mosquitto_with_remapping(
    level: int,
    paho_level: object,
    mosquitto_factory: MosquittoFactory,
    mqttd_factory: MqttdFactory,
    paho_factory: PahoFactory,
) -> None:
    remote = mosquitto_factory()
    topics = """
[[bridge.topics]]
pattern = "sensors/#"
direction = "out"
qos = 1
remote_prefix = "site1/"
[[bridge.topics]]
pattern = "cmd/#"
direction = "in"
qos = 1
local_prefix = "from-cloud/"
remote_prefix = "site1/"
[[bridge.topics]]
pattern = "shared/#"
direction = "both"
qos = 1
"""
    local = mqttd_factory(config=bridge_toml("cloud", remote.port, topics, protocol_version=level))
    wait_bridge_up(local, "cloud")
    at_remote = paho_factory(remote.port, "at-remote", protocol=paho_level)
    at_local = paho_factory(local.port, "at-local", protocol=paho_level)
    at_remote.subscribe("#", 1)
    at_local.subscribe("#", 1)

    at_local.publish("sensors/t1", b"21.5", qos=1)
    message = at_remote.expect_message()
    assert (message.topic, message.payload, message.qos) == ("site1/sensors/t1", b"21.5", 1)
    assert at_local.expect_message().topic == "sensors/t1"

    at_remote.publish("site1/cmd/reboot", b"now", qos=1)
    assert at_remote.expect_message().topic == "site1/cmd/reboot"
    message = at_local.expect_message()
    assert (message.topic, message.payload) == ("from-cloud/cmd/reboot", b"now")

    # A "both" rule: each side gets each message once, nothing comes back.
    at_remote.publish("shared/a", b"from remote", qos=1)
    at_local.publish("shared/b", b"from local", qos=1)
    got_remote = {m.payload for m in at_remote.expect_messages(2)}
    got_local = {m.payload for m in at_local.expect_messages(2)}
    assert got_remote == got_local == {b"from remote", b"from local"}
    at_remote.expect_no_message(1.0)
    at_local.expect_no_message(0.2)
    if level == 4:
        # Mosquitto took the bridge bit (try_private): it logs a bridge, not a client.
        assert "New bridge connected" in remote.log.read_text()


# -- mosquitto -> mqttd ---------------------------------------------------------------------


@pytest.mark.parametrize("version", ["mqttv311", "mqttv50"])
def test_mosquitto_bridges_to_mqttd(
    version: str,
    mosquitto_factory: MosquittoFactory,
    mqttd_factory: MqttdFactory,
    paho_factory: PahoFactory,
) -> None:
    local = mqttd_factory()
    remote = mosquitto_factory(
        f"""
connection to-mqttd
address 127.0.0.1:{local.port}
bridge_protocol_version {version}
try_private true
cleansession true
restart_timeout 1 2
topic mq/# both 1
topic mqttd/# in 1 from-mqttd/ ""
"""
    )
    watcher = paho_factory(remote.port, "watcher")
    watcher.subscribe("$SYS/broker/connection/#", 0)
    wait_mosquitto_bridge_up(watcher)
    at_remote = paho_factory(remote.port, "at-mosquitto")
    at_local = paho_factory(local.port, "at-mqttd")
    at_remote.subscribe("mq/#", 1)
    at_remote.subscribe("from-mqttd/#", 1)
    at_local.subscribe("mq/#", 1)

    at_remote.publish("mq/from-mosquitto", b"1", qos=1)
    at_local.publish("mq/from-mqttd", b"2", qos=1)
    at_local.publish("mqttd/status", b"3", qos=1)
    got_local = {(m.topic, m.payload) for m in at_local.expect_messages(2)}
    assert got_local == {("mq/from-mosquitto", b"1"), ("mq/from-mqttd", b"2")}
    got_remote = {(m.topic, m.payload) for m in at_remote.expect_messages(3)}
    assert got_remote == {
        ("mq/from-mosquitto", b"1"),
        ("mq/from-mqttd", b"2"),
        ("from-mqttd/mqttd/status", b"3"),
    }
    # mqttd never sends mosquitto's messages back to it (3.1.1: the bridge bit; 5.0:
    # mosquitto's No Local), so nothing arrives twice on either side.
    at_remote.expect_no_message(1.5)
    at_local.expect_no_message(0.2)


def test_retained_messages_cross_a_mosquitto_bridge_with_their_flag(
    mosquitto_factory: MosquittoFactory,
    mqttd_factory: MqttdFactory,
    paho_factory: PahoFactory,
) -> None:
    local = mqttd_factory()
    remote = mosquitto_factory(
        f"""
connection to-mqttd
address 127.0.0.1:{local.port}
bridge_protocol_version mqttv311
try_private true
cleansession true
restart_timeout 1 2
topic status/# out 1
"""
    )
    watcher = paho_factory(remote.port, "watcher")
    watcher.subscribe("$SYS/broker/connection/#", 0)
    wait_mosquitto_bridge_up(watcher)
    publisher = paho_factory(remote.port, "publisher")
    publisher.publish("status/door", b"open", qos=1, retain=True)
    late = paho_factory(local.port, "late")
    deadline = time.monotonic() + 5
    while True:
        late.subscribe("status/#", 1)
        try:
            message = late.expect_message(0.5)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            late.unsubscribe("status/#")
    assert (message.topic, message.payload, message.retain) == ("status/door", b"open", True)


# -- no loss across a remote restart ----------------------------------------------------------

STREAM = 3000  # QoS 1 messages, published at about 2000 a second


class Stream:
    """Publishes STREAM numbered QoS 1 messages in a thread, without waiting for each one,
    so the bridge always has some in flight; collects what a subscriber receives."""

    def __init__(self, publisher: PahoClient) -> None:
        self.publisher = publisher
        self.received: list[int] = []
        self.thread = threading.Thread(target=self._publish, daemon=True)

    def _publish(self) -> None:
        infos = []
        for i in range(STREAM):
            infos.append(self.publisher.client.publish("stream/x", str(i).encode(), 1))
            time.sleep(0.0005)
        for info in infos:
            info.wait_for_publish(30)

    def collect(self, subscriber: PahoClient, until: int, timeout: float = 60) -> None:
        """Take what `subscriber` received until `until` distinct messages are in."""
        deadline = time.monotonic() + timeout
        while len(set(self.received)) < until and time.monotonic() < deadline:
            try:
                message = subscriber.messages.get(timeout=0.1)
            except Exception:
                continue
            self.received.append(int(message.payload))

    def drain(self, subscriber: PahoClient) -> None:
        """Take every message a closed `subscriber` still holds. Paho acknowledges a QoS 1
        message as it queues it, so those that came after `collect` stopped are the
        remote's to forget, not to send again: leaving them behind loses them (as
        "message 1000" once was, after `collect(until=1000)`)."""
        while True:
            try:
                message = subscriber.messages.get_nowait()
            except queue.Empty:
                return
            self.received.append(int(message.payload))

    def check(self) -> None:
        """None lost; at least once, in order: each message first arrives in sequence."""
        missing = sorted(set(range(STREAM)) - set(self.received))
        assert not missing, f"{len(missing)} lost: {missing[:20]}..."
        assert list(dict.fromkeys(self.received)) == list(range(STREAM))


def test_qos1_stream_survives_the_remote_restarting_mid_stream(
    tmp_path: Path,
    mosquitto_factory: MosquittoFactory,
    mqttd_factory: MqttdFactory,
    paho_factory: PahoFactory,
) -> None:
    # The remote keeps its subscriber's session across its restart (persistence, saved
    # by mosquitto on SIGTERM): what the bridge delivers while the subscriber is away
    # waits there. (Mosquitto acknowledges before it saves, so a SIGKILL could lose on
    # its side what it had acknowledged; the next test kills an mqttd remote -9.)
    store = tmp_path / "remote-store"
    store.mkdir()
    remote = mosquitto_factory(persistence_dir=store)
    topics = '[[bridge.topics]]\npattern = "stream/#"\nqos = 1\n'
    local = mqttd_factory(config=bridge_toml("r", remote.port, topics))
    wait_bridge_up(local, "r")
    subscriber = paho_factory(remote.port, "stream-sub", clean=False)
    subscriber.subscribe("stream/#", 1)
    stream = Stream(paho_factory(local.port, "stream-pub"))
    stream.thread.start()
    stream.collect(subscriber, until=STREAM // 3)
    remote.stop()  # mid-stream: the bridge has messages in flight
    stream.collect(subscriber, until=STREAM, timeout=0.5)  # what was already on its way
    subscriber.close()
    stream.drain(subscriber)
    time.sleep(1.0)
    remote.start()
    subscriber = paho_factory(remote.port, "stream-sub", clean=False)
    stream.collect(subscriber, until=STREAM)
    stream.thread.join(30)
    stream.check()
    wait_bridge_up(local, "r", times=2)


def test_qos1_stream_survives_a_remote_mqttd_killed_with_sigkill(
    tmp_path: Path, mqttd_factory: MqttdFactory, paho_factory: PahoFactory
) -> None:
    """The same, the remote killed -9: an mqttd remote acknowledges only what its SQLite
    file holds, so whatever the bridge had not seen acknowledged is sent again."""
    port = free_port()
    remote_config = (
        f'[persistence]\nenabled = true\npath = "{tmp_path / "remote.db"}"\n'
        "[limits]\nmax_queued_messages = 0\n"
        # The first listener gets "-p 0" from the fixture; this one keeps its port.
        f'[[listeners]]\nport = 0\n[[listeners]]\nname = "fixed"\nport = {port}\n'
    )
    remote = mqttd_factory(config=remote_config)
    topics = '[[bridge.topics]]\npattern = "stream/#"\nqos = 1\n'
    local = mqttd_factory(config=bridge_toml("r", port, topics))
    wait_bridge_up(local, "r")
    subscriber = paho_factory(port, "stream-sub", clean=False)
    subscriber.subscribe("stream/#", 1)
    stream = Stream(paho_factory(local.port, "stream-pub"))
    stream.thread.start()
    stream.collect(subscriber, until=STREAM // 3)
    remote.kill()  # SIGKILL mid-stream: no goodbye, no flush
    subscriber.close()
    stream.drain(subscriber)  # received (and acknowledged) before the kill
    time.sleep(1.0)
    remote = mqttd_factory(config=remote_config)
    subscriber = paho_factory(port, "stream-sub", clean=False)
    stream.collect(subscriber, until=STREAM)
    stream.thread.join(30)
    stream.check()


def test_queued_messages_survive_a_restart_of_mqttd(
    tmp_path: Path,
    mosquitto_factory: MosquittoFactory,
    mqttd_factory: MqttdFactory,
    paho_factory: PahoFactory,
) -> None:
    store = tmp_path / "remote-store"
    store.mkdir()
    remote = mosquitto_factory(persistence_dir=store)
    # A persistent subscriber on the remote, then the remote goes away.
    paho_factory(remote.port, "queued-sub", clean=False).subscribe("q/#", 1)
    remote.stop()
    db = tmp_path / "mqttd.db"
    config = f'[persistence]\nenabled = true\npath = "{db}"\n' + bridge_toml(
        "r", remote.port, '[[bridge.topics]]\npattern = "q/#"\nqos = 1\n'
    )
    first = mqttd_factory(config=config)
    publisher = paho_factory(first.port, "queued-pub")
    for i in range(100):
        publisher.publish("q/x", str(i).encode(), qos=1)
    publisher.close()
    assert first.stop() == 0  # SIGTERM: the queue is in the SQLite file
    second = mqttd_factory(config=config)
    remote.start()
    wait_bridge_up(second, "r")
    subscriber = paho_factory(remote.port, "queued-sub", clean=False)
    got = [int(m.payload) for m in subscriber.expect_messages(100, timeout=20)]
    assert got == list(range(100))
    subscriber.expect_no_message(0.5)


# -- TLS ----------------------------------------------------------------------------------------


def tls_listener(tls_files: TlsFiles, port: int) -> str:
    """A second mosquitto listener, over TLS with the test certificate."""
    return (
        f"listener {port} 127.0.0.1\ncafile {tls_files.ca}\n"
        f"certfile {tls_files.cert}\nkeyfile {tls_files.key}\n"
    )


@pytest.mark.parametrize("server_hostname", ["", "localhost"])
def test_bridge_over_tls_to_mosquitto(
    server_hostname: str,
    tls_files: TlsFiles,
    mosquitto_factory: MosquittoFactory,
    mqttd_factory: MqttdFactory,
    paho_factory: PahoFactory,
) -> None:
    tls_port = free_port()
    # The generated listener stays plain, for the test's paho client.
    remote = mosquitto_factory(tls_listener(tls_files, tls_port))
    topics = '[[bridge.topics]]\npattern = "secure/#"\ndirection = "both"\nqos = 1\n'
    # "127.0.0.1" is in the certificate's names; so is "localhost" (server_hostname).
    tls = f'[bridge.tls]\ncafile = "{tls_files.ca}"\nserver_hostname = "{server_hostname}"\n'
    local = mqttd_factory(config=bridge_toml("tls", tls_port, topics) + tls)
    wait_bridge_up(local, "tls")
    at_remote = paho_factory(remote.port, "at-remote")
    at_local = paho_factory(local.port, "at-local")
    at_remote.subscribe("secure/#", 1)
    at_local.subscribe("secure/#", 1)
    at_local.publish("secure/out", b"sealed", qos=1)
    assert at_remote.expect_message().payload == b"sealed"
    at_remote.publish("secure/in", b"sealed too", qos=1)
    assert {m.payload for m in at_local.expect_messages(2)} == {b"sealed", b"sealed too"}


def test_bridge_over_tls_refuses_a_remote_signed_by_another_ca(
    tls_files: TlsFiles,
    mosquitto_factory: MosquittoFactory,
    mqttd_factory: MqttdFactory,
) -> None:
    tls_port = free_port()
    mosquitto_factory(tls_listener(tls_files, tls_port))
    topics = '[[bridge.topics]]\npattern = "#"\n'
    tls = f'[bridge.tls]\ncafile = "{tls_files.other_ca}"\n'
    local = mqttd_factory(config=bridge_toml("tls", tls_port, topics) + tls)
    text = local.wait_for_stderr(lambda s: "CERTIFICATE_VERIFY_FAILED" in s, 10)
    assert "bridge tls: connected to" not in text
