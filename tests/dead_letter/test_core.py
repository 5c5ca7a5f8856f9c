"""Dead letters in the sans-IO core: every drop point, the deferral, the loop guard, the bound.

The broker runs on a FakeClock: a dead letter is published by a scheduler timer due at
once, so `core.advance()` (no time passing) is what lets it out.
"""

from __future__ import annotations

from mqttd.broker.dead_letter import (
    DEFAULT_REASONS,
    STATS_FIELDS,
    DeadLetterSettings,
    DropReason,
    dropped_by_reason,
    dropped_total,
)
from mqttd.broker.message import Message
from mqttd.protocol import Properties, PubAck, Publish, PubRec
from mqttd.protocol.reason_codes import ReasonCode
from mqttd.store.memory import MemoryStore

from .sansio import ALL_REASONS, Client, Core, user_properties

PERSISTENT = Properties(session_expiry_interval=300)
# FakeClock's wall clock starts at 1_700_000_000 (2023-11-14T22:13:20Z).
START_TIME = "2023-11-14T22:13:20.000Z"


async def collector(core: Core, qos: int = 1) -> Client:
    """A connected 5.0 client subscribed to every dead letter."""
    dlq = core.client("dlq")
    dlq.subscribe("$dead/#", qos)
    return dlq


def counts(core: Core) -> dict[str, int]:
    """The non-zero drop counters, by reason value."""
    return {r.value: n for r, n in dropped_by_reason(core.broker.stats).items() if n}


# -- each drop point ----------------------------------------------------------------------


async def test_queue_full_drop_new_dead_letters_the_refused_messages() -> None:
    core = await Core(max_queued_messages=2).start()
    offline = core.client("offline", properties=PERSISTENT)
    offline.subscribe("plant/#", 1)
    offline.disconnect()
    dlq = core.client("dlq")
    dlq.subscribe("$dead/#", 1)
    pub = core.client("sensor-7")
    for i in range(4):
        pub.publish(f"plant/m{i}", f"reading {i}".encode(), qos=1)
    assert dlq.publishes() == []  # deferred: nothing is published from inside the routing
    assert core.broker.dead_letters.pending == 2
    core.advance()
    letters = dlq.publishes()
    assert [(p.topic, p.payload, p.qos, p.retain) for p in letters] == [
        ("$dead/queue_full/plant/m2", b"reading 2", 1, False),
        ("$dead/queue_full/plant/m3", b"reading 3", 1, False),
    ]
    assert user_properties(letters[0]) == {
        "reason": "queue_full",
        "original-topic": "plant/m2",
        "publisher": "sensor-7",
        "receiver": "offline",
        "time": START_TIME,
    }
    props = letters[0].properties
    assert props is not None
    assert [name for name, _ in props.user_property] == [
        "reason",
        "original-topic",
        "publisher",
        "receiver",
        "time",
    ]
    assert counts(core) == {"queue_full": 2}
    assert core.broker.stats.messages_dropped == 2
    assert core.broker.stats.dead_letters_published == 2


async def test_queue_full_drop_oldest_dead_letters_the_evicted_messages() -> None:
    core = await Core(max_queued_messages=2, queue_overflow="drop_oldest").start()
    offline = core.client("offline", properties=PERSISTENT)
    offline.subscribe("plant/#", 1)
    offline.disconnect()
    dlq = await collector(core)
    pub = core.client("pub")
    for i in range(4):
        pub.publish("plant/m", f"{i}".encode(), qos=1)
    core.advance()
    assert [p.payload for p in dlq.publishes()] == [b"0", b"1"]
    assert counts(core) == {"queue_full": 2}


async def test_expired_message_of_an_offline_session_is_dead_lettered_on_reconnect() -> None:
    core = await Core().start()
    sleeper = core.client("sleeper", properties=PERSISTENT)
    sleeper.subscribe("meter/#", 1)
    sleeper.disconnect()
    dlq = await collector(core)
    pub = core.client("meter-1")
    original = Properties(
        message_expiry_interval=10,
        content_type="text/plain",
        correlation_data=b"c-1",
        user_property=(("site", "north"),),
    )
    pub.publish("meter/1", b"42 kWh", qos=1, properties=original)
    pub.publish("meter/2", b"still fresh", qos=1)
    core.advance(11)
    assert dlq.publishes() == []  # found out when the session is about to send it
    again = core.client("sleeper", clean=False, properties=PERSISTENT)
    assert [p.payload for p in again.publishes()] == [b"still fresh"]
    core.advance()
    [letter] = dlq.publishes()
    assert (letter.topic, letter.payload, letter.qos) == ("$dead/expired/meter/1", b"42 kWh", 1)
    props = letter.properties
    assert props is not None
    # The dead letter must not expire in turn; what describes the payload travels along.
    assert props.message_expiry_interval is None
    assert (props.content_type, props.correlation_data) == ("text/plain", b"c-1")
    assert props.user_property == (
        ("reason", "expired"),
        ("original-topic", "meter/1"),
        ("publisher", "meter-1"),
        ("receiver", "sleeper"),
        ("time", "2023-11-14T22:13:31.000Z"),
        ("site", "north"),
    )
    assert counts(core) == {"expired": 1}


async def test_too_large_for_the_receivers_maximum_packet_size() -> None:
    core = await Core().start()
    tiny = core.client("tiny", properties=Properties(maximum_packet_size=64))
    tiny.subscribe("big/#", 0)
    dlq = await collector(core)
    pub = core.client("pub")
    pub.publish("big/blob", b"b" * 200)
    pub.publish("big/small", b"ok")
    assert [p.payload for p in tiny.publishes()] == [b"ok"]
    core.advance()
    [letter] = dlq.publishes()
    assert (letter.topic, letter.payload, letter.qos) == ("$dead/too_large/big/blob", b"b" * 200, 0)
    assert user_properties(letter)["receiver"] == "tiny"
    assert counts(core) == {"too_large": 1}


async def test_a_publish_refused_by_the_acl_is_dead_lettered_without_a_receiver() -> None:
    core = await Core().start()
    # The ACL hook as mqttd.security installs it: (client_id, username, action, topic).
    core.broker.authorise = lambda cid, user, action, topic: (
        not (action == "write" and topic.startswith("secret/"))
    )
    dlq = await collector(core)
    pub = core.client("intruder")
    pub.publish("secret/plans", b"payload", qos=1)
    [ack] = pub.packets()
    assert isinstance(ack, PubAck) and ack.reason_code == ReasonCode.NOT_AUTHORIZED
    core.advance()
    [letter] = dlq.publishes()
    assert letter.topic == "$dead/not_authorised/secret/plans"
    assert letter.payload == b"payload" and letter.qos == 1
    found = user_properties(letter)
    assert found["publisher"] == "intruder" and "receiver" not in found
    assert counts(core) == {"not_authorised": 1}


async def test_expired_retained_message_found_by_a_subscription() -> None:
    core = await Core().start()
    dlq = await collector(core)
    pub = core.client("config-tool")
    pub.publish(
        "cfg/a", b"v1", qos=1, retain=True, properties=Properties(message_expiry_interval=5)
    )
    core.advance(6)
    sub = core.client("reader")
    assert sub.subscribe("cfg/#", 1) == []
    core.advance()
    [letter] = dlq.publishes()
    assert (letter.topic, letter.payload, letter.retain) == (
        "$dead/retained_expired/cfg/a",
        b"v1",
        False,
    )
    assert user_properties(letter)["receiver"] == "reader"
    assert len(core.broker.retained) == 0
    assert counts(core) == {"retained_expired": 1}


async def test_expired_retained_message_found_when_the_store_is_loaded() -> None:
    store = MemoryStore()
    first = await Core(store=store).start()
    first.client("pub").publish(
        "cfg/b", b"v", retain=True, properties=Properties(message_expiry_interval=5)
    )
    await first.broker.stop()
    later = Core(store=store)
    later.clock.advance(60)  # both clocks read the wall clock the store keeps
    await later.start()
    assert counts(later) == {"retained_expired": 1}
    assert later.broker.dead_letters.pending == 1
    dlq = await collector(later)
    later.advance()
    assert [p.topic for p in dlq.publishes()] == ["$dead/retained_expired/cfg/b"]


async def test_a_shared_members_messages_nobody_else_can_take_are_dead_lettered() -> None:
    core = await Core().start()
    member = core.client("member", properties=Properties(session_expiry_interval=10))
    member.subscribe("$share/workers/job/#", 1)
    pub = core.client("pub")
    pub.publish("job/1", b"one", qos=1)
    assert [p.payload for p in member.publishes()] == [b"one"]  # inflight, never acked
    member.disconnect()
    dlq = await collector(core)
    core.advance(10)  # the only member's session ends: no one to hand "one" to
    assert [p.topic for p in dlq.publishes()] == ["$dead/session_expired/job/1"]
    assert counts(core) == {"session_expired": 1}


async def test_session_expiry_dead_letters_queued_and_unacknowledged_messages() -> None:
    core = await Core().start()
    short = core.client("short", properties=Properties(session_expiry_interval=10))
    short.subscribe("job/#", 1)
    pub = core.client("pub")
    pub.publish("job/1", b"one", qos=1)
    assert [p.payload for p in short.publishes()] == [b"one"]  # inflight, never acked
    short.disconnect()
    pub.publish("job/2", b"two", qos=1)  # queued for the offline session
    dlq = await collector(core)
    core.advance(10)
    letters = dlq.publishes()
    assert [(p.topic, p.payload) for p in letters] == [
        ("$dead/session_expired/job/1", b"one"),
        ("$dead/session_expired/job/2", b"two"),
    ]
    assert all(user_properties(p)["receiver"] == "short" for p in letters)
    assert counts(core) == {"session_expired": 2}
    assert core.broker.stats.sessions_expired == 1


async def test_a_qos2_message_past_pubrec_is_delivered_not_dropped_at_session_end() -> None:
    core = await Core().start()
    short = core.client("short", properties=Properties(session_expiry_interval=10))
    short.subscribe("job/#", 2)
    core.client("pub").publish("job/1", b"one", qos=2)
    [delivery] = short.publishes()
    assert delivery.packet_id is not None
    short.send(PubRec(delivery.packet_id))  # the client has it; PUBREL follows
    short.disconnect()
    core.advance(10)
    assert counts(core) == {}


async def test_clean_session_ending_at_disconnect_drops_its_unacknowledged_messages() -> None:
    core = await Core().start()
    clean = core.client("clean", level=4)
    clean.subscribe("job/#", 1)
    core.client("pub").publish("job/1", b"one", qos=1)
    assert len(clean.publishes()) == 1
    clean.conn.connection_lost()
    assert counts(core) == {"session_expired": 1}


async def test_clean_start_discarding_a_session_is_the_clients_choice_not_a_drop() -> None:
    core = await Core().start()
    owner = core.client("owner", properties=PERSISTENT)
    owner.subscribe("job/#", 1)
    owner.disconnect()
    core.client("pub").publish("job/1", b"one", qos=1)
    core.client("owner", clean=True)
    assert counts(core) == {}


async def test_qos0_queued_for_a_slow_client_is_dropped_as_disconnected() -> None:
    core = await Core().start()
    slow = core.client("slow", properties=PERSISTENT)
    slow.subscribe("tick", 0)
    slow.conn.writable_changed(False)  # the transport is above its high-water mark
    pub = core.client("pub")
    pub.publish("tick", b"1")
    pub.publish("tick", b"2")
    dlq = await collector(core, qos=0)
    slow.conn.connection_lost()
    core.advance()
    assert [(p.topic, p.payload) for p in dlq.publishes()] == [
        ("$dead/disconnected/tick", b"1"),
        ("$dead/disconnected/tick", b"2"),
    ]
    assert counts(core) == {"disconnected": 2}


async def test_no_subscribers_is_counted_and_dead_lettered_only_when_asked() -> None:
    core = await Core().start()
    dlq = await collector(core, qos=2)
    pub = core.client("pub")
    pub.publish("void/x", b"lost", qos=1)
    pub.publish("void/y", b"zero")  # QoS 0: fire and forget, not counted
    pub.publish("void/r", b"kept", qos=1, retain=True)  # retained: not lost
    core.advance()
    assert dlq.publishes() == []
    assert counts(core) == {"no_subscribers": 1}
    assert dropped_total(core.broker.stats) == 0  # nothing was lost by the broker

    core.broker.dead_letters.configure(DeadLetterSettings(enabled=True, reasons=ALL_REASONS))
    pub.publish("void/x", b"lost", qos=2)
    core.advance()
    [letter] = dlq.publishes()
    assert (letter.topic, letter.qos) == ("$dead/no_subscribers/void/x", 2)
    assert "receiver" not in user_properties(letter)


# -- configuration --------------------------------------------------------------------------


async def test_off_drops_are_counted_and_nothing_is_published_or_scheduled() -> None:
    core = await Core(dead_letter=DeadLetterSettings(), max_queued_messages=1).start()
    offline = core.client("offline", properties=PERSISTENT)
    offline.subscribe("t", 1)
    offline.disconnect()
    dlq = await collector(core)
    pub = core.client("pub")
    timers = len(core.broker.scheduler)
    for _ in range(3):
        pub.publish("t", b"x", qos=1)
    assert len(core.broker.scheduler) == timers  # no flush timer
    core.advance()
    assert dlq.publishes() == []
    assert counts(core) == {"queue_full": 2}
    assert core.broker.stats.dead_letters_published == 0


async def test_only_the_configured_reasons_are_published_under_the_configured_prefix() -> None:
    settings = DeadLetterSettings(
        enabled=True, prefix="$audit/drops", reasons=frozenset({DropReason.TOO_LARGE})
    )
    core = await Core(dead_letter=settings, max_queued_messages=1).start()
    offline = core.client("offline", properties=PERSISTENT)
    offline.subscribe("t", 1)
    offline.disconnect()
    tiny = core.client("tiny", properties=Properties(maximum_packet_size=32))
    tiny.subscribe("t", 1)
    audit = core.client("audit")
    audit.subscribe("$audit/#", 1)
    pub = core.client("pub")
    pub.publish("t", b"q" * 40, qos=1)  # too large for tiny, queued for offline
    pub.publish("t", b"q" * 40, qos=1)  # too large for tiny, queue of offline full
    core.advance()
    assert [p.topic for p in audit.publishes()] == ["$audit/drops/too_large/t"] * 2
    assert counts(core) == {"too_large": 2, "queue_full": 1}


async def test_the_default_reasons_are_all_but_no_subscribers() -> None:
    assert DeadLetterSettings().reasons == DEFAULT_REASONS
    assert frozenset(DropReason) - DEFAULT_REASONS == {DropReason.NO_SUBSCRIBERS}
    assert set(STATS_FIELDS) == set(DropReason)


async def test_reconfiguring_keeps_the_counters() -> None:
    core = await Core(max_queued_messages=1).start()
    offline = core.client("offline", properties=PERSISTENT)
    offline.subscribe("t", 1)
    offline.disconnect()
    pub = core.client("pub")
    pub.publish("t", b"1", qos=1)
    pub.publish("t", b"2", qos=1)
    core.broker.dead_letters.configure(DeadLetterSettings())
    pub.publish("t", b"3", qos=1)
    core.advance()
    assert counts(core) == {"queue_full": 2}
    assert core.broker.stats.dead_letters_published == 1


# -- the path cannot feed itself ------------------------------------------------------------


async def test_a_dead_letter_that_is_dropped_is_counted_and_never_dead_lettered_again() -> None:
    core = await Core(max_queued_messages=2).start()
    victim = core.client("victim", properties=PERSISTENT)
    victim.subscribe("flood/#", 1)
    victim.disconnect()
    # The dead-letter collector is offline too, and its queue is as small.
    dlq = core.client("dlq", properties=PERSISTENT)
    dlq.subscribe("$dead/#", 1)
    dlq.disconnect()
    watch = core.client("watch")
    watch.subscribe("$dead/#", 0)
    pub = core.client("pub")
    for i in range(6):
        pub.publish("flood/x", f"{i}".encode(), qos=1)
    for _ in range(3):
        core.advance()
    seen = watch.publishes()
    assert [p.topic for p in seen] == ["$dead/queue_full/flood/x"] * 4
    assert [p.payload for p in seen] == [b"2", b"3", b"4", b"5"]
    # 4 for the victim, then 2 of those 4 dead letters did not fit the collector's queue.
    assert counts(core) == {"queue_full": 6}
    assert core.broker.stats.dead_letters_published == 4
    assert core.broker.dead_letters.pending == 0
    again = core.client("dlq", clean=False, properties=PERSISTENT)
    assert [p.payload for p in again.publishes()] == [b"2", b"3"]


async def test_a_client_message_under_the_prefix_is_not_dead_lettered() -> None:
    core = await Core().start()
    tiny = core.client("tiny", properties=Properties(maximum_packet_size=40))
    tiny.subscribe("$dead/#", 0)
    pub = core.client("pub")
    pub.publish("$dead/forged/topic", b"z" * 100)
    core.advance()
    # The prefix is the broker's (issue 14): the forged letter is refused, counted, and
    # not dead-lettered in turn.
    assert counts(core) == {"not_authorised": 1}
    assert core.broker.stats.dead_letters_published == 0


async def test_a_dead_letter_restored_from_the_store_is_still_known_by_its_topic() -> None:
    core = await Core().start()
    core.broker.dead_letters.drop(
        DropReason.EXPIRED, Message("$dead/expired/a", b"x", 1, origin=None)
    )
    assert core.broker.dead_letters.pending == 0
    assert counts(core) == {"expired": 1}


async def test_sys_messages_are_counted_not_dead_lettered() -> None:
    core = await Core().start()
    core.broker.dead_letters.drop(DropReason.QUEUE_FULL, Message("$SYS/broker/uptime", b"1"))
    assert core.broker.dead_letters.pending == 0
    assert counts(core) == {"queue_full": 1}


async def test_the_rate_limit_bounds_dead_letters_and_counts_the_rest() -> None:
    settings = DeadLetterSettings(enabled=True, max_rate=1.0, burst=3)
    core = await Core(dead_letter=settings).start()
    tiny = core.client("tiny", properties=Properties(maximum_packet_size=32))
    tiny.subscribe("big", 0)
    dlq = await collector(core, qos=0)
    pub = core.client("pub")
    for _ in range(10):
        pub.publish("big", b"b" * 64)
    core.advance()
    assert len(dlq.publishes()) == 3
    stats = core.broker.stats
    assert (stats.messages_too_large, stats.dead_letters_published) == (10, 3)
    assert stats.dead_letters_suppressed == 7
    core.advance(2.0)  # two tokens come back
    for _ in range(5):
        pub.publish("big", b"b" * 64)
    core.advance()
    assert len(dlq.publishes()) == 2
    assert (stats.dead_letters_published, stats.dead_letters_suppressed) == (5, 10)


async def test_a_topic_too_long_for_its_dead_letter_is_suppressed() -> None:
    core = await Core().start()
    core.broker.dead_letters.drop(DropReason.TOO_LARGE, Message("t/" + "x" * 65_530, b"x"))
    assert core.broker.dead_letters.pending == 0
    assert core.broker.stats.dead_letters_suppressed == 1


async def test_one_flush_timer_whatever_the_number_of_drops() -> None:
    core = await Core(max_queued_messages=1).start()
    offline = core.client("offline", properties=PERSISTENT)
    offline.subscribe("t", 1)
    offline.disconnect()
    pub = core.client("pub")
    timers = len(core.broker.scheduler)
    for _ in range(20):
        pub.publish("t", b"x", qos=1)
    assert len(core.broker.scheduler) == timers + 1
    assert core.advance() == 1
    assert core.broker.stats.dead_letters_published == 19


async def test_stop_publishes_the_dead_letters_still_waiting() -> None:
    store = MemoryStore()
    core = await Core(store=store).start()
    keeper = core.client("keeper", properties=PERSISTENT)
    keeper.subscribe("$dead/#", 1)
    keeper.disconnect()
    core.broker.dead_letters.drop(DropReason.QUEUE_FULL, Message("t", b"late", 1))
    await core.broker.stop()
    later = await Core(store=store).start()
    again = later.client("keeper", clean=False, properties=PERSISTENT)
    [letter] = again.publishes()
    assert (letter.topic, letter.payload) == ("$dead/queue_full/t", b"late")


async def test_a_dead_letter_keeps_the_subscribers_qos_rules() -> None:
    core = await Core().start()
    tiny = core.client("tiny", properties=Properties(maximum_packet_size=32))
    tiny.subscribe("t", 2)
    v3 = core.client("old-timer", level=4)
    v3.subscribe("$dead/#", 1)  # granted 1: a QoS 2 dead letter arrives at QoS 1
    core.client("pub").publish("t", b"x" * 64, qos=2)
    core.advance()
    [letter] = v3.publishes()
    assert isinstance(letter, Publish)
    assert (letter.topic, letter.qos, letter.properties) == ("$dead/too_large/t", 1, None)
