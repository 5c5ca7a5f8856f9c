"""Clients never publish into $SYS or the dead-letter prefix, whatever the ACL says."""

from __future__ import annotations

import pytest
from support.core import Harness

from mqttd.protocol import Connack, PubAck, PubRec, ReasonCode, Will


@pytest.mark.parametrize(
    "topic", ["$SYS/broker/version", "$SYS", "$dead/no_subscribers/x", "$dead"]
)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_5_publish_to_a_broker_topic_is_refused_with_0x87(
    harness: Harness, topic: str, qos: int
) -> None:
    harness.broker.authorise = lambda *args: True  # an ACL allowing everything changes nothing
    spy = harness.connected("spy", level=5)
    spy.subscribe("$SYS/#", "$dead/#")
    pub = harness.connected("pub", level=5)
    pub.publish(topic, b"spoof", qos=qos, retain=True)
    if qos:
        ack_type: type[PubAck | PubRec] = PubAck if qos == 1 else PubRec
        ack = pub.expect(ack_type)
        assert ack.reason_code == ReasonCode.NOT_AUTHORIZED
    assert spy.packets() == []
    assert harness.broker.retained.get(topic) is None
    assert harness.broker.stats.messages_not_authorised == 1
    assert not pub.closed


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_311_publish_to_sys_is_dropped_and_counted(harness: Harness, qos: int) -> None:
    spy = harness.connected("spy", level=4)
    spy.subscribe("$SYS/#")
    pub = harness.connected("pub", level=4)
    pub.publish("$SYS/broker/version", b"spoof", qos=qos, retain=True)
    if qos:
        # 3.1.1 cannot say no: acknowledged (so it is not resent forever) and dropped.
        ack_type: type[PubAck | PubRec] = PubAck if qos == 1 else PubRec
        assert pub.expect(ack_type).reason_code == 0
    assert spy.packets() == []
    assert harness.broker.stats.messages_not_authorised == 1


def test_a_configured_dead_letter_prefix_is_the_brokers() -> None:
    from mqttd.broker.dead_letter import DeadLetterSettings

    harness = Harness()
    harness.broker.dead_letters.configure(DeadLetterSettings(prefix="ops/dead"))
    pub = harness.connected("pub", level=5)
    pub.publish("ops/dead/expired/x", qos=1)
    assert pub.expect(PubAck).reason_code == ReasonCode.NOT_AUTHORIZED
    pub.publish("ops/deadline", qos=1, packet_id=2)  # only the prefix's own levels
    assert pub.expect(PubAck).reason_code == ReasonCode.NO_MATCHING_SUBSCRIBERS


@pytest.mark.parametrize(("level", "code"), [(5, ReasonCode.NOT_AUTHORIZED), (4, 5)])
def test_a_will_on_a_broker_topic_is_refused_at_connect(
    harness: Harness, level: int, code: int
) -> None:
    client = harness.client(level=level)
    connack = client.connect("w", will=Will("$SYS/broker/version", b"spoof", retain=True))
    assert isinstance(connack, Connack) and connack.reason_code == code
    assert client.closed


@pytest.mark.parametrize("bridge", [True, False])
def test_a_bridge_may_write_its_state_notification(harness: Harness, bridge: bool) -> None:
    # As Mosquitto: a bridge sets a will and publishes $SYS/broker/connection/<name>/state
    # (5.0 bridges without the bridge bit too); nothing else under $SYS.
    from mqttd.protocol import Connect

    client = harness.client(level=5)
    state = "$SYS/broker/connection/host.up/state"
    client.send(Connect("host.up", 5, True, 0, will=Will(state, b"0", 1, True), bridge=bridge))
    connack = client.first(Connack)
    assert connack.reason_code == 0
    client.publish(state, b"1", qos=1, retain=True)
    assert client.expect(PubAck).reason_code == ReasonCode.NO_MATCHING_SUBSCRIBERS
    assert harness.broker.retained.get(state) is not None
    client.publish("$SYS/broker/version", b"spoof", qos=1, packet_id=2)
    assert client.expect(PubAck).reason_code == ReasonCode.NOT_AUTHORIZED
