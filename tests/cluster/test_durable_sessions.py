"""Durable sessions across real nodes: JetStream holds them, they follow their client.

Two or three real mqttd processes on one real nats-server. A persistent session's
queued and in-flight messages, its subscriptions and its inbound QoS 2 state move to
the node its client connects to (session present = 1); a node killed with -9 loses no
message it acknowledged; the CONNACK waits for the claim, so two simultaneous CONNECTs
with one client id on two nodes leave exactly one connection.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import TYPE_CHECKING

import pytest
from integration.paho_client import V5, PahoClient
from mqtt_raw import (
    CONNACK,
    PINGRESP,
    PUBACK,
    PUBLISH,
    PUBREL,
    SUBACK,
    Packet,
    RawClient,
    gen_connect,
    gen_pingreq,
    gen_puback,
    gen_pubcomp,
    gen_pubrec,
    gen_subscribe,
)

from .conftest import NatsServer, NodeFactory, PahoFactory, routed

if TYPE_CHECKING:
    from conftest import MqttdProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def nodes(cluster_node: NodeFactory) -> tuple[MqttdProcess, MqttdProcess]:
    return cluster_node("a"), cluster_node("b")


def raw_connect(port: int, client_id: str, clean: bool = False) -> tuple[RawClient, Packet]:
    """A 3.1.1 raw client (persistent unless `clean`) and its CONNACK."""
    client = RawClient("127.0.0.1", port)
    client.send(gen_connect(client_id, clean_session=clean, keepalive=60))
    return client, client.expect_type(CONNACK)


def publishes(client: RawClient, count: int, timeout: float = 10) -> list[Packet]:
    """The next `count` packets, all PUBLISH or PUBREL, within `timeout`."""
    got: list[Packet] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        packet = client.read_packet(max(deadline - time.monotonic(), 0.001))
        assert packet is not None, f"closed after {len(got)} of {count}"
        assert packet.type in (PUBLISH, PUBREL), packet.describe()
        got.append(packet)
    return got


def kill_under_load(
    node: MqttdProcess, publisher: PahoClient, prefix: str, qos2_odd: bool = False
) -> list[int]:
    """Publish numbered QoS 1 (odd numbers at QoS 2 with `qos2_odd`) messages from a
    thread and kill `node` with -9 once 150 are acknowledged; the numbers acknowledged."""
    acknowledged: list[int] = []
    stop = threading.Event()

    def publish() -> None:
        i = 0
        while not stop.is_set():
            qos = 2 if qos2_odd and i % 2 else 1
            try:
                publisher.publish(f"{prefix}/{i}", str(i).encode(), qos=qos, timeout=2)
            except (TimeoutError, ValueError, RuntimeError):
                return
            acknowledged.append(i)
            i += 1

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 150 and time.monotonic() < deadline:
        time.sleep(0.005)
    node.kill()  # SIGKILL, QoS 1/2 traffic in full flow
    time.sleep(0.2)
    stop.set()
    thread.join(10)
    assert len(acknowledged) >= 150
    return acknowledged


def receive_all(client: RawClient, wanted: list[int]) -> list[int]:
    """Acknowledge what comes (QoS 1 and 2) until every number of `wanted` came; the
    numbers received, in order, copies included."""
    seen: list[int] = []
    deadline = time.monotonic() + 20
    while not set(wanted) <= set(seen):
        packet = client.read_packet(max(deadline - time.monotonic(), 0.001))
        assert packet is not None, f"missing {sorted(set(wanted) - set(seen))[:10]}"
        if packet.type == PUBREL:
            client.send(gen_pubcomp(packet.mid()))
            continue
        view = packet.publish()
        if view.payload != b"probe":
            seen.append(int(view.payload))
        client.send(gen_puback(view.mid) if view.qos == 1 else gen_pubrec(view.mid))
    return seen


def test_a_session_with_queued_messages_moves_to_the_node_its_client_connects_to(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    a, b = nodes
    device = paho_factory(a.port, "mover", protocol=V5, clean=False, session_expiry=300)
    device.subscribe("q/#", 1)
    device.disconnect()
    publisher = paho_factory(a.port, "publisher")
    for i in range(10):
        publisher.publish(f"q/{i}", f"m{i}".encode(), qos=1)  # queued on a, in JetStream

    moved = PahoClient("127.0.0.1", b.port, "mover", protocol=V5, clean=False, session_expiry=300)
    try:
        assert moved.connect().session_present
        got = moved.expect_messages(10)
        assert [m.payload for m in got] == [f"m{i}".encode() for i in range(10)]
        # The subscription moved too: what is published on a now reaches b.
        routed(publisher, "q/probe", moved)
        publisher.publish("q/after", b"after", qos=1)
        assert moved.expect_message().payload == b"after"
        moved.expect_no_message(0.3)
    finally:
        moved.close()


def test_takeover_brings_in_flight_messages_and_qos2_state_over(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    a, b = nodes
    old, connack = raw_connect(a.port, "holder")
    assert connack.body[0] == 0  # no session yet
    old.send(gen_subscribe(1, [("h/1", 1), ("h/2", 2)]))
    old.expect_type(SUBACK)
    publisher = paho_factory(a.port, "publisher")
    for i in range(3):
        publisher.publish("h/1", f"one{i}".encode(), qos=1)
    publisher.publish("h/2", b"two", qos=2)
    received = [p.publish() for p in publishes(old, 4)]
    qos2 = next(p for p in received if p.qos == 2)
    old.send(gen_pubrec(qos2.mid))  # the client has the QoS 2 message: PUBREL must follow
    old.expect_type(PUBREL)
    # Nothing acknowledged on a: 3 QoS 1 in flight, 1 QoS 2 awaiting PUBCOMP.

    new, connack = raw_connect(b.port, "holder")
    assert connack.body == b"\x01\x00"  # session present
    old.expect_closed()  # 3.1.1: the old connection is closed
    again = publishes(new, 4)
    resent = [p.publish() for p in again if p.type == PUBLISH]
    assert sorted(p.payload for p in resent) == [b"one0", b"one1", b"one2"]
    assert all(p.dup for p in resent)
    # The QoS 2 message is not sent again: only its PUBREL, with the same packet id.
    (pubrel,) = [p for p in again if p.type == PUBREL]
    assert pubrel.mid() == qos2.mid
    for p in resent:
        new.send(gen_puback(p.mid))
    new.expect_silence(0.3)
    new.close()


def test_kill_9_of_a_node_loses_no_acknowledged_message(
    cluster_node: NodeFactory, paho_factory: PahoFactory
) -> None:
    a, b = cluster_node("a"), cluster_node("b")
    # A subscriber that acknowledges nothing: messages pile up in flight and queued on a.
    slow, _ = raw_connect(a.port, "slow")
    slow.send(gen_subscribe(1, "k/#", 1))
    slow.expect_type(SUBACK)
    publisher = paho_factory(a.port, "kill-publisher")
    acknowledged = kill_under_load(a, publisher, "k")
    slow.close()

    # The client comes back on b: every acknowledged message is there (at least once).
    back, connack = raw_connect(b.port, "slow")
    assert connack.body == b"\x01\x00"
    receive_all(back, acknowledged)
    back.close()


def test_simultaneous_connects_with_one_client_id_on_two_nodes_leave_exactly_one(
    nodes: tuple[MqttdProcess, MqttdProcess],
) -> None:
    a, b = nodes
    for round_ in range(5):
        client_id = f"twin-{round_}"
        clients = [RawClient("127.0.0.1", node.port) for node in (a, b)]
        connect = gen_connect(client_id, clean_session=True, keepalive=60)
        barrier = threading.Barrier(2)

        def send(client: RawClient, barrier: threading.Barrier, connect: bytes) -> None:
            barrier.wait()
            client.send(connect)

        threads = [threading.Thread(target=send, args=(c, barrier, connect)) for c in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        alive = []
        for client in clients:
            # Within one PINGREQ round: either refused/closed, or serving.
            client.send(gen_pingreq())
            packets = []
            while True:
                try:
                    packet = client.read_packet(3)
                except TimeoutError:
                    break
                if packet is None:
                    break
                packets.append(packet)
                if packet.type == PINGRESP:
                    break
            if packets and packets[-1].type == PINGRESP:
                alive.append(client)
        time.sleep(0.3)  # a late takeover would close one now
        survivors = []
        for client in alive:
            client.send(gen_pingreq())
            try:
                packet = client.read_packet(2)
            except TimeoutError:
                packet = None
            if packet is not None and packet.type == PINGRESP:
                survivors.append(client)
        assert len(survivors) == 1, f"round {round_}: {len(survivors)} connections serve it"
        for client in clients:
            client.close()


def test_connack_waits_for_the_claim_and_holds_packets_sent_before_it(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    a, b = nodes
    receiver = paho_factory(b.port, "early-receiver")
    receiver.subscribe("early/#", 1)
    publisher = paho_factory(a.port, "probe-publisher")
    routed(publisher, "early/probe", receiver)
    # CONNECT and a PUBLISH in one write: the PUBLISH waits for the claim, then goes.
    client = RawClient("127.0.0.1", a.port)
    client.send(
        gen_connect("eager", clean_session=True)
        + bytes([0x32, 0x0C, 0x00, 0x07])
        + b"early/x\x00\x01h"
    )
    assert client.expect_type(CONNACK).body == b"\x00\x00"
    assert client.expect_type(PUBACK).mid() == 1
    assert receiver.expect_message().payload == b"h"
    client.close()


def test_connack_waits_until_the_previous_node_let_the_session_go(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    a, b = nodes
    old, _ = raw_connect(a.port, "frozen")
    old.send(gen_subscribe(1, "f/#", 1))
    old.expect_type(SUBACK)
    a.send_signal(signal.SIGSTOP)  # a holds the session and cannot answer
    try:
        new = RawClient("127.0.0.1", b.port)
        started = time.monotonic()
        new.send(gen_connect("frozen", clean_session=False))
        with pytest.raises(TimeoutError):
            new.read_packet(1.0)  # no CONNACK while a holds the session
        # request_timeout (2 s): b takes the session from its log without a's answer.
        connack = new.expect_type(CONNACK, timeout=5)
        assert connack.body == b"\x01\x00"
        assert time.monotonic() - started >= 1.5
    finally:
        a.send_signal(signal.SIGCONT)
    old.expect_closed(5)  # a, awake, hears of the takeover and lets go
    new.send(gen_pingreq())
    assert new.expect_type(PINGRESP).type == PINGRESP
    new.close()


def test_kill_9_of_the_subscribers_node_loses_nothing_another_node_acknowledged(
    cluster_node: NodeFactory, paho_factory: PahoFactory
) -> None:
    a, b = cluster_node("a"), cluster_node("b")
    slow, _ = raw_connect(a.port, "remote-slow")
    slow.send(gen_subscribe(1, "x/#", 2))
    slow.expect_type(SUBACK)
    publisher = paho_factory(b.port, "remote-publisher")
    # Wait until a's interest reached b: the first message arrives on a.
    deadline = time.monotonic() + 10
    while True:
        publisher.publish("x/probe", b"probe", qos=1)
        try:
            packet = slow.read_packet(0.1)
        except TimeoutError:
            assert time.monotonic() < deadline, "a's subscription never reached b"
            continue
        assert packet is not None and packet.type == PUBLISH
        break
    acknowledged = kill_under_load(a, publisher, "x", qos2_odd=True)
    # Published while the session has no node at all: kept for it too.
    for i in range(10_000, 10_005):
        publisher.publish(f"x/{i}", str(i).encode(), qos=1)
        acknowledged.append(i)
    slow.close()

    back, connack = raw_connect(b.port, "remote-slow")
    assert connack.body == b"\x01\x00"
    seen = receive_all(back, acknowledged)
    back.close()
    # QoS 2 exactly once: no QoS 2 message came twice (QoS 1 may, at least once).
    qos2 = [i for i in seen if i % 2 and i < 10_000]
    assert len(qos2) == len(set(qos2))


def log_length(nats_url: str, client_id: str) -> int:
    """How many records the session log of `client_id` holds in JetStream now."""
    import asyncio
    import hashlib

    import nats

    async def count() -> int:
        nc = await nats.connect(nats_url)
        try:
            subject = "mqttd.t.s." + hashlib.sha256(client_id.encode()).hexdigest()
            info = await nc.jetstream().stream_info("mqttd_t_sessions", subjects_filter=subject)
            return int((info.state.subjects or {}).get(subject, 0))
        finally:
            await nc.close()

    return asyncio.run(count())


def test_a_busy_sessions_log_is_compacted_and_still_moves_whole(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory, nats_server: NatsServer
) -> None:
    a, b = nodes
    busy = paho_factory(a.port, "busy", protocol=V5, clean=False, session_expiry=300)
    busy.subscribe("busy/#", 1)
    publisher = paho_factory(a.port, "busy-publisher")
    for i in range(450):  # 3 records each (queued, sent, acknowledged): one compaction
        publisher.publish(f"busy/{i}", str(i).encode(), qos=1)
    assert [int(m.payload) for m in busy.expect_messages(450)] == list(range(450))
    deadline = time.monotonic() + 10
    while (length := log_length(nats_server.url, "busy")) >= 1000:
        assert time.monotonic() < deadline, f"log not compacted: {length} records"
        time.sleep(0.2)
    busy.disconnect()
    for i in range(3):
        publisher.publish(f"busy/late{i}", f"late{i}".encode(), qos=1)

    moved = PahoClient("127.0.0.1", b.port, "busy", protocol=V5, clean=False, session_expiry=300)
    try:
        assert moved.connect().session_present
        assert [m.payload for m in moved.expect_messages(3)] == [b"late0", b"late1", b"late2"]
        moved.expect_no_message(0.5)  # nothing acknowledged comes again
    finally:
        moved.close()
