"""The mirrored QoS flows, driven packet by packet with two fake legs.

Each test plays one side's packets into `Flows` and checks what goes out on the other
leg: same packet id, acknowledgements only once the far side acknowledged, order kept,
and the recovery paths (resends, a bridge restart, a remote that lost its session).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from mqttd.bridge.flows import BridgeStats, Flows
from mqttd.bridge.topics import Direction, TopicRule, TopicRules
from mqttd.protocol import Properties, PubAck, PubComp, Publish, PubRec, PubRel, encode


@dataclass
class FakeLeg:
    """A connection that records what the flows send on it."""

    level: int = 5
    connected: bool = True
    receive_maximum: int = 65_535
    maximum_qos: int = 2
    retain_available: bool = True
    max_size: int = 1_000_000
    sent: list[Any] = field(default_factory=list)

    def send(self, packet: Any) -> None:
        self.sent.append(packet)

    def send_publish(self, packet: Publish) -> bool:
        if len(encode(packet, self.level)) > self.max_size:
            return False
        self.sent.append(packet)
        return True

    def take(self) -> list[Any]:
        sent, self.sent = self.sent, []
        return sent


RULES = TopicRules(
    [
        TopicRule("out/#", Direction.OUT, 2, "", "r/"),
        TopicRule("in/#", Direction.IN, 2, "l/", ""),
    ]
)


def make(level: int = 5, **remote: Any) -> tuple[Flows, FakeLeg, FakeLeg]:
    flows = Flows("t", RULES, level, BridgeStats())
    local, far = FakeLeg(), FakeLeg(level=level, **remote)
    flows.local = local
    flows.local_connected()
    flows.remote = far
    flows.remote_up()
    return flows, local, far


def pub(topic: str, pid: int | None, qos: int = 1, **kw: Any) -> Publish:
    return Publish(topic, b"x", qos, packet_id=pid, **kw)


# -- local -> remote ---------------------------------------------------------------------------


def test_qos1_is_acknowledged_locally_only_after_the_remote() -> None:
    flows, local, remote = make()
    flows.from_local(pub("out/a", 7))
    [sent] = remote.take()
    assert (sent.topic, sent.packet_id, sent.qos, sent.dup) == ("r/out/a", 7, 1, False)
    assert local.take() == []
    flows.from_remote(PubAck(7))
    assert local.take() == [PubAck(7)]
    assert flows.outbound == 0


def test_waiting_flows_go_in_order_once_the_remote_is_up_and_again_after_a_loss() -> None:
    flows, local, remote = make()
    flows.remote_lost()
    for pid in (5, 6, 7):
        flows.from_local(pub("out/a", pid))
    assert remote.take() == []
    flows.remote = remote
    flows.remote_up()
    assert [p.packet_id for p in remote.take()] == [5, 6, 7]
    flows.from_remote(PubAck(5))
    flows.remote_lost()
    flows.remote = remote
    flows.remote_up()
    # What was in flight goes again, as a duplicate, in the original order.
    resent = remote.take()
    assert [(p.packet_id, p.dup) for p in resent] == [(6, True), (7, True)]
    assert local.take() == [PubAck(5)]


def test_a_local_resend_of_a_flow_under_way_is_not_sent_twice() -> None:
    flows, _local, remote = make()
    flows.from_local(pub("out/a", 3))
    flows.from_local(pub("out/a", 3, dup=True))
    assert len(remote.take()) == 1


def test_the_remote_receive_maximum_bounds_what_is_in_flight() -> None:
    flows, _local, remote = make(receive_maximum=2)
    for pid in range(1, 6):
        flows.from_local(pub("out/a", pid))
    assert [p.packet_id for p in remote.take()] == [1, 2]
    flows.from_remote(PubAck(1))
    assert [p.packet_id for p in remote.take()] == [3]


def test_qos2_out_is_mirrored_step_by_step() -> None:
    flows, local, remote = make()
    flows.from_local(pub("out/a", 9, qos=2))
    assert remote.take()[0].packet_id == 9
    flows.from_remote(PubRec(9))
    assert local.take() == [PubRec(9)]
    flows.from_local(PubRel(9))
    assert remote.take() == [PubRel(9)]
    flows.from_remote(PubComp(9))
    assert local.take() == [PubComp(9)]
    assert flows.outbound == 0


def test_a_local_pubrel_unknown_after_a_bridge_restart_is_passed_on() -> None:
    # The local broker resends PUBREL for a flow a previous run of the bridge began: the
    # remote holds the id too, so it must hear the PUBREL, and its PUBCOMP comes back.
    flows, local, remote = make()
    flows.from_local(PubRel(44))
    assert remote.take() == [PubRel(44)]
    flows.from_remote(PubComp(44))
    assert local.take() == [PubComp(44)]


def test_a_refusal_by_the_remote_ends_the_flow_on_both_sides() -> None:
    flows, local, _remote = make()
    flows.from_local(pub("out/a", 2, qos=2))
    flows.from_remote(PubRec(2, 0x87))
    assert local.take() == [PubRec(2, 0x87)]
    assert flows.outbound == 0
    assert flows.stats.messages_refused == 1


def test_messages_no_rule_sends_out_are_acknowledged_locally() -> None:
    flows, local, remote = make()
    flows.from_local(pub("elsewhere", 1, qos=1))
    flows.from_local(pub("elsewhere", 2, qos=2))
    assert remote.take() == []
    assert local.take() == [PubAck(1), PubRec(2)]
    flows.from_local(PubRel(2))
    assert local.take() == [PubComp(2)]
    assert remote.take() == []


def test_a_remote_maximum_qos_of_0_downgrades_and_completes_locally() -> None:
    flows, local, remote = make(maximum_qos=0)
    flows.from_local(pub("out/a", 4, qos=1, retain=True))
    [sent] = remote.take()
    assert (sent.qos, sent.packet_id, sent.retain) == (0, None, True)
    assert local.take() == [PubAck(4)]


def test_retain_is_cleared_for_a_remote_without_retain() -> None:
    flows, _local, remote = make(retain_available=False)
    flows.from_local(pub("out/a", 4, retain=True))
    assert not remote.take()[0].retain


def test_a_message_too_large_for_the_remote_is_dropped_and_acknowledged() -> None:
    flows, local, remote = make(max_size=20)
    flows.from_local(Publish("out/a", b"y" * 100, 1, packet_id=8))
    assert remote.take() == []
    assert local.take() == [PubAck(8)]
    assert flows.stats.messages_dropped == 1


def test_qos0_is_dropped_while_the_remote_is_away() -> None:
    flows, _local, remote = make()
    flows.remote_lost()
    flows.from_local(pub("out/a", None, qos=0))
    assert remote.take() == [] and flows.stats.messages_dropped == 1


@pytest.mark.parametrize("level", [4, 5])
def test_properties_lose_their_hop_only_parts_and_stay_only_for_5_0(level: int) -> None:
    flows, _local, remote = make(level=level)
    props = Properties(content_type="text/plain", topic_alias=3, subscription_identifier=(5,))
    flows.from_local(pub("out/a", 1, properties=props))
    [sent] = remote.take()
    if level == 5:
        assert sent.properties == Properties(content_type="text/plain")
    else:
        assert sent.properties is None


# -- remote -> local ---------------------------------------------------------------------------


def test_qos2_in_is_mirrored_and_a_resend_is_not_routed_twice() -> None:
    flows, local, remote = make()
    flows.from_remote(pub("in/x", 12, qos=2))
    [given] = local.take()
    assert (given.topic, given.packet_id, given.qos) == ("l/in/x", 12, 2)
    flows.from_local(PubRec(12))
    assert remote.take() == [PubRec(12)]
    flows.from_remote(pub("in/x", 12, qos=2, dup=True))
    assert remote.take() == [PubRec(12)]  # acknowledged again
    assert local.take() == []  # not given twice
    flows.from_remote(PubRel(12))
    assert local.take() == [PubRel(12)]
    flows.from_local(PubComp(12))
    assert remote.take() == [PubComp(12)]
    assert flows.inbound == 0


def test_an_unknown_remote_pubrel_goes_to_the_local_session_that_holds_the_id() -> None:
    flows, local, remote = make()
    flows.from_remote(PubRel(30))
    assert local.take() == [PubRel(30)]
    flows.from_local(PubComp(30, 0x92))
    assert remote.take() == [PubComp(30)]


def test_a_local_ack_while_the_remote_is_away_answers_its_resend() -> None:
    flows, local, remote = make()
    flows.from_remote(pub("in/x", 3, qos=1))
    local.take()
    flows.remote_lost()
    remote.connected = False
    flows.from_local(PubAck(3))
    assert remote.take() == []
    remote.connected = True
    flows.remote = remote
    flows.remote_up()
    flows.from_remote(pub("in/x", 3, qos=1, dup=True))
    assert remote.take() == [PubAck(3)]
    assert local.take() == []  # answered from memory, not routed again


def test_the_local_receive_maximum_bounds_inbound_flows() -> None:
    flows, local, _remote = make()
    local.receive_maximum = 1
    flows.from_remote(pub("in/x", 1, qos=1))
    flows.from_remote(pub("in/x", 2, qos=1))
    assert [p.packet_id for p in local.take()] == [1]
    flows.from_local(PubAck(1))
    assert [p.packet_id for p in local.take()] == [2]


def test_remote_messages_no_rule_brings_in_are_acknowledged_not_routed() -> None:
    flows, local, remote = make()
    flows.from_remote(pub("other", 1, qos=1))
    flows.from_remote(pub("other", 2, qos=2))
    assert local.take() == []
    assert remote.take() == [PubAck(1), PubRec(2)]
    flows.from_remote(PubRel(2))
    assert remote.take() == [PubComp(2)]
    assert local.take() == []


def test_a_remote_that_lost_its_session_gets_its_ids_back_from_the_local_broker() -> None:
    flows, local, remote = make()
    flows.from_remote(pub("in/x", 5, qos=2))  # the local broker will PUBREC it
    flows.from_remote(pub("in/x", 6, qos=2))
    flows.from_local(PubRec(6))  # id 6: awaiting the remote's PUBREL
    local.take()
    remote.take()
    flows.remote_lost()
    flows.remote = remote
    # Back without its session; the local session also holds id 77 from an older run.
    flows.remote_session_lost([6, 77])
    assert local.take() == [PubRel(6), PubRel(77)]
    flows.remote_up()
    # The new session reuses id 5 while the old flow 5 is still with the local broker.
    flows.from_remote(pub("in/new", 5, qos=2))
    assert local.take() == []  # it waits for the id
    flows.from_local(PubRec(5))  # the old flow: finished locally only
    assert local.take() == [PubRel(5)]
    assert remote.take() == []
    flows.from_local(PubComp(5))
    [given] = local.take()
    assert (given.topic, given.packet_id) == ("l/in/new", 5)
    for pid in (6, 77):
        flows.from_local(PubComp(pid))
    assert remote.take() == []  # the orphans' completions stay local
