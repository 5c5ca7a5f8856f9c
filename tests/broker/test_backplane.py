"""The core's Backplane seam, driven by the in-process backplane (several nodes, one process).

Two or three `Harness` brokers are joined by an `InProcessHub`; `hub.pump()` delivers
what nodes sent each other, as the network would later. What holds here is what the NATS
backplane must make hold across processes (tests/cluster/ proves it there).
"""

from __future__ import annotations

from support.core import Harness

from mqttd.broker.backplane import (
    BackplaneHost,
    ClientIdClaims,
    InProcessBackplane,
    InProcessHub,
)
from mqttd.broker.message import Message
from mqttd.broker.outbound import SharedDelivery
from mqttd.broker.shared import HELD, NO_MEMBER, SETTLED, STORED
from mqttd.protocol import Disconnect, Properties, PubAck, PubRec, Subscription, Will
from mqttd.protocol.reason_codes import ReasonCode


def cluster(n: int = 2) -> tuple[InProcessHub, list[Harness]]:
    hub = InProcessHub()
    nodes = []
    for _ in range(n):
        harness = Harness()
        harness.broker.use_backplane(InProcessBackplane(hub))
        nodes.append(harness)
    return hub, nodes


def host(node: Harness) -> BackplaneHost:
    """What the cluster sees of `node`'s core (its `ClusterHost`)."""
    backplane = node.broker._backplane
    assert isinstance(backplane, InProcessBackplane)
    return backplane.host


def test_a_single_node_keeps_no_backplane() -> None:
    harness = Harness()
    backplane = InProcessBackplane()
    harness.broker.use_backplane(backplane)
    assert harness.broker._backplane is None
    sub = harness.connected("sub")
    sub.subscribe("a/#")
    harness.connected("pub").publish("a/b", b"1")
    assert [p.payload for p in sub.publishes()] == [b"1"]
    assert backplane.interest == {}  # never told: nothing leaves the process


def test_wildcard_publish_reaches_each_subscription_on_other_nodes_once() -> None:
    hub, (a, b) = cluster()
    overlapping = a.connected("overlapping")
    overlapping.subscribe("s/#", "s/+/t")
    single = a.connected("single")
    single.subscribe("s/+/t")
    local = b.connected("local")
    local.subscribe("#")
    b.connected("pub").publish("s/x/t", b"m")
    assert hub.pump() == 1  # one copy to node a, none back to b
    assert [p.payload for p in overlapping.publishes()] == [b"m"]
    assert [p.payload for p in single.publishes()] == [b"m"]
    assert [p.payload for p in local.publishes()] == [b"m"]
    # Delivered on a, never sent out again: nothing left in flight.
    assert hub.pump() == 0


def test_only_nodes_with_matching_interest_receive() -> None:
    hub, (a, _b, c) = cluster(3)
    sub = a.connected("sub")
    sub.subscribe("only/a")
    c.connected("pub").publish("only/a", b"1")
    assert hub.pump() == 1  # b holds no subscription: nothing goes there
    assert [p.payload for p in sub.publishes()] == [b"1"]
    sub.unsubscribe("only/a")
    c.connected("pub2").publish("only/a", b"2")
    assert hub.pump() == 0


def test_interest_is_counted_per_filter() -> None:
    hub, (a, _b) = cluster()
    backplane = hub.nodes[0]
    first, second = a.connected("first"), a.connected("second")
    first.subscribe("f/#")
    second.subscribe("f/#")
    first.subscribe("f/#")  # the same subscription again: not counted twice
    assert backplane.interest == {"f/#": 2}
    first.unsubscribe("f/#")
    assert backplane.interest == {"f/#": 1}
    second.lose()  # its clean session ends with it
    assert backplane.interest == {}


def test_no_local_holds_for_a_message_that_crossed_nodes() -> None:
    hub, (a, b) = cluster()
    x = a.connected("x", level=5)
    x.subscribe(Subscription("nl/#", 0, no_local=True))
    y = b.connected("y", level=5)
    y.subscribe(Subscription("nl/#", 0, no_local=True))
    x.publish("nl/1", b"from x")
    y.publish("nl/2", b"from y")
    hub.pump()
    assert [p.payload for p in x.publishes()] == [b"from y"]
    assert [p.payload for p in y.publishes()] == [b"from x"]


def test_retained_set_on_one_node_is_matched_and_cleared_on_another() -> None:
    hub, (a, b) = cluster()
    a.connected("pub").publish("r/1", b"kept", retain=True)
    hub.pump()
    sub = b.connected("sub")
    sub.subscribe("r/+")
    got = sub.publishes()
    assert [(p.topic, p.payload, p.retain) for p in got] == [("r/1", b"kept", True)]
    b.connected("clearer").publish("r/1", b"", retain=True)
    hub.pump()
    assert len(a.broker.retained) == 0 and len(b.broker.retained) == 0
    late = a.connected("late")
    late.subscribe("r/#")
    assert late.publishes() == []


def test_a_new_node_loads_the_clusters_retained_messages() -> None:
    hub, (a,) = cluster(1)
    a.connected("pub").publish("r/x", b"v", retain=True)
    joined = Harness()
    joined.broker.use_backplane(InProcessBackplane(hub))
    sub = joined.connected("sub")
    sub.subscribe("#")
    assert [p.payload for p in sub.publishes()] == [b"v"]


def test_connecting_on_another_node_takes_the_client_id_over_with_0x8e() -> None:
    hub, (a, b) = cluster()
    old = a.connected("dev", level=5)
    old.subscribe("d/#")
    new = b.connected("dev", level=5)
    hub.pump()
    disconnect = old.expect(Disconnect)
    assert disconnect.reason_code == ReasonCode.SESSION_TAKEN_OVER
    assert old.closed and not new.closed
    assert "dev" not in a.broker.sessions
    assert hub.owners["dev"][0] is hub.nodes[1]
    assert hub.nodes[0].interest == {}  # its subscription went with the session
    # Node a's session ending did not release node b's claim (fencing).
    assert "dev" in hub.owners


def test_takeover_publishes_the_old_connections_will_once() -> None:
    from mqttd.protocol import Will

    hub, (a, b) = cluster()
    watcher = b.connected("watcher")
    watcher.subscribe("will/#")
    a.connected("dev", level=5, will=Will("will/dev", b"gone", 0, False, Properties()))
    b.connected("dev", level=5)
    hub.pump()
    assert [p.payload for p in watcher.publishes()] == [b"gone"]


def test_a_session_that_ends_releases_its_client_id() -> None:
    hub, (a, _b) = cluster()
    client = a.connected("short")
    assert "short" in hub.owners
    client.disconnect()
    assert "short" not in hub.owners


def test_reconnecting_on_the_first_node_wins_back_the_client_id() -> None:
    hub, (a, b) = cluster()
    first = a.connected("dev", level=5)
    second = b.connected("dev", level=5)
    third = a.connected("dev", level=5)  # local takeover of `first`, a new claim
    hub.pump()
    assert first.closed and second.closed and not third.closed
    assert hub.owners["dev"][0] is hub.nodes[0]


def test_claims_follow_the_largest_token() -> None:
    claims = ClientIdClaims()
    claims.claimed("c", 5)
    assert not claims.superseded("c", 4)  # a notice older than our claim
    assert not claims.superseded("c", 5)
    assert claims.token("c") == 5
    assert claims.superseded("c", 6)
    assert claims.token("c") is None
    assert claims.release("c") is None  # nothing of ours to release any more
    claims.claimed("c", 7)
    claims.claimed("c", 3)  # a late answer to an older claim does not go back
    assert claims.release("c") == 7


def test_a_notice_heard_while_our_claim_is_on_its_way_is_judged_by_the_tokens() -> None:
    claims = ClientIdClaims()
    claims.claimed("c", 2)
    claims.claiming("c")  # a reconnect here: a second claim on its way
    assert not claims.superseded("c", 5)  # not yet: ours may come after it
    assert not claims.claimed("c", 4)  # ours came first: it lost to 5
    assert claims.token("c") is None
    claims.claiming("c")
    assert not claims.superseded("c", 6)
    assert claims.claimed("c", 7)  # ours came after 6: it stands
    assert claims.token("c") == 7


def test_a_shared_group_gets_each_message_once_cluster_wide() -> None:
    hub, (a, b) = cluster()
    member_a = a.connected("member-a")
    member_a.subscribe("$share/g/sh/#")
    member_b = b.connected("member-b")
    member_b.subscribe("$share/g/sh/#")
    other_group = b.connected("other-group")
    other_group.subscribe("$share/h/sh/+")
    publisher = a.connected("pub")
    for i in range(6):
        publisher.publish(f"sh/{i}", str(i).encode())
    hub.pump()
    got_a = [p.payload for p in member_a.publishes()]
    got_b = [p.payload for p in member_b.publishes()]
    assert sorted(got_a + got_b) == [str(i).encode() for i in range(6)]
    assert got_a and got_b  # both nodes' members take turns, the publisher's included
    assert len(other_group.publishes()) == 6  # another group gets its own copy of each


def test_a_node_whose_last_member_left_is_no_longer_picked() -> None:
    hub, (a, b) = cluster()
    member_a = a.connected("member-a")
    member_a.subscribe("$share/g/t")
    member_b = b.connected("member-b")
    member_b.subscribe("$share/g/t")
    member_b.unsubscribe("$share/g/t")
    assert hub.nodes[1].shares == set()
    publisher = b.connected("pub")
    for _ in range(3):
        publisher.publish("t", b"m")
    hub.pump()
    assert len(member_a.publishes()) == 3
    assert member_b.publishes() == []


class Hold:
    """A cluster's hold on one shared message, counting the core's `delivered` calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.delivery = SharedDelivery(self._delivered)

    def _delivered(self) -> None:
        self.calls += 1


def test_a_held_shared_message_is_settled_by_the_members_puback_only() -> None:
    _hub, (a, _b) = cluster()
    member = a.connected("member")
    member.subscribe("$share/g/t/#", qos=1)
    hold = Hold()
    outcome = host(a).deliver_shared_from_node(Message("t/1", b"m", 1), "g", "t/#", hold.delivery)
    assert outcome == HELD
    (publish,) = member.publishes()
    assert hold.delivery.session is a.broker.sessions["member"]
    assert hold.delivery.entry is not None and hold.delivery.entry.packet_id == publish.packet_id
    assert hold.calls == 0  # sent, not acknowledged: the cluster keeps its hold
    assert publish.packet_id is not None
    member.send(PubAck(publish.packet_id))
    assert hold.calls == 1
    member.send(PubAck(publish.packet_id))  # unknown packet id now: nothing more
    assert hold.calls == 1


def test_a_held_qos2_shared_message_is_settled_by_the_pubrec() -> None:
    _hub, (a, _b) = cluster()
    member = a.connected("member", level=5)
    member.subscribe("$share/g/t", qos=2)
    hold = Hold()
    assert host(a).deliver_shared_from_node(Message("t", b"m", 2), "g", "t", hold.delivery) == HELD
    (publish,) = member.publishes()
    assert publish.packet_id is not None
    member.send(PubRec(publish.packet_id))
    # The member has it: from now on it MUST NOT go to another one [MQTT-4.8.2-5].
    assert hold.calls == 1


def test_what_became_of_a_shared_message_the_cluster_chose_this_node_for() -> None:
    _hub, (a, _b) = cluster()
    assert host(a).deliver_shared_from_node(Message("t", b"m", 1), "g", "t", Hold().delivery) == (
        NO_MEMBER
    )
    at_qos0 = a.connected("at-qos0")
    at_qos0.subscribe("$share/q0/t", qos=0)
    hold = Hold()
    assert host(a).deliver_shared_from_node(Message("t", b"m", 1), "q0", "t", hold.delivery) == (
        SETTLED
    )
    assert [p.qos for p in at_qos0.publishes()] == [0]
    assert hold.delivery.entry is None
    persistent = a.connected("persistent", clean_start=False)
    persistent.subscribe("$share/p/t", qos=1)
    hold = Hold()
    assert host(a).deliver_shared_from_node(Message("t", b"m", 1), "p", "t", hold.delivery) == (
        STORED
    )
    # In the member's session (and its log): no hold rides on its entry.
    assert hold.delivery.entry is None
    assert len(persistent.publishes()) == 1
    at_qos0.unsubscribe("$share/q0/t")
    assert host(a).deliver_shared_from_node(Message("t", b"m", 1), "q0", "t", Hold().delivery) == (
        NO_MEMBER
    )


def test_a_held_message_moves_with_its_hold_when_the_member_ends() -> None:
    _hub, (a, _b) = cluster()
    first = a.connected("first")
    first.subscribe("$share/g/t", qos=1)
    second = a.connected("second")
    second.subscribe("$share/g/t", qos=1)
    holds = [Hold(), Hold()]
    for hold in holds:
        assert host(a).deliver_shared_from_node(Message("t", b"m", 1), "g", "t", hold.delivery) == (
            HELD
        )
    taken_by_first = [h for h in holds if h.delivery.session is a.broker.sessions["first"]]
    assert len(taken_by_first) == 1
    first.publishes()
    first.lose()  # its clean session ends: the unacknowledged message goes to "second"
    moved = taken_by_first[0].delivery
    assert moved.session is a.broker.sessions["second"]
    publishes = second.publishes()
    assert len(publishes) == 2
    for publish in publishes:
        assert publish.packet_id is not None
        second.send(PubAck(publish.packet_id))
    assert [h.calls for h in holds] == [1, 1]


class RecordingBackplane(InProcessBackplane):
    """A distributed backplane that records what the core tells it about wills."""

    def __init__(self) -> None:
        super().__init__(InProcessHub())
        self.settled: list[str] = []
        self.published: list[str] = []

    def will_settled(self, client_id: str) -> None:
        self.settled.append(client_id)

    def publish(self, message: Message) -> bool:
        self.published.append(message.topic)
        return False


def recording() -> tuple[Harness, RecordingBackplane]:
    harness = Harness()
    backplane = RecordingBackplane()
    harness.broker.use_backplane(backplane)
    return harness, backplane


def will_with_delay(topic: str, delay: int | None) -> Will:
    props = Properties(will_delay_interval=delay) if delay is not None else Properties()
    return Will(topic, b"gone", 1, False, props)


def gone_with_a_delayed_will(harness: Harness, client_id: str, topic: str) -> None:
    """A 5.0 client with a persistent session and a 5 s will delay, whose link dies."""
    harness.connected(
        client_id,
        level=5,
        will=will_with_delay(topic, 5),
        properties=Properties(session_expiry_interval=60),
        clean_start=False,
    ).lose()


def test_will_of_gives_the_will_and_the_delay_the_node_would_apply() -> None:
    harness, backplane = recording()
    harness.connected("v3", will=Will("w/v3", b"gone", 0, False, None))
    harness.connected("clean", level=5, will=will_with_delay("w/clean", 30))
    harness.connected(
        "kept",
        level=5,
        will=will_with_delay("w/kept", 30),
        properties=Properties(session_expiry_interval=10),
        clean_start=False,
    )
    host = backplane.host  # what the cluster sees of the node
    v3 = host.will_of("v3")
    assert v3 is not None and (v3[0].topic, v3[1]) == ("w/v3", 0)
    clean = host.will_of("clean")
    assert clean is not None and clean[1] == 0  # no session to wait in: published at once
    kept = host.will_of("kept")
    assert kept is not None and kept[1] == 10  # cut to the session's expiry
    assert host.will_of("nobody") is None


def test_a_will_is_settled_by_disconnect_and_by_its_delay_running_out() -> None:
    harness, backplane = recording()
    harness.connected("normal", will=Will("w/n", b"gone", 0, False, None)).disconnect()
    assert backplane.settled == ["normal"]
    gone_with_a_delayed_will(harness, "delayed", "w/d")
    # The will waits in the session: the cluster must keep it until it goes out.
    assert backplane.settled == ["normal"]
    harness.advance(5)
    assert backplane.settled == ["normal", "delayed"]
    assert backplane.published == ["w/d"]


def test_a_fenced_node_closes_every_client_with_0x9c_and_publishes_no_will() -> None:
    harness, backplane = recording()
    watcher = harness.connected("watcher", level=5)
    watcher.subscribe("w/#")
    v5 = harness.connected("v5", level=5, will=will_with_delay("w/v5", None))
    v3 = harness.connected("v3", will=Will("w/v3", b"gone", 0, False, None))
    gone_with_a_delayed_will(harness, "pending", "w/p")
    backplane.host.node_fenced()
    for client in (watcher, v5):
        assert client.expect(Disconnect).reason_code == ReasonCode.USE_ANOTHER_SERVER
    assert v3.closed and watcher.closed and v5.closed
    harness.advance(10)  # the pending will was cancelled here: the cluster has it
    assert watcher.publishes() == [] and backplane.published == []


def test_a_will_left_by_a_dead_node_is_published_here_and_routed() -> None:
    harness, backplane = recording()
    sub = harness.connected("sub")
    sub.subscribe("w/#")
    backplane.host.publish_will(Message("w/dead", b"gone", 1, True, None, None, "dead"))
    assert [p.payload for p in sub.publishes()] == [b"gone"]
    assert backplane.published == ["w/dead"]
    assert harness.broker.retained.get("w/dead") is not None


def test_a_message_too_large_for_the_cluster_goes_nowhere_and_is_never_acknowledged() -> None:
    """The backplane refuses it (None): no node gets it, the local subscriber neither, no
    retained copy is kept, and the publisher is disconnected as for a packet above its
    Maximum Packet Size (5.0: 0x95; 3.1.1: closed), with no PUBACK/PUBREC."""
    hub, (a, b) = cluster()
    for backplane in hub.nodes:
        backplane.max_payload = 100
    local, remote = a.connected("local"), b.connected("remote")
    local.subscribe("big/#", qos=1)
    remote.subscribe("big/#", qos=1)
    for level, qos, retain in ((5, 1, False), (5, 2, True), (5, 0, False), (4, 1, True)):
        publisher = a.connected(f"pub-{level}-{qos}", level=level)
        publisher.publish("big/x", b"y" * 101, qos=qos, retain=retain)
        got = publisher.packets()
        if level == 5:
            assert len(got) == 1 and isinstance(got[0], Disconnect)
            assert got[0].reason_code == ReasonCode.PACKET_TOO_LARGE
        else:
            assert got == []
        assert publisher.closed
    assert hub.pump() == 0
    assert local.publishes() == [] and remote.publishes() == []
    assert hub.retained == {}
    late = b.connected("late")
    late.subscribe("big/#")
    assert late.publishes() == []  # nothing retained on either node
    # Within the bound the same message crosses, and is acknowledged.
    publisher = a.connected("small", level=5)
    publisher.publish("big/x", b"y" * 100, qos=1)
    assert publisher.expect(PubAck).reason_code == 0
    hub.pump()
    assert [p.payload for p in remote.publishes()] == [b"y" * 100]
    assert [p.payload for p in local.publishes()] == [b"y" * 100]
