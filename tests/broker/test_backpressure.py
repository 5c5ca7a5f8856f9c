"""Back-pressure (mqttd/broker/flow.py): publishers are paused while a session they feed
is saturated, resumed when it drains; the overflow policy applies only when pausing
cannot help."""

from __future__ import annotations

from typing import Any

from support.core import Client, Harness

from mqttd.protocol import PubAck, Publish


def track(client: Client) -> list[str]:
    """Record the pause_reading/resume_reading calls made on the client's sink."""
    calls: list[str] = []
    sink = client.sink
    pause, resume = sink.pause_reading, sink.resume_reading

    def paused() -> None:
        calls.append("pause")
        pause()

    def resumed() -> None:
        calls.append("resume")
        resume()

    sink.pause_reading = paused  # type: ignore[method-assign]
    sink.resume_reading = resumed  # type: ignore[method-assign]
    return calls


def slow_subscriber(harness: Harness, client_id: str = "sub", qos: int = 1, **kw: Any) -> Client:
    """A subscriber to "t" that never acknowledges until the test says so."""
    sub = harness.connected(client_id, **kw)
    sub.subscribe("t", qos=qos)
    return sub


def publish_until_paused(pub: Client, limit: int = 100, qos: int = 1) -> int:
    """Publish to "t" until the broker pauses `pub`; return how many were sent."""
    for i in range(1, limit + 1):
        pub.publish("t", i.to_bytes(4, "big"), qos=qos, packet_id=i if qos else None)
        if not pub.sink.reading:
            return i
    raise AssertionError(f"not paused after {limit} publishes")


def ack_all(sub: Client) -> list[Publish]:
    """Acknowledge every PUBLISH the subscriber has, and those the acks release (other
    packets, such as PUBACKs for its own publishes, are skipped)."""
    got: list[Publish] = []
    while True:
        batch = [p for p in sub.packets() if isinstance(p, Publish)]
        if not batch:
            return got
        got += batch
        for p in batch:
            sub.ack(p)


def test_publisher_is_paused_past_high_water_and_resumed_at_low_water(
    make_harness: Any,
) -> None:
    # max_queued_messages 10: high-water mark 5, low-water mark 2; window 1.
    harness = make_harness(max_queued_messages=10, max_inflight_messages=1)
    sub = slow_subscriber(harness)
    pub = harness.connected("pub")
    calls = track(pub)
    sent = publish_until_paused(pub)
    session = harness.broker.sessions["sub"]
    assert sent == 7  # 1 inflight, then 5 queued; the 7th lands past the mark
    assert session.queue_length == 6
    assert calls == ["pause"]
    assert harness.broker.stats.publishers_paused == 1
    assert pub.conn.blocked_on == {session}
    # Every PUBLISH was acknowledged: nothing was refused.
    assert [p.packet_id for p in pub.packets() if isinstance(p, PubAck)] == list(range(1, 8))
    acked = 0
    while pub.sink.reading is False:
        (p,) = sub.publishes()
        sub.ack(p)
        acked += 1
    assert session.queue_length == 2  # resumed at the low-water mark, not before
    assert acked == 4
    assert calls == ["pause", "resume"]
    assert pub.conn.blocked_on is None and session.waiting_publishers is None
    assert len(ack_all(sub)) == 3


def test_acknowledged_qos1_is_kept_past_the_hard_bound_while_the_publisher_is_paused(
    make_harness: Any,
) -> None:
    # The harness goes on feeding a paused publisher, as one socket read already in
    # hand would: every acknowledged message must still arrive, in order.
    harness = make_harness(max_queued_messages=4, max_inflight_messages=2)
    sub = slow_subscriber(harness)
    pub = harness.connected("pub")
    for i in range(1, 51):
        pub.publish("t", i.to_bytes(4, "big"), qos=1, packet_id=i)
    assert not pub.sink.reading
    assert len([p for p in pub.packets() if isinstance(p, PubAck)]) == 50
    assert harness.broker.stats.messages_dropped == 0
    got = ack_all(sub)
    assert [int.from_bytes(p.payload, "big") for p in got] == list(range(1, 51))
    assert pub.sink.reading


def test_qos0_past_the_hard_bound_is_dropped_and_counted_though_the_publisher_is_paused(
    make_harness: Any,
) -> None:
    harness = make_harness(max_queued_messages=4)
    sub = slow_subscriber(harness, qos=0)
    sub.conn.writable_changed(False)  # a subscriber whose socket is full
    pub = harness.connected("pub")
    for i in range(10):
        pub.publish("t", bytes([i]))
    assert not pub.sink.reading  # paused at the high-water mark (2)
    assert harness.broker.stats.messages_dropped == 6
    sub.conn.writable_changed(True)
    assert [p.payload for p in sub.publishes()] == [bytes([i]) for i in range(4)]
    assert pub.sink.reading


def test_a_client_publishing_to_its_own_slow_subscription_is_never_paused(
    make_harness: Any,
) -> None:
    harness = make_harness(max_queued_messages=6, max_inflight_messages=1)
    me = slow_subscriber(harness, "me")
    calls = track(me)
    for i in range(1, 21):
        me.publish("t", b"x", qos=1, packet_id=i)
    # Pausing it would stop the PUBACKs that drain its queue: the overflow policy holds.
    assert calls == [] and me.sink.reading
    assert harness.broker.sessions["me"].queue_length == 6
    assert harness.broker.stats.messages_dropped == 20 - 1 - 6


def test_two_slow_clients_publishing_to_each_other_do_not_pause_each_other_for_ever(
    make_harness: Any,
) -> None:
    harness = make_harness(max_queued_messages=10, max_inflight_messages=1)
    a = harness.connected("a")
    a.subscribe("to-a", qos=1)
    b = harness.connected("b")
    b.subscribe("to-b", qos=1)
    for i in range(1, 8):
        a.publish("to-b", b"x", qos=1, packet_id=i)
    assert not a.sink.reading  # b is saturated: a waits for it
    for i in range(1, 30):
        b.publish("to-a", b"y", qos=1, packet_id=i)
    # a's own queue filled while a was paused: a must be read again (its PUBACKs drain
    # it), and b, whose queue is saturated too, is never paused.
    assert a.sink.reading and b.sink.reading
    assert a.conn.blocked_on is None and b.conn.blocked_on is None
    # Both drain once their clients acknowledge.
    ack_all(a)
    ack_all(b)
    assert harness.broker.sessions["a"].queue_length == 0
    assert harness.broker.sessions["b"].queue_length == 0


def test_an_offline_persistent_session_drops_by_the_overflow_policy_without_pausing(
    make_harness: Any,
) -> None:
    harness = make_harness(max_queued_messages=5)
    sub = slow_subscriber(harness, clean_start=False)
    sub.disconnect()
    pub = harness.connected("pub")
    calls = track(pub)
    for i in range(1, 21):
        pub.publish("t", b"x", qos=1, packet_id=i)
    assert calls == []
    assert harness.broker.sessions["sub"].queue_length == 5
    assert harness.broker.stats.messages_dropped == 15


def test_publishers_resume_when_the_saturated_subscriber_goes_away(make_harness: Any) -> None:
    harness = make_harness(max_queued_messages=10, max_inflight_messages=1)
    sub = slow_subscriber(harness, clean_start=False)
    pub1 = harness.connected("pub1")
    pub2 = harness.connected("pub2")
    publish_until_paused(pub1)
    pub2.publish("t", b"x", qos=1, packet_id=1)
    assert not pub1.sink.reading and not pub2.sink.reading
    assert harness.broker.stats.publishers_paused == 2
    sub.lose()  # offline now: pausing cannot help any more
    assert pub1.sink.reading and pub2.sink.reading
    assert pub1.conn.blocked_on is None and pub2.conn.blocked_on is None


def test_a_paused_publisher_that_disconnects_is_forgotten(make_harness: Any) -> None:
    harness = make_harness(max_queued_messages=10, max_inflight_messages=1)
    sub = slow_subscriber(harness)
    pub = harness.connected("pub")
    publish_until_paused(pub)
    session = harness.broker.sessions["sub"]
    pub.lose()
    assert session.waiting_publishers is None
    assert len(ack_all(sub)) == 7


def test_one_publisher_waits_for_every_saturated_session_it_feeds(make_harness: Any) -> None:
    harness = make_harness(max_queued_messages=10, max_inflight_messages=1)
    s1 = slow_subscriber(harness, "s1")
    s2 = slow_subscriber(harness, "s2")
    pub = harness.connected("pub")
    calls = track(pub)
    publish_until_paused(pub)
    assert pub.conn.blocked_on == {harness.broker.sessions["s1"], harness.broker.sessions["s2"]}
    ack_all(s1)
    assert not pub.sink.reading  # s2 is still saturated
    ack_all(s2)
    assert pub.sink.reading
    assert calls == ["pause", "resume"]


def test_a_stuck_subscriber_stops_pausing_publishers_after_max_publisher_pause(
    make_harness: Any,
) -> None:
    harness = make_harness(max_queued_messages=10, max_inflight_messages=1, max_publisher_pause=5.0)
    sub = slow_subscriber(harness)
    pub = harness.connected("pub")
    sent = publish_until_paused(pub)
    harness.advance(4.9)
    assert not pub.sink.reading
    harness.advance(0.2)  # 5 s without a single message drained
    assert pub.sink.reading
    assert harness.broker.stats.publisher_pause_timeouts == 1
    # From now on the overflow policy applies to it: no pause, drops past the bound.
    for i in range(sent + 1, sent + 11):
        pub.publish("t", b"x", qos=1, packet_id=i)
    assert pub.sink.reading
    session = harness.broker.sessions["sub"]
    assert session.queue_length == 10
    assert harness.broker.stats.messages_dropped == 6
    # Once it drains to its low-water mark it pauses publishers again.
    ack_all(sub)
    assert session.waiting_publishers is None
    publish_until_paused(pub)


def test_a_slow_but_moving_subscriber_keeps_its_publishers_paused(make_harness: Any) -> None:
    harness = make_harness(max_queued_messages=20, max_inflight_messages=1, max_publisher_pause=5.0)
    sub = slow_subscriber(harness)
    pub = harness.connected("pub")
    publish_until_paused(pub)  # 1 inflight + 11 queued, paused at 10
    for _ in range(3):
        (p,) = sub.publishes()
        sub.ack(p)  # one message drained every 4 s
        harness.advance(4.0)
    assert not pub.sink.reading
    assert harness.broker.stats.publisher_pause_timeouts == 0


def test_keepalive_does_not_expire_while_the_broker_is_not_reading(make_harness: Any) -> None:
    harness = make_harness(max_queued_messages=10, max_inflight_messages=1, max_publisher_pause=0)
    sub = slow_subscriber(harness)
    pub = harness.connected("pub", keep_alive=10)
    publish_until_paused(pub)
    harness.advance(60.0)  # four times 1.5 x Keep Alive, paused all along
    assert not pub.closed
    ack_all(sub)
    assert pub.sink.reading
    harness.advance(14.9)  # the deadline counts from the resume
    assert not pub.closed
    harness.advance(0.2)
    assert pub.closed


def test_throttle_and_backpressure_hold_reading_independently(harness: Harness) -> None:
    client = harness.connected("c")
    calls = track(client)
    conn = client.conn
    conn.hold_reading(1)
    conn.hold_reading(2)
    conn.release_reading(1)
    assert calls == ["pause"] and not client.sink.reading
    conn.release_reading(1)  # not held for that reason any more: nothing happens
    conn.release_reading(2)
    assert calls == ["pause", "resume"] and client.sink.reading


def test_nothing_is_paused_while_subscribers_keep_up(make_harness: Any) -> None:
    harness = make_harness(max_queued_messages=10, max_inflight_messages=5)
    sub = slow_subscriber(harness)
    pub = harness.connected("pub")
    calls = track(pub)
    for i in range(1, 201):
        pub.publish("t", b"x", qos=1, packet_id=i)
        ack_all(sub)
    assert calls == []
    assert harness.broker.stats.publishers_paused == 0
    assert harness.broker.sessions["sub"].waiting_publishers is None
