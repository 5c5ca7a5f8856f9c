"""A node that dies or is cut off from NATS: the survivors publish its clients' wills
exactly once (will delay respected, a will whose client came back is not published),
and a node cut off too long closes its clients with DISCONNECT 0x9C.

The nodes run with heartbeat_interval 0.5 s and node_timeout 2 s (`fast_node`).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import pytest
from integration.paho_client import V5, V311, PahoClient, Received
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .conftest import NatsLink, NatsServer, NodeFactory, PahoFactory, node_toml, routed

if TYPE_CHECKING:
    from conftest import MqttdFactory

pytestmark = pytest.mark.timeout(120)

NODE_TIMEOUT = 2.0
HEARTBEAT = 0.5
#: Time for a will to be stored in the cluster after CONNACK (claim, then the will).
STORED = 1.0
USE_ANOTHER_SERVER = 0x9C


@pytest.fixture
def will_clients(paho_factory: PahoFactory) -> Callable[..., PahoClient]:
    """Connected paho clients with a will; 5.0 ones with a Will Delay Interval."""

    def factory(port: int, client_id: str, topic: str, delay: int | None = None) -> PahoClient:
        will = (topic, b"will of " + client_id.encode(), 1, False)
        if delay is None:
            return paho_factory(port, client_id, protocol=V311, will=will)
        props = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
        props.WillDelayInterval = delay
        return paho_factory(
            port,
            client_id,
            protocol=V5,
            clean=False,
            session_expiry=60,
            will=will,
            will_properties=props,
        )

    return factory


@pytest.fixture
def fast_node(cluster_node: NodeFactory) -> NodeFactory:
    """Nodes that count each other dead after NODE_TIMEOUT."""
    return lambda name, extra="": cluster_node(name, extra, NODE_TIMEOUT)


def drain(client: PahoClient, seconds: float) -> list[tuple[str, bytes, float]]:
    """Everything `client` receives within `seconds`: (topic, payload, arrival time)."""
    got: list[tuple[str, bytes, float]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = client.expect_message(left)
        except AssertionError:
            break
        got.append((message.topic, message.payload, time.monotonic()))
    return got


def test_wills_of_a_killed_node_are_published_once_by_the_survivors(
    fast_node: NodeFactory,
    paho_factory: PahoFactory,
    will_clients: Callable[..., PahoClient],
) -> None:
    a, b, c = fast_node("a"), fast_node("b"), fast_node("c")
    on_b = paho_factory(b.port, "on-b")
    on_b.subscribe("will/#", 1)
    on_c = paho_factory(c.port, "on-c", protocol=V5)
    on_c.subscribe("will/#", 1)
    routed(paho_factory(a.port, "prober"), "will/probe", on_b, on_c)

    will_clients(a.port, "now", "will/now")  # 3.1.1: no delay
    will_clients(a.port, "delayed", "will/delayed", delay=3)  # 5.0, 3 s delay
    will_clients(a.port, "back", "will/back", delay=4)  # comes back within its delay
    will_clients(a.port, "clean", "will/clean").disconnect()  # normal DISCONNECT: no will
    time.sleep(STORED)

    os.kill(a.pid, signal.SIGKILL)
    killed = time.monotonic()
    time.sleep(0.2)
    # Within its delay, "back" connects again, on node b: its will must not go out.
    paho_factory(b.port, "back", protocol=V5, clean=False, session_expiry=60)

    got_b = drain(on_b, NODE_TIMEOUT + HEARTBEAT + 6)
    got_c = drain(on_c, 0.5)
    for got in (got_b, got_c):
        # Exactly once each, on each survivor's subscriber, although both survivors saw
        # node a die and both tried to publish.
        assert sorted((t, p) for t, p, _ in got) == [
            ("will/delayed", b"will of delayed"),
            ("will/now", b"will of now"),
        ], got
    arrival = {topic: at for topic, _, at in got_b}
    # Noticed within node_timeout plus one heartbeat (and some slack for this machine).
    assert arrival["will/now"] - killed < NODE_TIMEOUT + HEARTBEAT + 1.5
    # The delay counts from when the death was noticed.
    assert arrival["will/delayed"] - arrival["will/now"] >= 3 - 0.5


def test_a_node_cut_off_from_nats_closes_its_clients_and_the_cluster_publishes_their_wills(
    nats_server: NatsServer,
    nats_link: Callable[[], NatsLink],
    mqttd_factory: MqttdFactory,
    paho_factory: PahoFactory,
    will_clients: Callable[..., PahoClient],
) -> None:
    link = nats_link()
    a = mqttd_factory(config=node_toml(link.url, "a", node_timeout=NODE_TIMEOUT))
    b = mqttd_factory(config=node_toml(nats_server.url, "b", node_timeout=NODE_TIMEOUT))
    on_b = paho_factory(b.port, "on-b")
    on_b.subscribe("p/#", 1)
    routed(paho_factory(a.port, "prober"), "p/probe", on_b)
    stays = paho_factory(a.port, "stays", protocol=V5)
    will_clients(a.port, "cut", "p/will")
    time.sleep(STORED)

    link.cut()
    # Node a closes its clients cleanly before node b can count it as dead.
    assert stays.wait_disconnected(NODE_TIMEOUT + 2) == USE_ANOTHER_SERVER
    # Node b publishes the will of the client that node a closed, once.
    got = drain(on_b, NODE_TIMEOUT + HEARTBEAT + 3)
    assert [(t, p) for t, p, _ in got] == [("p/will", b"will of cut")]
    # While cut off, node a serves nobody: a new client is refused at once (the CONNACK
    # waits for a claim, which a cut-off node does not make).
    late = PahoClient("127.0.0.1", a.port, "late", protocol=V5)
    try:
        assert late.connect(expect_success=False).reason_code == USE_ANOTHER_SERVER
        late.wait_disconnected(5)
    finally:
        late.close()

    link.heal()
    # Back: node a accepts clients and routes again; no will goes out a second time.
    deadline = time.monotonic() + 15
    while True:
        again = PahoClient("127.0.0.1", a.port, "again", protocol=V5)
        again.connect(expect_success=False)
        time.sleep(0.3)
        if not again.disconnected.is_set():
            break
        again.close()
        assert time.monotonic() < deadline, "node a never accepted clients again"
        time.sleep(0.3)
    try:
        routed(again, "p/probe", on_b)
    finally:
        again.close()
    on_b.expect_no_message(1.0)


def test_nats_restarting_under_load_loses_nothing_acknowledged_on_either_node(
    nats_server: NatsServer, cluster_node: NodeFactory, paho_factory: PahoFactory
) -> None:
    # A node_timeout the restart cannot outlast on a loaded machine (see
    # test_shared_failover.py): the fence has its own test above.
    a, b = cluster_node("a", node_timeout=30.0), cluster_node("b", node_timeout=30.0)
    local = paho_factory(a.port, "local", protocol=V5)
    local.subscribe("load/#", 2)
    remote = paho_factory(b.port, "remote", protocol=V5)
    remote.subscribe("load/#", 2)
    publisher = paho_factory(a.port, "publisher", protocol=V5)
    routed(publisher, "load/probe", local, remote)

    sent = publish_for(publisher, 3.0, nats_server.restart)  # back within node_timeout
    # Every acknowledged message reaches the subscriber on the publisher's node, in order.
    expect_all(local, sent)
    # And the one on the other node: what core NATS lost in the restart comes from the
    # messages stream (a catch-up), each message once, QoS 2 included, in order.
    expect_all(remote, sent)
    # Nobody was disconnected: the restart was shorter than the fence.
    for client in (local, remote, publisher):
        assert not client.disconnected.is_set()
    routed(publisher, "load/probe", local, remote)


def publish_for(
    publisher: PahoClient,
    seconds: float,
    during: Callable[[], object],
    at: float = 1.0,
    pad: int = 0,
) -> dict[int, list[bytes]]:
    """Publish QoS 1 on load/q1 and QoS 2 on load/q2 in turns for `seconds`, with many
    PUBLISHes in flight (paho keeps 20 unacknowledged); call `during` `at` seconds in.
    Payloads are a number and `pad` spaces. Return them by QoS, once every one was
    acknowledged."""
    infos: list[tuple[int, bytes, mqtt.MQTTMessageInfo]] = []
    called = False
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < seconds:
        qos = 1 + n % 2
        payload = str(n).encode() + b" " * pad
        infos.append((qos, payload, publisher.client.publish(f"load/q{qos}", payload, qos)))
        n += 1
        time.sleep(0.002)
        if not called and time.monotonic() - started > at:
            during()
            called = True
    sent: dict[int, list[bytes]] = {1: [], 2: []}
    for qos, payload, info in infos:
        info.wait_for_publish(15)
        assert info.is_published(), payload
        sent[qos].append(payload)
    return sent


def expect_all(client: PahoClient, sent: dict[int, list[bytes]]) -> None:
    """`client` gets each message of `sent` once, in order per topic."""
    got = drain_messages(client)
    for qos in (1, 2):
        payloads = [m.payload for m in got if m.topic == f"load/q{qos}"]
        assert sorted(payloads, key=int) == sent[qos], (qos, len(payloads), len(sent[qos]))
        assert payloads == sent[qos], f"QoS {qos} out of order: {[int(p) for p in payloads]}"


def test_a_node_cut_off_briefly_gets_what_was_published_meanwhile_from_the_stream(
    nats_server: NatsServer,
    nats_link: Callable[[], NatsLink],
    mqttd_factory: MqttdFactory,
    paho_factory: PahoFactory,
) -> None:
    link = nats_link()
    a = mqttd_factory(config=node_toml(nats_server.url, "a"))
    b = mqttd_factory(config=node_toml(link.url, "b"))
    remote = paho_factory(b.port, "remote", protocol=V5)
    remote.subscribe("load/#", 2)
    publisher = paho_factory(a.port, "publisher", protocol=V5)
    routed(publisher, "load/probe", remote)

    def cut_briefly() -> None:
        link.cut()  # b's subscriptions are gone from NATS: what a routes meanwhile is lost
        healing = threading.Timer(1.5, link.heal)  # shorter than the fence (4 s)
        healing.start()
        timers.append(healing)

    timers: list[threading.Timer] = []

    sent = publish_for(publisher, 3.5, cut_briefly)
    timers[0].join()
    # Everything acknowledged reaches node b's subscriber, once, in order: what core
    # NATS did not bring comes from the messages stream.
    expect_all(remote, sent)
    assert not remote.disconnected.is_set()


def test_a_node_cut_off_as_a_slow_consumer_gets_what_it_missed_from_the_stream(
    nats_factory: Callable[..., NatsServer],
    mqttd_factory: MqttdFactory,
    paho_factory: PahoFactory,
) -> None:
    # nats-server closes a connection that takes more than 0.5 s to take a write in.
    nats = nats_factory(settings='write_deadline: "500ms"\n')
    link = NatsLink(nats.port)
    try:
        a = mqttd_factory(config=node_toml(nats.url, "a"))
        b = mqttd_factory(config=node_toml(link.url, "b"))
        remote = paho_factory(b.port, "remote", protocol=V5)
        remote.subscribe("load/#", 2)
        publisher = paho_factory(a.port, "publisher", protocol=V5)
        routed(publisher, "load/probe", remote)
        # Node b takes nothing from NATS for 1.5 s (shorter than the fence): the server's
        # write to it blocks longer than the deadline, and it is cut off as a slow consumer.
        sent = publish_for(publisher, 3.5, lambda: link.stall(1.5), pad=30_000)
        expect_all(remote, sent)
        assert "Slow Consumer" in nats.log.read_text()  # it was cut off, not just late
    finally:
        link.close()


def drain_messages(client: PahoClient) -> list[Received]:
    """What `client` receives until it is quiet for 1 s, routing probes left out."""
    messages: list[Received] = []
    while True:
        try:
            messages.append(client.expect_message(1.0))
        except AssertionError:
            return [m for m in messages if m.payload != b"probe"]


def test_a_node_that_starts_later_publishes_the_wills_of_a_node_that_died_unwatched(
    fast_node: NodeFactory, paho_factory: PahoFactory
) -> None:
    a = fast_node("a")
    will = ("unwatched/will", b"will of lonely", 1, True)  # retained: it outlives its publication
    paho_factory(a.port, "lonely", will=will)
    time.sleep(STORED)
    os.kill(a.pid, signal.SIGKILL)
    time.sleep(NODE_TIMEOUT + HEARTBEAT)  # its heartbeat is gone before anyone else runs

    b = fast_node("b")
    deadline = time.monotonic() + 10
    while True:
        watcher = paho_factory(b.port, "watcher")
        watcher.subscribe("unwatched/#", 1)
        got = drain(watcher, 0.5)
        if got:
            break
        watcher.close()
        assert time.monotonic() < deadline, "node b never published node a's will"
    assert [(t, p) for t, p, _ in got] == [("unwatched/will", b"will of lonely")]
    # Published once: a third node starting finds nothing left to publish.
    fast_node("c")
    assert drain(watcher, 1.5) == []
