"""MemoryStore keeps the Store contract: records, references, ordering, commits."""

from __future__ import annotations

from mqttd.protocol import Properties
from mqttd.store import (
    MemoryStore,
    OutboundState,
    Store,
    StoredMessage,
    StoredOutbound,
    StoredSubscription,
    StoredWill,
)


def _message(topic: str = "t", payload: bytes = b"p") -> StoredMessage:
    return StoredMessage(topic, payload, 1, False, Properties(content_type="x"), None, "origin")


def test_memory_store_satisfies_the_store_protocol() -> None:
    store: Store = MemoryStore()
    assert store is not None


async def test_open_and_close_are_idempotent_and_keep_records() -> None:
    store = MemoryStore()
    await store.open()
    await store.open()
    store.save_retained(_message("r"))
    await store.close()
    await store.close()
    state = await store.load()
    assert [m.topic for m in state.retained] == ["r"]


async def test_retained_messages_are_saved_replaced_and_deleted() -> None:
    store = MemoryStore()
    store.save_retained(_message("a", b"1"))
    store.save_retained(_message("a", b"2"))
    store.save_retained(_message("b", b"3"))
    store.delete_retained("b")
    state = await store.load()
    assert [(m.topic, m.payload) for m in state.retained] == [("a", b"2")]


async def test_session_with_subscriptions_outbound_inbound_ids_and_will_round_trips() -> None:
    store = MemoryStore()
    store.save_session("c", 5, 60, None)
    store.add_subscription("c", StoredSubscription("a/#", 1, True, False, 2, 7))
    store.add_subscription("c", StoredSubscription("b", 0))
    store.remove_subscription("c", "b")
    store.save_message(10, _message())
    store.add_outbound("c", StoredOutbound(2, 10, 1))
    store.add_outbound("c", StoredOutbound(1, 10, 1))
    store.set_outbound_state("c", 1, 5, OutboundState.PUBLISH_SENT)
    store.add_inbound_qos2("c", 9)
    store.add_inbound_qos2("c", 8)
    store.remove_inbound_qos2("c", 8)
    store.save_will("c", StoredWill(_message("will"), 123.0))
    store.save_session("c", 5, 120, 50.0)
    state = await store.load()
    (session,) = state.sessions
    assert (session.client_id, session.protocol_level) == ("c", 5)
    assert (session.expiry_interval, session.disconnected_at) == (120, 50.0)
    assert session.subscriptions == [StoredSubscription("a/#", 1, True, False, 2, 7)]
    assert [(o.seq, o.packet_id, o.state) for o in session.outbound] == [
        (1, 5, OutboundState.PUBLISH_SENT),
        (2, None, OutboundState.QUEUED),
    ]
    assert session.inbound_qos2 == {9}
    assert session.will is not None and session.will.publish_at == 123.0
    assert state.messages[10].payload == b"p"


async def test_a_message_lives_while_an_outbound_entry_refers_to_it() -> None:
    store = MemoryStore()
    for client_id in ("a", "b"):
        store.save_session(client_id, 4, 0xFFFFFFFF, None)
    store.save_message(1, _message())
    store.add_outbound("a", StoredOutbound(1, 1, 1))
    store.add_outbound("b", StoredOutbound(1, 1, 1))
    store.remove_outbound("a", 1)
    assert 1 in (await store.load()).messages
    store.delete_session("b")
    assert (await store.load()).messages == {}


async def test_records_for_an_unknown_session_are_ignored() -> None:
    store = MemoryStore()
    store.add_subscription("ghost", StoredSubscription("t"))
    store.add_inbound_qos2("ghost", 1)
    store.save_will("ghost", StoredWill(_message(), 0.0))
    assert (await store.load()).sessions == []


async def test_load_returns_copies_the_caller_may_change() -> None:
    store = MemoryStore()
    store.save_session("c", 4, 10, None)
    store.add_inbound_qos2("c", 1)
    state = await store.load()
    state.sessions[0].inbound_qos2.add(2)
    assert (await store.load()).sessions[0].inbound_qos2 == {1}


def test_after_commit_runs_at_once_and_in_order() -> None:
    store = MemoryStore()
    ran: list[int] = []
    store.after_commit(lambda: ran.append(1))
    store.after_commit(lambda: ran.append(2))
    assert ran == [1, 2]
    assert store.commits == 2
