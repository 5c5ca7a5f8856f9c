"""A SUBACK waits until the cluster routes the new subscription's topics to this node.

The core's side (broker/subscribe.py), driven by a fake backplane that says the
network has not confirmed new interest until the test calls `confirm()`. The NATS
backplane's side (a round trip to nats-server) is tested in tests/cluster/.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from support.core import Client, Harness

from mqttd.broker.backplane import InProcessBackplane, InProcessHub
from mqttd.protocol import (
    PingReq,
    PingResp,
    Properties,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)
from mqttd.protocol.reason_codes import ReasonCode


class SlowNetwork(InProcessBackplane):
    """A backplane whose network takes the node's new interest only on `confirm()`."""

    def __init__(self) -> None:
        super().__init__(InProcessHub())
        self.confirmed: set[str] = set()
        self.waiting: list[Callable[[], None]] = []
        self.asked: list[list[str]] = []

    def interest_pending(self, topic_filters: Sequence[str], confirmed: Callable[[], None]) -> bool:
        self.asked.append(list(topic_filters))
        if all(f in self.confirmed for f in topic_filters):
            return False
        self.waiting.append(confirmed)
        return True

    def interest_removed(self, topic_filter: str) -> None:
        super().interest_removed(topic_filter)
        if topic_filter not in self.interest:
            self.confirmed.discard(topic_filter)  # unsubscribed on the network

    def confirm(self) -> int:
        """The network has the node's interest as it stands: answer who waited."""
        self.confirmed |= set(self.interest)
        waiting, self.waiting = self.waiting, []
        for confirmed in waiting:
            confirmed()
        return len(waiting)


def node() -> tuple[Harness, SlowNetwork]:
    harness = Harness()
    network = SlowNetwork()
    harness.broker.use_backplane(network)
    return harness, network


def subscribe(client: Client, *filters: str, packet_id: int = 1, qos: int = 0) -> None:
    client.send(Subscribe(packet_id, [Subscription(f, qos) for f in filters]))


def test_suback_waits_until_the_network_confirms_a_new_filter() -> None:
    harness, network = node()
    sub = harness.connected("sub", level=5)
    subscribe(sub, "a/#", "b", qos=1)
    assert sub.packets() == []  # no SUBACK before the other nodes route a/# and b here
    assert network.interest == {"a/#": 1, "b": 1}  # asked for at once
    assert network.asked == [["a/#", "b"]]
    assert network.confirm() == 1
    suback = sub.expect(SubAck)
    assert (suback.packet_id, suback.reason_codes) == (1, [1, 1])


def test_a_filter_the_network_already_has_is_answered_at_once() -> None:
    harness, network = node()
    first = harness.connected("first")
    subscribe(first, "a/+")
    network.confirm()
    assert first.expect(SubAck).reason_codes == [0]
    # Another session, same filter: the node's interest is confirmed already.
    second = harness.connected("second")
    assert second.subscribe("a/+").reason_codes == [0]
    # The same session again (a replacement: nothing new for the network).
    assert first.subscribe("a/+", qos=1, packet_id=3).reason_codes == [1]
    assert network.asked == [["a/+"], ["a/+"]]  # the replacement asked nothing
    assert network.waiting == []


def test_refused_and_shared_filters_do_not_wait() -> None:
    harness, network = node()
    sub = harness.connected("sub", level=5)
    sub.send_raw_subscribe(1, ["a/#/b", "$share/g/s"])
    suback = sub.expect(SubAck)
    assert suback.reason_codes == [ReasonCode.TOPIC_FILTER_INVALID, 0]
    assert network.asked == [] and network.interest == {}


def test_packets_after_a_held_subscribe_wait_and_keep_their_order() -> None:
    harness, network = node()
    sub = harness.connected("sub")
    sub.send(
        Subscribe(1, [Subscription("a", 0)]),
        Publish("own", b"1", 1, False, False, 7, None),
        PingReq(),
        Subscribe(2, [Subscription("b", 0)]),
        Publish("own", b"2", 1, False, False, 8, None),
    )
    assert sub.packets() == []  # the PUBLISH and PINGREQ wait behind the SUBSCRIBE
    network.confirm()
    got = sub.packets()
    assert [type(p) for p in got] == [SubAck, PubAck, PingResp]
    assert [getattr(p, "packet_id", None) for p in got] == [1, 7, None]
    # The second SUBSCRIBE adds "b": it waits in turn, and the PUBLISH after it.
    assert network.confirm() == 1
    got = sub.packets()
    assert [type(p) for p in got] == [SubAck, PubAck]
    assert [getattr(p, "packet_id", None) for p in got] == [2, 8]
    # Reading goes on as before.
    sub.send(PingReq())
    assert isinstance(sub.expect(PingResp), PingResp)


def test_the_subscription_takes_effect_with_its_suback_and_retained_follow() -> None:
    harness, network = node()
    pub = harness.connected("pub")
    pub.publish("t/1", b"old", retain=True)
    sub = harness.connected("sub")
    subscribe(sub, "other")
    network.confirm()
    assert sub.expect(SubAck).packet_id == 1
    subscribe(sub, "t/#", packet_id=2)
    pub.publish("t/1", b"early")  # before the SUBACK: not for this subscription yet
    pub.publish("other", b"flows")  # an existing subscription is not held back
    assert [p.payload for p in sub.publishes()] == [b"flows"]
    network.confirm()
    got = sub.packets()
    assert isinstance(got[0], SubAck) and got[0].packet_id == 2
    assert [(p.payload, p.retain) for p in got[1:] if isinstance(p, Publish)] == [(b"old", True)]
    pub.publish("t/1", b"after")
    assert [p.payload for p in sub.publishes()] == [b"after"]


def test_a_client_gone_before_its_suback_leaves_no_interest_and_no_subscription() -> None:
    harness, network = node()
    sub = harness.connected("sub", clean_start=False, level=5, properties=expiry(60))
    subscribe(sub, "gone/#")
    assert network.interest == {"gone/#": 1}
    sub.lose()
    network.confirm()
    assert network.interest == {}
    assert harness.broker.sessions["sub"].subscriptions == {}
    assert harness.store._sessions["sub"].subscriptions == {}  # nothing recorded


def test_a_takeover_during_the_hold_drops_the_unanswered_subscribe() -> None:
    harness, network = node()
    old = harness.connected("c", clean_start=False, level=5, properties=expiry(60))
    subscribe(old, "x")
    new = harness.connected("c", clean_start=False, level=5, properties=expiry(60))
    network.confirm()
    assert [type(p).__name__ for p in old.packets()] == ["Disconnect"]  # 0x8E, no SUBACK
    assert network.interest == {}
    assert harness.broker.sessions["c"].subscriptions == {}
    subscribe(new, "x", packet_id=4)  # the interest was withdrawn: new again, it waits
    assert new.packets() == []
    assert network.confirm() == 1
    assert new.expect(SubAck).packet_id == 4


def expiry(seconds: int) -> Properties:
    return Properties(session_expiry_interval=seconds)
