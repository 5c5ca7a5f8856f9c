"""Cluster mode with SQLite persistence on: two real nodes, each with its own --db file.

A persistent session and retained messages live both in each node's SQLite file and in
the cluster (JetStream). A node killed with -9 and started again on its file must not
bring back what the cluster has moved on from: a client that reconnects to it gets the
session as the cluster knows it (nothing acknowledged lost, nothing acknowledged again),
and the retained messages as they are now. Neither node logs an error. Nor does it keep,
subscribed on NATS, a copy of a session that the cluster holds on another node.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from integration.paho_client import V5, V311, PahoClient, Received
from mqtt_raw import SUBACK, gen_subscribe
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .conftest import NatsServer, PahoFactory, free_port, node_toml, routed
from .test_durable_sessions import kill_under_load, raw_connect, receive_all

if TYPE_CHECKING:
    from conftest import MqttdFactory, MqttdProcess

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def persistent_node(
    factory: MqttdFactory, nats: NatsServer, name: str, db: Path, cwd: Path | None = None
) -> MqttdProcess:
    """Node `name` with SQLite persistence in `db` (started again in `cwd` if given)."""
    config = node_toml(nats.url, name).replace("enabled = false", "enabled = true", 1)
    return factory(["--db", str(db)], config, cwd=cwd)


def device(port: int, clients: list[PahoClient]) -> tuple[PahoClient, bool]:
    """The persistent 3.1.1 client "dev" (clean session 0), connected, and its CONNACK's
    session present flag."""
    client = PahoClient("127.0.0.1", port, "dev", protocol=V311, clean=False)
    clients.append(client)
    return client, client.connect().session_present


def drain(client: PahoClient, quiet: float = 1.0) -> list[Received]:
    """What `client` receives until it is quiet for `quiet` seconds."""
    got: list[Received] = []
    while True:
        try:
            got.append(client.expect_message(quiet))
        except AssertionError:
            return got


def errors_in(node: MqttdProcess) -> list[str]:
    """The lines of the node's stderr at ERROR or worse, and tracebacks."""
    return [
        line
        for line in node.stderr.splitlines()
        if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
    ]


def test_two_nodes_with_sqlite_lose_nothing_acknowledged_through_a_kill_and_a_restart(
    nats_server: NatsServer, mqttd_factory: MqttdFactory, paho_factory: PahoFactory, tmp_path: Path
) -> None:
    a = persistent_node(mqttd_factory, nats_server, "a", tmp_path / "a.db")
    b = persistent_node(mqttd_factory, nats_server, "b", tmp_path / "b.db")

    # A retained message set on a, seen by a wildcard subscription on b.
    publisher = paho_factory(b.port, "publisher")
    setter = paho_factory(a.port, "setter")
    setter.publish("r/1", b"kept", qos=1, retain=True)
    setter.publish("r/2", b"cleared later", qos=1, retain=True)
    time.sleep(0.5)  # the bucket's watchers on b
    watcher = paho_factory(b.port, "watcher")
    watcher.subscribe("r/#", 1)
    assert sorted(m.payload for m in watcher.expect_messages(2)) == [b"cleared later", b"kept"]

    # A persistent session on a; messages published on b are queued for it.
    clients: list[PahoClient] = []
    dev, _ = device(a.port, clients)
    dev.subscribe("d/#", 1)
    routed(publisher, "d/probe", dev)
    dev.disconnect()
    for i in range(20):
        publisher.publish(f"d/{i}", str(i).encode(), qos=1)

    a.kill()  # -9, with the session's queue on a (its SQLite file and JetStream)

    # The client comes back on b: the queue is there, once, and the session goes on.
    dev, present = device(b.port, clients)
    assert present
    assert [int(m.payload) for m in dev.expect_messages(20)] == list(range(20))
    for i in range(20, 25):
        publisher.publish(f"d/{i}", str(i).encode(), qos=1)
    assert [int(m.payload) for m in dev.expect_messages(5)] == list(range(20, 25))
    dev.disconnect()
    for i in range(25, 35):
        publisher.publish(f"d/{i}", str(i).encode(), qos=1)  # queued on b now
    setter2 = paho_factory(b.port, "setter2")
    setter2.publish("r/2", b"", qos=1, retain=True)  # cleared while a is down
    setter2.publish("r/3", b"new", qos=1, retain=True)

    # a starts again on its file, which still holds the session as it was at the kill.
    a = persistent_node(mqttd_factory, nats_server, "a", tmp_path / "a.db", cwd=a.cwd)
    dev, present = device(a.port, clients)
    assert present
    # Only what b queued: nothing acknowledged on b comes again from a's old copy.
    assert [int(m.payload) for m in drain(dev)] == list(range(25, 35))
    routed(publisher, "d/probe", dev)
    publisher.publish("d/35", b"35", qos=1)
    assert dev.expect_message().payload == b"35"

    # Retained messages on a are the cluster's as they are now.
    late = paho_factory(a.port, "late-watcher")
    late.subscribe("r/#", 1)
    assert sorted(m.payload for m in drain(late)) == [b"kept", b"new"]

    # The restarted node's old copy of the session does not move back to b either.
    dev.disconnect()
    dev, present = device(b.port, clients)
    assert present
    assert drain(dev) == []
    dev.disconnect()

    for client in clients:
        client.close()
    for node in (a, b):
        assert errors_in(node) == [], node.stderr


def test_a_client_back_on_its_restarted_node_gets_every_acknowledged_message(
    nats_server: NatsServer, mqttd_factory: MqttdFactory, paho_factory: PahoFactory, tmp_path: Path
) -> None:
    a = persistent_node(mqttd_factory, nats_server, "a", tmp_path / "a.db")
    b = persistent_node(mqttd_factory, nats_server, "b", tmp_path / "b.db")
    # Connected, acknowledging nothing: QoS 1/2 messages in flight and queued on a.
    slow, _ = raw_connect(a.port, "slow")
    slow.send(gen_subscribe(1, "k/#", 2))
    slow.expect_type(SUBACK)
    publisher = paho_factory(a.port, "kill-publisher")
    acknowledged = kill_under_load(a, publisher, "k", qos2_odd=True)
    slow.close()

    a = persistent_node(mqttd_factory, nats_server, "a", tmp_path / "a.db", cwd=a.cwd)
    back, connack = raw_connect(a.port, "slow")
    assert connack.body == b"\x01\x00"  # session present
    seen = receive_all(back, acknowledged)
    back.close()
    # QoS 2 exactly once (QoS 1 at least once).
    qos2 = [i for i in seen if i % 2]
    assert len(qos2) == len(set(qos2))
    for node in (a, b):
        assert errors_in(node) == [], node.stderr


def test_a_delayed_will_pending_in_a_killed_nodes_file_is_published_once(
    nats_server: NatsServer, mqttd_factory: MqttdFactory, paho_factory: PahoFactory, tmp_path: Path
) -> None:
    def node(name: str, cwd: Path | None = None) -> MqttdProcess:
        config = node_toml(nats_server.url, name, node_timeout=2.0)
        config = config.replace("enabled = false", "enabled = true", 1)
        return mqttd_factory(["--db", str(tmp_path / f"{name}.db")], config, cwd=cwd)

    a, b = node("a"), node("b")
    watcher = paho_factory(b.port, "watcher")
    watcher.subscribe("will/#", 1)
    routed(paho_factory(a.port, "prober"), "will/probe", watcher)
    props = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
    props.WillDelayInterval = 3
    willing = paho_factory(
        a.port,
        "willing",
        protocol=V5,
        clean=False,
        session_expiry=60,
        will=("will/x", b"gone", 1, False),
        will_properties=props,
    )
    time.sleep(1.0)  # the will is in the cluster's bucket
    willing.abort()  # no DISCONNECT: the will is due in 3 s, pending in a's file
    time.sleep(0.5)
    a.kill()
    # a comes back on its file (which holds the pending will) while b settles a's wills.
    a = node("a", cwd=a.cwd)
    got = drain(watcher, quiet=8.0)
    assert [(m.topic, m.payload) for m in got] == [("will/x", b"gone")]
    for n in (a, b):
        assert errors_in(n) == [], n.stderr


def persistent(port: int, client_id: str, clients: list[PahoClient]) -> tuple[PahoClient, bool]:
    """The persistent 3.1.1 client `client_id`, connected, and its session present flag."""
    client = PahoClient("127.0.0.1", port, client_id, protocol=V311, clean=False)
    clients.append(client)
    return client, client.connect().session_present


def nats_subjects(monitor: int, node: str) -> list[str]:
    """What node `node`'s routing connection subscribes, from nats-server's /connz."""
    url = f"http://127.0.0.1:{monitor}/connz?subs=1&limit=1024"
    with urllib.request.urlopen(url, timeout=5) as response:
        connz = json.load(response)
    return [
        subject
        for conn in connz.get("connections") or ()
        if conn.get("name") == f"mqttd t/{node}"
        for subject in conn.get("subscriptions_list") or ()
    ]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def test_a_restarted_node_keeps_no_copy_of_a_session_the_cluster_holds_elsewhere(
    nats_factory: Callable[..., NatsServer],
    mqttd_factory: MqttdFactory,
    paho_factory: PahoFactory,
    tmp_path: Path,
) -> None:
    monitor = free_port()
    nats = nats_factory(settings=f"http_port: {monitor}")
    a = persistent_node(mqttd_factory, nats, "a", tmp_path / "a.db")
    b = persistent_node(mqttd_factory, nats, "b", tmp_path / "b.db")
    publisher = paho_factory(b.port, "publisher")
    clients: list[PahoClient] = []
    # Persistent sessions on a: one will move to b while a is down, one will end on b,
    # two stay a's.
    for name in ("moved", "ended", "home", "kept"):
        client, _ = persistent(a.port, name, clients)
        client.subscribe(f"{name}/#", 1)
        routed(publisher, f"{name}/probe", client)
        client.disconnect()
    for i in range(10):
        publisher.publish(f"moved/{i}", str(i).encode(), qos=1)
    a.kill()

    moved, present = persistent(b.port, "moved", clients)
    assert present
    assert [int(m.payload) for m in moved.expect_messages(10)] == list(range(10))
    moved.disconnect()
    ended = PahoClient("127.0.0.1", b.port, "ended", protocol=V311, clean=True)
    clients.append(ended)
    ended.connect()  # a clean session: the session a's file holds ends in the cluster
    ended.disconnect()
    for i in range(10, 20):
        publisher.publish(f"moved/{i}", str(i).encode(), qos=1)  # queued on b

    a = persistent_node(mqttd_factory, nats, "a", tmp_path / "a.db", cwd=a.cwd)
    # a subscribes on NATS for the session it still owns, not for the two others.
    wait_for(lambda: any("home" in s for s in nats_subjects(monitor, "a")), "a subscribes home/#")
    subjects = nats_subjects(monitor, "a")
    assert not [s for s in subjects if "moved" in s or "ended" in s], subjects
    for i in range(5):
        publisher.publish(f"home/{i}", str(i).encode(), qos=1)
        publisher.publish(f"kept/{i}", str(i).encode(), qos=1)
        publisher.publish(f"ended/{i}", str(i).encode(), qos=1)  # nobody subscribes now

    # Nothing acknowledged is lost, nothing comes twice.
    moved, present = persistent(b.port, "moved", clients)
    assert present
    assert [int(m.payload) for m in drain(moved)] == list(range(10, 20))
    moved.disconnect()
    home, present = persistent(a.port, "home", clients)
    assert present
    assert [int(m.payload) for m in drain(home)] == list(range(5))
    home.disconnect()

    # A session a kept from its file (its earlier life's) and never served since goes
    # to b with what was published meanwhile, and a forgets its copy.
    kept, present = persistent(b.port, "kept", clients)
    assert present
    assert [int(m.payload) for m in drain(kept)] == list(range(5))
    wait_for(
        lambda: not any("kept" in s for s in nats_subjects(monitor, "a")),
        "a unsubscribes kept/# once b has the session",
    )
    assert any("home" in s for s in nats_subjects(monitor, "a"))
    kept.disconnect()
    for client in clients:
        client.close()
    for node in (a, b):
        assert errors_in(node) == [], node.stderr
