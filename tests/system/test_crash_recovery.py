"""What was acknowledged survives: kill -9 (or SIGTERM) the real process, start it again in
the same directory (same ./data/mqttd.db), and persistent sessions and retained messages
are all there (design: persistence contract).
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import pytest
from mqtt_raw import (
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    SESSION_EXPIRY_INTERVAL,
    RawClient,
    gen_puback,
    gen_publish,
    gen_pubrel,
    prop_u32,
)

if TYPE_CHECKING:
    from conftest import MqttdFactory, MqttdProcess

pytestmark = pytest.mark.timeout(60)


def _publish_acknowledged(server: MqttdProcess, topic: str, count: int) -> list[tuple[bytes, int]]:
    """Publish QoS 1 and 2 messages, each until the broker acknowledged it (PUBACK/PUBREC)."""
    sent = []
    with RawClient(server.host, server.port) as publisher:
        publisher.connect("crash-pub")
        for i in range(count):
            qos = 1 + i % 2
            payload = f"m{i}".encode()
            publisher.send(gen_publish(topic, qos=qos, mid=i + 1, payload=payload))
            if qos == 1:
                publisher.expect_type(PUBACK)
            else:
                # PUBREC is the point of no return for QoS 2 (persistence contract).
                publisher.expect_type(PUBREC)
                publisher.send(gen_pubrel(i + 1))
                publisher.expect_type(PUBCOMP)
            sent.append((payload, qos))
        publisher.send(gen_publish(f"{topic}/status", qos=1, mid=999, retain=True, payload=b"on"))
        publisher.expect_type(PUBACK)
    return sent


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("proto_ver", [4, 5], ids=["v311", "v5"])
def test_acknowledged_messages_and_sessions_survive_a_restart(
    mqttd_factory: MqttdFactory, how: str, proto_ver: int
) -> None:
    first = mqttd_factory()
    if first.reference:
        pytest.skip("restarts mqttd on its own database")
    topic = "crash/data"
    keep = prop_u32(SESSION_EXPIRY_INTERVAL, 3600)  # gen_connect ignores it for 3.1.1
    with RawClient(first.host, first.port) as subscriber:
        subscriber.connect("crash-sub", proto_ver=proto_ver, clean_session=False, properties=keep)
        subscriber.subscribe(1, topic, 2, proto_ver=proto_ver)
        subscriber.disconnect(proto_ver=proto_ver)
    sent = _publish_acknowledged(first, topic, 10)

    if how == "SIGKILL":
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(5)
    else:
        assert first.stop(signal.SIGTERM) == 0, first.stderr
    second = mqttd_factory(cwd=first.cwd)

    with RawClient(second.host, second.port) as subscriber:
        subscriber.connect(
            "crash-sub",
            proto_ver=proto_ver,
            clean_session=False,
            session_present=True,
            properties=keep,
        )
        received = subscriber.receive_publishes(10, proto_ver=proto_ver)
        assert [(m.payload, m.qos) for m in received] == sent
        subscriber.expect_silence(0.3)  # QoS 2: exactly once
        subscriber.disconnect(proto_ver=proto_ver)
    with RawClient(second.host, second.port) as late:
        late.connect("crash-late")
        late.subscribe(1, f"{topic}/status", 1)
        [retained] = late.receive_publishes(1)
        assert (retained.payload, retained.retain) == (b"on", True)


def test_clean_sessions_and_cleared_retained_messages_do_not_come_back(
    mqttd_factory: MqttdFactory,
) -> None:
    first = mqttd_factory()
    if first.reference:
        pytest.skip("restarts mqttd on its own database")
    with RawClient(first.host, first.port) as client:
        client.connect("gone", clean_session=True)
        client.subscribe(1, "gone/#", 1)
        for mid, payload in ((2, b"x"), (3, b"")):  # retain, then clear
            client.send(gen_publish("gone/r", qos=1, mid=mid, retain=True, payload=payload))
            # Our PUBACK and our own copy of the message, in either order.
            packets = [client.read_packet(), client.read_packet()]
            kinds = sorted(p.type for p in packets if p is not None)
            assert kinds == [PUBLISH, PUBACK], packets
            delivered = next(p for p in packets if p is not None and p.type == PUBLISH)
            client.send(gen_puback(delivered.publish().mid))
        client.disconnect()
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(5)
    second = mqttd_factory(cwd=first.cwd)
    with RawClient(second.host, second.port) as client:
        client.connect("gone", clean_session=False, session_present=False)
        client.subscribe(1, "gone/#", 1)
        client.expect_silence(0.4)
        client.disconnect()
