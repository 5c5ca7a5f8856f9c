"""MQTT 5.0 rules checked on the sans-IO core (support.core), where time or sizes are
easier to control than over a socket."""

from __future__ import annotations

from support.core import Harness, settings

from mqttd.protocol import Disconnect, Properties, ReasonCode


def test_disconnect_expiry_counts_the_connects_value_not_the_granted_one() -> None:
    harness = Harness(settings(max_session_expiry_interval=0))
    client = harness.connected("c", level=5, properties=Properties(session_expiry_interval=100))
    # Granted 0, but CONNECT said 100: a non-zero value at DISCONNECT is no protocol
    # error (3.14.2.2.2 speaks of the CONNECT's value); it is capped again.
    client.disconnect(properties=Properties(session_expiry_interval=50))
    assert client.packets() == []
    assert "c" not in harness.broker.sessions


def test_server_disconnect_reason_string_gives_way_to_a_small_maximum_packet_size() -> None:
    harness = Harness()
    roomy = harness.connected("a", level=5)
    tight = harness.connected("b", level=5, properties=Properties(maximum_packet_size=8))
    for client in (roomy, tight):
        client.send(Disconnect(0, Properties(session_expiry_interval=5)))  # 0 -> 5: an error
    (said,) = roomy.packets()
    assert isinstance(said, Disconnect) and said.properties is not None
    assert said.reason_code == ReasonCode.PROTOCOL_ERROR and said.properties.reason_string
    assert tight.packets() == [Disconnect(ReasonCode.PROTOCOL_ERROR)]  # [MQTT-3.14.2-3]


def test_shared_message_goes_to_a_persistent_member_and_is_recorded() -> None:
    harness = Harness()
    leaving = harness.connected("leaving", level=5)
    staying = harness.connected(
        "staying", level=5, clean_start=False, properties=Properties(session_expiry_interval=60)
    )
    leaving.subscribe("$share/g/t", qos=1)
    staying.subscribe("$share/g/t", qos=1)
    pub = harness.connected("pub", level=5)
    pub.publish("t", b"0", qos=1, packet_id=1)
    pub.publish("t", b"1", qos=1, packet_id=2)
    assert [p.payload for p in leaving.publishes()] == [b"0"]
    assert [p.payload for p in staying.publishes()] == [b"1"]
    staying.lose()  # offline, but its session (and membership) lives on
    leaving.lose()  # its session ends: b"0" goes to the other member, offline or not
    session = harness.broker.sessions["staying"]
    assert [e.message.payload for e in session.queue] == [b"0"]
    assert session.queue[0].seq  # recorded in the store, so it survives a restart
