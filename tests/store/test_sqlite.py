"""SqliteStore keeps the Store contract on disk: round trips, group commit, refusals, full disk."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.files import damage_index, read_only

from mqttd.broker.clock import FakeClock
from mqttd.protocol import Properties, PubAck
from mqttd.store import (
    MemoryStore,
    OutboundState,
    Store,
    StoredMessage,
    StoredOutbound,
    StoredState,
    StoredSubscription,
    StoredWill,
)
from mqttd.store import sqlite as sqlite_module
from mqttd.store.base import pack_retained
from mqttd.store.sqlite import SCHEMA_VERSION, DatabaseUnusable, SqliteStore

pytestmark = pytest.mark.timeout(60)

PROPS = Properties(
    payload_format_indicator=1,
    message_expiry_interval=30,
    content_type="text/plain",
    response_topic="reply/here",
    correlation_data=b"\x00\x01",
    user_property=(("a", "1"), ("a", "2")),
)


def _message(topic: str = "t", payload: bytes = b"p", **kw: object) -> StoredMessage:
    message = StoredMessage(topic, payload, 1, False, None, None, "origin")
    for key, value in kw.items():
        setattr(message, key, value)
    return message


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "mqttd.db"


@contextlib.asynccontextmanager
async def opened(
    path: Path,
    *,
    durability: str = "safe",
    commit_interval: float = 0.005,
    commit_batch: int = 1000,
) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(
        path, durability=durability, commit_interval=commit_interval, commit_batch=commit_batch
    )
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _reload(path: Path) -> StoredState:
    """What a fresh store on the file loads (the previous one must be closed)."""
    async with opened(path) as store:
        return await store.load()


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the file through a second connection, as another process would."""
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_sqlite_store_satisfies_the_store_protocol(db_path: Path) -> None:
    store: Store = SqliteStore(db_path)
    assert store is not None


# -- round trips --------------------------------------------------------------------------


async def test_open_creates_the_directory_and_a_versioned_wal_database(db_path: Path) -> None:
    async with opened(db_path) as store:
        await store.open()  # idempotent
        assert store.is_open
    assert db_path.is_file()
    assert _rows(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert _rows(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert _rows(db_path, "PRAGMA application_id") == [(sqlite_module.APPLICATION_ID,)]


async def test_retained_messages_are_saved_replaced_deleted_with_properties(
    db_path: Path,
) -> None:
    async with opened(db_path) as store:
        store.save_retained(_message("a", b"1", retain=True))
        store.save_retained(_message("a", b"2", retain=True, properties=PROPS, expiry_at=99.5))
        store.save_retained(_message("b", b"3", retain=True))
        store.save_retained(_message("c", b"4", retain=True))
        await store.flush()
        store.delete_retained("b")
    state = await _reload(db_path)
    assert sorted((m.topic, m.payload) for m in state.retained) == [("a", b"2"), ("c", b"4")]
    (a,) = [m for m in state.retained if m.topic == "a"]
    assert a == StoredMessage("a", b"2", 1, True, PROPS, 99.5, "origin")


# Origins across the 7-bit groups of the packed record's length (128 and 16,384 bytes),
# empty, absent and beyond the BMP; payloads with NULs, invalid UTF-8 and every byte.
_PACKED_CASES = [
    (origin, payload, qos, retain)
    for origin, payload in [
        (None, b"p"),
        ("", b""),
        ("pub", b"\x00"),
        ("é" * 64, b"\xff\xfe\x00\x80"),  # 128 bytes of UTF-8
        ("x" * 127, bytes(range(256))),
        ("é" * 8_192, b"\x00" * 70_000),  # 16,384 bytes
        ("\U0001f600" * 16_383, random.Random(3).randbytes(1_000)),  # 65,532 bytes
    ]
    for qos, retain in [(0, True), (1, False), (2, True)]
]


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
async def test_retained_rows_come_packed_byte_for_byte_and_whole_when_they_must(
    db_path: Path, kind: str
) -> None:
    messages = [
        StoredMessage(f"t/{i}", payload, qos, retain, None, None, origin)
        for i, (origin, payload, qos, retain) in enumerate(_PACKED_CASES)
    ]
    messages.append(StoredMessage("w/props", b"1", 1, True, PROPS, None, "o"))
    messages.append(StoredMessage("w/expiry", b"2", 0, True, None, 99.5, None))
    store: SqliteStore | MemoryStore = SqliteStore(db_path) if kind == "sqlite" else MemoryStore()
    await store.open()
    try:
        for message in messages:
            store.save_retained(message)
        chunks = [rows async for rows in store.retained_rows(chunk=4)]
    finally:
        await store.close()
    # A chunk is packed rows only or whole rows only; the packed ones come first.
    kinds = [{len(row) for row in rows} for rows in chunks]
    assert all(len(k) == 1 for k in kinds)
    assert [k.pop() for k in kinds] == [2] * 6 + [7]
    rows = [row for rows in chunks for row in rows]
    packed = {row[0]: row[1] for row in rows if len(row) == 2}
    assert packed == {
        m.topic: pack_retained(m.qos, m.retain, m.origin, m.payload) for m in messages[:-2]
    }
    whole = sorted((row for row in rows if len(row) == 7), key=lambda row: row[0])
    assert whole == [
        ("w/expiry", b"2", 0, 1, None, 99.5, None),
        ("w/props", b"1", 1, 1, PROPS, None, "o"),
    ]


async def test_a_database_in_utf16_hands_the_same_packed_records(db_path: Path) -> None:
    # The record is a blob written by `pack_retained`: its origin is UTF-8 whatever the
    # file's text encoding.
    db_path.parent.mkdir(parents=True)
    con = sqlite3.connect(db_path)
    con.execute("PRAGMA encoding = 'UTF-16le'")
    con.execute("CREATE TABLE x (y)")  # the encoding is fixed by the first table
    con.execute("DROP TABLE x")
    con.commit()
    con.close()
    async with opened(db_path) as store:
        store.save_retained(StoredMessage("a/b", b"\x00p", 1, True, None, None, "pübé"))
        await store.flush()
        rows = [row async for chunk in store.retained_rows() for row in chunk]
    assert rows == [("a/b", pack_retained(1, True, "pübé", b"\x00p"))]
    assert [(m.topic, m.payload, m.origin) for m in (await _reload(db_path)).retained] == [
        ("a/b", b"\x00p", "pübé")
    ]


async def test_session_with_all_its_contents_round_trips(db_path: Path) -> None:
    async with opened(db_path) as store:
        store.save_session("c", 5, 60, None)
        store.add_subscription("c", StoredSubscription("a/#", 1, True, False, 2, 7))
        store.add_subscription("c", StoredSubscription("$share/g/b", 2, False, True, 1, None))
        store.add_subscription("c", StoredSubscription("gone", 0))
        store.remove_subscription("c", "gone")
        store.save_message(10, _message(properties=PROPS))
        store.save_message(11, _message("u", b"other"))
        store.add_outbound("c", StoredOutbound(1, 10, 1, False, (3, 4)))
        store.add_outbound("c", StoredOutbound(2, 11, 2, True))
        store.add_outbound("c", StoredOutbound(3, 10, 2))
        store.set_outbound_state("c", 1, 5, OutboundState.PUBLISH_SENT)
        store.set_outbound_state("c", 2, 6, OutboundState.PUBREL_SENT)
        store.add_inbound_qos2("c", 9)
        store.add_inbound_qos2("c", 8)
        store.remove_inbound_qos2("c", 8)
        store.save_will("c", StoredWill(_message("will", b"bye", properties=PROPS), 123.0))
        store.save_session("c", 5, 120, 50.0, owner="alice")
    (session,) = (await _reload(db_path)).sessions
    assert session.owner == "alice"
    assert (session.client_id, session.protocol_level) == ("c", 5)
    assert (session.expiry_interval, session.disconnected_at) == (120, 50.0)
    assert sorted(session.subscriptions, key=lambda s: s.topic_filter) == [
        StoredSubscription("$share/g/b", 2, False, True, 1, None),
        StoredSubscription("a/#", 1, True, False, 2, 7),
    ]
    assert session.outbound == [
        StoredOutbound(1, 10, 1, False, (3, 4), 5, OutboundState.PUBLISH_SENT),
        StoredOutbound(2, 11, 2, True, (), 6, OutboundState.PUBREL_SENT),
        StoredOutbound(3, 10, 2),
    ]
    assert session.inbound_qos2 == {9}
    assert session.will == StoredWill(_message("will", b"bye", properties=PROPS), 123.0)


async def test_changes_in_later_transactions_update_and_delete_rows(db_path: Path) -> None:
    async with opened(db_path, commit_interval=0) as store:
        store.save_session("c", 4, 0xFFFFFFFF, None)
        store.save_message(1, _message())
        store.add_outbound("c", StoredOutbound(1, 1, 2))
        store.add_outbound("c", StoredOutbound(2, 1, 2))
        store.add_inbound_qos2("c", 4)
        store.save_will("c", StoredWill(_message("w"), 1.0))
        await store.flush()
        store.set_outbound_state("c", 1, 9, OutboundState.PUBLISH_SENT)
        store.remove_outbound("c", 2)
        store.remove_inbound_qos2("c", 4)
        store.delete_will("c")
        await store.flush()
        assert store.transactions == 2
    (session,) = (await _reload(db_path)).sessions
    assert session.outbound == [StoredOutbound(1, 1, 2, False, (), 9, OutboundState.PUBLISH_SENT)]
    assert (session.inbound_qos2, session.will) == (set(), None)


async def test_outbound_entries_load_in_seq_order_whatever_the_recording_order(
    db_path: Path,
) -> None:
    async with opened(db_path) as store:
        store.save_session("c", 4, 10, None)
        store.save_message(1, _message())
        for seq in (5, 3, 12, 1, 9):
            store.add_outbound("c", StoredOutbound(seq, 1, 1))
    (session,) = (await _reload(db_path)).sessions
    assert [o.seq for o in session.outbound] == [1, 3, 5, 9, 12]


async def test_after_load_restored_entries_are_updated_and_equal_strings_shared(
    db_path: Path,
) -> None:
    # `load` rebuilds what `open` read of each session's highest seq: the restored
    # entries must still be found for their acks (their changes written, not dropped).
    async with opened(db_path, commit_interval=0) as store:
        for client_id in ("a", "b"):
            store.save_session(client_id, 4, 0xFFFFFFFF, None)
            store.add_subscription(client_id, StoredSubscription("f/+/s", 1, False, False, 0))
        for mid in (1, 2):
            store.save_message(mid, _message())
        for seq in (1, 2):
            store.add_outbound("a", StoredOutbound(seq, seq, 1))
        store.add_outbound("b", StoredOutbound(1, 1, 1))
    async with opened(db_path, commit_interval=0) as store:
        state = await store.load()
        a, b = sorted(state.sessions, key=lambda s: s.client_id)
        assert a.subscriptions[0].topic_filter is b.subscriptions[0].topic_filter
        assert state.messages[1].origin is state.messages[2].origin
        store.set_outbound_state("a", 2, 7, OutboundState.PUBLISH_SENT)
        store.remove_outbound("b", 1)
        store.add_outbound("a", StoredOutbound(3, 1, 1))
    assert _rows(db_path, "SELECT client_id, seq, packet_id FROM outbound ORDER BY 1, 2") == [
        ("a", 1, None),
        ("a", 2, 7),
        ("a", 3, None),
    ]


async def test_a_message_is_stored_once_and_goes_with_its_last_reference(db_path: Path) -> None:
    async with opened(db_path, commit_interval=0) as store:
        for client_id in ("a", "b"):
            store.save_session(client_id, 4, 0xFFFFFFFF, None)
        store.save_message(1, _message())
        store.add_outbound("a", StoredOutbound(1, 1, 1))
        store.add_outbound("b", StoredOutbound(1, 1, 1))
        await store.flush()
        assert _rows(db_path, "SELECT id FROM messages") == [(1,)]
        store.remove_outbound("a", 1)
        await store.flush()
        assert _rows(db_path, "SELECT id FROM messages") == [(1,)]
        store.delete_session("b")
        await store.flush()
        assert _rows(db_path, "SELECT id FROM messages") == []
        assert _rows(db_path, "SELECT count(*) FROM outbound") == [(0,)]


async def test_delete_session_removes_everything_and_a_new_one_starts_empty(
    db_path: Path,
) -> None:
    async with opened(db_path, commit_interval=0) as store:
        store.save_session("c", 4, 10, None)
        store.add_subscription("c", StoredSubscription("old"))
        store.save_message(1, _message())
        store.add_outbound("c", StoredOutbound(1, 1, 1))
        store.add_inbound_qos2("c", 3)
        store.save_will("c", StoredWill(_message("w"), 1.0))
        await store.flush()
        # Deleted and created again in one transaction: the wipe comes first.
        store.delete_session("c")
        store.add_subscription("c", StoredSubscription("ignored: no session"))
        store.save_session("c", 5, 20, None)
        store.add_subscription("c", StoredSubscription("new"))
        store.save_message(2, _message())
        store.add_outbound("c", StoredOutbound(1, 2, 1))
    (session,) = (await _reload(db_path)).sessions
    assert (session.protocol_level, session.expiry_interval) == (5, 20)
    assert [s.topic_filter for s in session.subscriptions] == ["new"]
    assert [(o.seq, o.message_id) for o in session.outbound] == [(1, 2)]
    assert (session.inbound_qos2, session.will) == (set(), None)
    assert _rows(db_path, "SELECT id FROM messages") == [(2,)]


async def test_records_for_an_unknown_session_are_ignored(db_path: Path) -> None:
    async with opened(db_path) as store:
        store.add_subscription("ghost", StoredSubscription("t"))
        store.add_inbound_qos2("ghost", 1)
        store.save_will("ghost", StoredWill(_message(), 0.0))
        store.save_message(1, _message())
        store.add_outbound("ghost", StoredOutbound(1, 1, 1))
    state = await _reload(db_path)
    assert state.sessions == []
    assert _rows(db_path, "SELECT count(*) FROM subscriptions") == [(0,)]


async def test_load_drops_entries_whose_message_is_gone_and_unreferenced_messages(
    db_path: Path,
) -> None:
    async with opened(db_path) as store:
        store.save_session("c", 4, 10, None)
        store.save_message(1, _message())
        store.add_outbound("c", StoredOutbound(1, 1, 1))
    con = sqlite3.connect(db_path)
    with con:
        con.execute(
            "INSERT INTO messages (id, topic, payload, qos, retain) VALUES (7, 'x', '', 1, 0)"
        )
        con.execute(
            "INSERT INTO outbound (client_id, seq, message_id, qos, retain, state)"
            " VALUES ('c', 2, 99, 1, 0, 0)"
        )
    con.close()
    state = await _reload(db_path)
    assert [o.seq for o in state.sessions[0].outbound] == [1]
    assert list(state.messages) == [1]
    assert _rows(db_path, "SELECT seq FROM outbound") == [(1,)]
    assert _rows(db_path, "SELECT id FROM messages") == [(1,)]


# -- the same results as the reference MemoryStore, for random change sequences ------------


def _normalised(state: StoredState) -> object:
    referenced = {o.message_id for s in state.sessions for o in s.outbound}
    return (
        sorted((m.topic, m.payload, m.qos, m.retain, m.expiry_at) for m in state.retained),
        sorted(
            (
                s.client_id,
                s.protocol_level,
                s.expiry_interval,
                s.disconnected_at,
                s.owner,
                sorted((x.topic_filter, x.qos, x.subscription_identifier) for x in s.subscriptions),
                [(o.seq, o.message_id, o.qos, o.packet_id, o.state) for o in s.outbound],
                sorted(s.inbound_qos2),
                None if s.will is None else (s.will.publish_at, s.will.message.topic),
            )
            for s in state.sessions
        ),
        sorted((mid, m.payload) for mid, m in state.messages.items() if mid in referenced),
    )


@pytest.mark.parametrize("seed", range(8))
async def test_random_changes_load_back_as_the_memory_store_has_them(
    db_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    reference = MemoryStore()
    clients = ["a", "b", "c"]
    next_seq = dict.fromkeys(clients, 1)
    next_mid = 1
    store = SqliteStore(db_path, commit_interval=rng.choice([0.0, 0.001]), commit_batch=7)
    await store.open()
    try:
        for step in range(600):
            both: list[Store] = [reference, store]
            c = rng.choice(clients)
            op = rng.randrange(14)
            if op == 0:
                level, expiry, at = rng.choice([4, 5]), rng.randrange(100), rng.random()
                owner = rng.choice([None, "u"])
                for s in both:
                    s.save_session(c, level, expiry, at, owner)
            elif op == 1 and rng.random() < 0.3:
                for s in both:
                    s.delete_session(c)
                next_seq[c] = 1
            elif op == 2:
                sub = StoredSubscription(f"f{rng.randrange(4)}", rng.randrange(3))
                for s in both:
                    s.add_subscription(c, sub)
            elif op == 3:
                topic_filter = f"f{rng.randrange(4)}"
                for s in both:
                    s.remove_subscription(c, topic_filter)
            elif op in (4, 5, 6):
                # As the core does: a new message, or one an entry still refers to.
                live = [mid for mid, refs in reference._refs.items() if refs > 0]
                # Replacing an entry (with another message) goes beyond the core's use.
                replace = next_seq[c] > 1 and rng.random() < 0.1
                if live and not replace and rng.random() < 0.5:
                    mid = rng.choice(live)
                else:
                    mid, next_mid = next_mid, next_mid + 1
                    for s in both:
                        s.save_message(mid, _message(payload=str(mid).encode()))
                if replace:
                    seq = rng.randrange(1, next_seq[c])
                else:
                    seq = next_seq[c]
                    next_seq[c] += 1
                qos = rng.choice([1, 2])
                for s in both:
                    s.add_outbound(c, StoredOutbound(seq, mid, qos))
            elif op == 7:
                seq = rng.randrange(1, next_seq[c] + 2)
                state = rng.choice(list(OutboundState))
                packet_id = rng.randrange(1, 100)
                for s in both:
                    s.set_outbound_state(c, seq, packet_id, state)
            elif op in (8, 9):
                seq = rng.randrange(1, next_seq[c] + 1)
                for s in both:
                    s.remove_outbound(c, seq)
            elif op == 10:
                pid = rng.randrange(1, 5)
                add = rng.random() < 0.5
                for s in both:
                    if add:
                        s.add_inbound_qos2(c, pid)
                    else:
                        s.remove_inbound_qos2(c, pid)
            elif op == 11:
                save = rng.random() < 0.5
                for s in both:
                    if save:
                        s.save_will(c, StoredWill(_message(f"w{step}"), float(step)))
                    else:
                        s.delete_will(c)
            elif op == 12:
                topic = f"r{rng.randrange(5)}"
                save = rng.random() < 0.6
                for s in both:
                    if save:
                        s.save_retained(_message(topic, str(step).encode(), retain=True))
                    else:
                        s.delete_retained(topic)
            elif rng.random() < 0.3:
                await asyncio.sleep(rng.choice([0, 0.001, 0.002]))
            if step % 150 == 149:
                await store.close()  # reopened: checks what reached the file
                await store.open()
                assert _normalised(await store.load()) == _normalised(await reference.load())
        assert _normalised(await store.load()) == _normalised(await reference.load())
    finally:
        await store.close()
    assert _normalised(await _reload(db_path)) == _normalised(await reference.load())


# -- group commit and after_commit ----------------------------------------------------------


async def test_changes_recorded_together_share_one_transaction(db_path: Path) -> None:
    async with opened(db_path, commit_interval=0.05) as store:
        for i in range(100):
            store.save_retained(_message(f"t/{i}", retain=True))
        await store.flush()
        assert (store.transactions, store.batches) == (1, 1)


async def test_a_transaction_of_more_rows_than_one_statement_takes_writes_them_all(
    db_path: Path,
) -> None:
    # Rows go to SQLite 512 at a time (padded to a few sizes): 1300 crosses both.
    async with opened(db_path, commit_interval=0.05, commit_batch=100_000) as store:
        store.save_session("c", 4, 10, None)
        for i in range(1, 1301):
            store.save_retained(_message(f"t/{i}", retain=True))
            store.save_message(i, _message(payload=str(i).encode()))
            store.add_outbound("c", StoredOutbound(i, i, 1))
        await store.flush()
        assert store.transactions == 1
        for i in range(1, 1301, 2):
            store.delete_retained(f"t/{i}")
            store.remove_outbound("c", i)
        for i in range(2, 1301, 2):
            store.set_outbound_state("c", i, i % 65535, OutboundState.PUBLISH_SENT)
    state = await _reload(db_path)
    assert sorted(m.topic for m in state.retained) == sorted(f"t/{i}" for i in range(2, 1301, 2))
    (session,) = state.sessions
    assert [(o.seq, o.packet_id) for o in session.outbound] == [
        (i, i % 65535) for i in range(2, 1301, 2)
    ]
    assert sorted(state.messages) == list(range(2, 1301, 2))


async def test_commit_batch_caps_the_changes_of_one_transaction(db_path: Path) -> None:
    async with opened(db_path, commit_interval=10.0, commit_batch=10) as store:
        ran: list[int] = []
        for i in range(100):
            store.save_retained(_message(f"t/{i}", retain=True))
            store.after_commit(lambda i=i: ran.append(i))  # type: ignore[misc]
        await store.flush()
        assert store.transactions == 10
        assert ran == list(range(100))
    assert len((await _reload(db_path)).retained) == 100


async def test_a_batch_closes_after_the_commit_interval(db_path: Path) -> None:
    async with opened(db_path, commit_interval=0.2) as store:
        store.save_retained(_message(retain=True))
        done = asyncio.Event()
        store.after_commit(done.set)
        await asyncio.sleep(0.1)
        assert not done.is_set()
        await asyncio.wait_for(done.wait(), 2)


async def test_callbacks_run_in_order_and_only_after_their_changes_are_on_disk(
    db_path: Path,
) -> None:
    seen: list[tuple[int, list[tuple[object, ...]]]] = []
    async with opened(db_path, commit_interval=0.001) as store:
        for i in range(5):
            store.save_retained(_message(f"t/{i}", retain=True))
            store.after_commit(
                lambda i=i: seen.append(  # type: ignore[misc]
                    (i, _rows(db_path, f"SELECT topic FROM retained WHERE topic = 't/{i}'"))
                )
            )
            assert len(seen) == 0 or seen[-1][0] < i  # never at once
            await asyncio.sleep(0.002 * (i % 2))
        await store.flush()
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4]
    assert all(rows == [(f"t/{i}",)] for i, rows in seen)


async def test_a_callback_with_nothing_pending_runs_at_once(db_path: Path) -> None:
    async with opened(db_path) as store:
        ran: list[int] = []
        store.after_commit(lambda: ran.append(1))
        assert ran == [1]


async def test_a_callback_given_while_a_commit_runs_waits_for_that_commit(
    db_path: Path,
) -> None:
    async with opened(db_path, commit_interval=0) as store:
        order: list[str] = []
        store.save_retained(_message(retain=True))
        store.after_commit(lambda: order.append("first"))
        await asyncio.sleep(0)  # the writer takes the batch
        store.after_commit(lambda: order.append("second"))  # nothing new recorded
        assert order == []
        await store.flush()
        assert order == ["first", "second"]


async def test_an_outbound_entry_added_and_removed_in_one_batch_leaves_no_trace(
    db_path: Path,
) -> None:
    async with opened(db_path, commit_interval=0.05) as store:
        store.save_session("c", 4, 10, None)
        await store.flush()
        before = store.transactions
        # A persistent subscriber acknowledging within the commit interval.
        for seq in range(1, 51):
            store.save_message(seq, _message())
            store.add_outbound("c", StoredOutbound(seq, seq, 1))
            store.set_outbound_state("c", seq, seq, OutboundState.PUBLISH_SENT)
            store.remove_outbound("c", seq)
        ran: list[int] = []
        store.after_commit(lambda: ran.append(1))
        await store.flush()
        assert ran == [1]
        assert store.transactions == before  # nothing was left to write
    assert _rows(db_path, "SELECT count(*) FROM messages") == [(0,)]
    assert _rows(db_path, "SELECT count(*) FROM outbound") == [(0,)]


async def test_removing_an_entry_committed_earlier_is_not_folded_away(db_path: Path) -> None:
    async with opened(db_path, commit_interval=0.05) as store:
        store.save_session("c", 4, 10, None)
        store.save_message(1, _message())
        store.add_outbound("c", StoredOutbound(1, 1, 1))
        await store.flush()
        # Replaced (same seq: not fresh) then removed in one batch: the row must go.
        store.add_outbound("c", StoredOutbound(1, 1, 2))
        store.remove_outbound("c", 1)
    assert _rows(db_path, "SELECT count(*) FROM outbound") == [(0,)]


async def test_a_session_created_and_deleted_in_one_batch_costs_no_transaction(
    db_path: Path,
) -> None:
    async with opened(db_path, commit_interval=0.05) as store:
        store.save_session("c", 4, 10, None)
        store.add_subscription("c", StoredSubscription("t"))
        store.delete_session("c")
        await store.flush()
        assert store.transactions == 0


async def test_fast_durability_runs_callbacks_at_once_and_still_commits(db_path: Path) -> None:
    async with opened(db_path, durability="fast", commit_interval=0.05) as store:
        assert _rows(db_path, "PRAGMA journal_mode") == [("wal",)]
        store.save_retained(_message(retain=True))
        ran: list[int] = []
        store.after_commit(lambda: ran.append(1))
        assert ran == [1]
        assert store.pending == 1
    assert len((await _reload(db_path)).retained) == 1


async def test_close_commits_what_is_pending_and_runs_its_callbacks(db_path: Path) -> None:
    store = SqliteStore(db_path, commit_interval=10.0)
    await store.open()
    store.save_retained(_message(retain=True))
    ran: list[int] = []
    store.after_commit(lambda: ran.append(1))
    await store.close()
    await store.close()  # idempotent
    assert ran == [1]
    assert len((await _reload(db_path)).retained) == 1


# -- refusals at open ------------------------------------------------------------------------


async def _refusal(path: Path) -> str:
    store = SqliteStore(path)
    with pytest.raises(DatabaseUnusable) as info:
        await store.open()
    assert not store.is_open
    message = str(info.value)
    assert str(path) in message
    assert isinstance(info.value, sqlite3.Error)  # App.start reports it as a StartupError
    return message


async def test_a_second_store_on_the_same_file_is_refused_while_the_first_runs(
    db_path: Path,
) -> None:
    async with opened(db_path):
        message = await _refusal(db_path)
        assert "in use by another process" in message
    async with opened(db_path):
        pass  # free again once the first closed


async def test_a_file_that_is_not_a_database_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir()
    db_path.write_bytes(b"this is not a database, " * 200)
    message = await _refusal(db_path)
    assert "damaged or is not a SQLite database" in message
    assert "move it aside" in message


async def test_a_damaged_database_fails_the_integrity_check(db_path: Path) -> None:
    async with opened(db_path) as store:
        for i in range(2000):
            store.save_retained(_message(f"topic/{i:05}", b"x" * 200, retain=True))
    size = db_path.stat().st_size
    with open(db_path, "r+b") as f:
        # Garbage over the middle pages (page 1, the header, stays intact).
        f.seek(4096 * 3)
        f.write(os.urandom(min(4096 * 8, size - 4096 * 3)))
    message = await _refusal(db_path)
    assert "damaged" in message


async def test_the_integrity_check_beside_the_load_refuses_before_anything_is_written(
    db_path: Path,
) -> None:
    # A file that opens and reads fine but fails `PRAGMA quick_check` (a damaged index
    # the load does not use): `open` only starts the check, `load` and `retained_rows`
    # give its verdict before they return, and nothing recorded meanwhile is written.
    async with opened(db_path) as store:
        for i in range(300):
            store.save_retained(_message(f"topic/{i:05}", b"x" * 50, retain=True))
    damage_index(db_path)
    store = SqliteStore(db_path)
    await store.open()
    try:
        store.save_session("written-never", 4, 60, None)  # a table the damage spares
        with pytest.raises(DatabaseUnusable) as info:
            await store.load()
        assert "integrity check failed" in str(info.value) and str(db_path) in str(info.value)
        with pytest.raises(DatabaseUnusable):
            async for _ in store.retained_rows():
                pass
        with pytest.raises(DatabaseUnusable):
            await store.flush()
    finally:
        await store.close()
    con = sqlite3.connect(db_path)
    try:
        assert con.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
    finally:
        con.close()


async def test_a_sound_file_loads_while_its_check_runs_beside(db_path: Path) -> None:
    # The check's own connection and thread leave the store's working as before.
    async with opened(db_path) as store:
        store.save_retained(_message("a/b", retain=True))
    store = SqliteStore(db_path)
    await store.open()
    try:
        assert store._check is not None  # started by open, not awaited by it
        store.save_retained(_message("a/c", retain=True))
        state = await store.load()
        assert store._check is None
        assert sorted(m.topic for m in state.retained) == ["a/b", "a/c"]
    finally:
        await store.close()
    assert sorted(m.topic for m in (await _reload(db_path)).retained) == ["a/b", "a/c"]


async def test_a_database_of_a_newer_mqttd_is_refused_naming_both_versions(
    db_path: Path,
) -> None:
    async with opened(db_path):
        pass
    con = sqlite3.connect(db_path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 3}")
    con.commit()
    con.close()
    message = await _refusal(db_path)
    assert f"schema version {SCHEMA_VERSION + 3}" in message
    assert f"up to {SCHEMA_VERSION}" in message


async def test_another_applications_database_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir()
    con = sqlite3.connect(db_path)
    con.execute("CREATE TABLE mine (x)")
    con.commit()
    con.close()
    assert "not mqttd's" in await _refusal(db_path)


# How mqttd read a version 1 file's packed rows (SQLite made the record): a migrated
# file must load the same bytes.
_V1_ORIGIN_BYTES = "length(CAST(coalesce(origin, '') AS BLOB))"
_V1_PACKED = (
    "SELECT topic, CAST(char("
    "(qos & 3) | ((retain != 0) << 2) | ((origin IS NOT NULL) << 3), "
    f"{_V1_ORIGIN_BYTES} >> 14, ({_V1_ORIGIN_BYTES} >> 7) & 127, {_V1_ORIGIN_BYTES} & 127"
    ") || coalesce(origin, '') || payload AS BLOB) FROM retained"
    " WHERE properties IS NULL AND expiry_at IS NULL"
)


def _version_1_file(path: Path, encoding: str = "UTF-8") -> list[StoredMessage]:
    """A file as mqttd wrote it at schema version 1, with retained rows of every shape
    (and a session); the retained messages it holds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    messages = [
        StoredMessage(f"t/{i}", payload, qos, retain, None, None, origin)
        for i, (origin, payload, qos, retain) in enumerate(_PACKED_CASES)
    ]
    messages += [
        StoredMessage("w/props", bytes(range(255, -1, -1)), 1, True, PROPS, None, "o"),
        StoredMessage("w/expiry", b"\x00\x00", 0, False, None, 99.5, None),
        StoredMessage("w/both", b"\xc3\x28", 2, True, PROPS, 12.25, "é" * 64),
    ]
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA encoding = '{encoding}'")
    for statement in sqlite_module._SCHEMA_V1:
        con.execute(statement)
    con.execute(f"PRAGMA application_id = {sqlite_module.APPLICATION_ID}")
    con.execute("PRAGMA user_version = 1")
    con.executemany(
        "INSERT INTO retained (topic, payload, qos, retain, properties, expiry_at, origin)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                m.topic,
                m.payload,
                m.qos,
                int(m.retain),
                sqlite_module._encode_properties(m.properties),
                m.expiry_at,
                m.origin,
            )
            for m in messages
        ],
    )
    con.execute(
        "INSERT INTO sessions (client_id, protocol_level, expiry_interval, disconnected_at)"
        " VALUES ('c', 4, 60, 1.5)"
    )
    con.execute("INSERT INTO subscriptions VALUES ('c', 'a/#', 1, 0, 0, 0, NULL)")
    con.commit()
    con.close()
    return messages


@pytest.mark.parametrize("encoding", ["UTF-8", "UTF-16le"])
async def test_a_version_1_file_is_migrated_to_records_that_load_the_same(
    db_path: Path, encoding: str
) -> None:
    messages = _version_1_file(db_path, encoding)
    before = {row[0]: row[1] for row in _rows(db_path, _V1_PACKED)} if encoding == "UTF-8" else None
    async with opened(db_path) as store:
        chunks = [rows async for rows in store.retained_rows(chunk=4)]
        state = await store.load()
    assert _rows(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)] == [(2,)]
    columns = [row[1] for row in _rows(db_path, "PRAGMA table_info(retained)")]
    assert columns == ["topic", "expiry_at", "properties", "record"]
    assert _rows(db_path, "SELECT name FROM sqlite_master WHERE name LIKE 'retained_v1%'") == []
    rows = [row for rows in chunks for row in rows]
    packed = {row[0]: row[1] for row in rows if len(row) == 2}
    expected = {m.topic: pack_retained(m.qos, m.retain, m.origin, m.payload) for m in messages[:-3]}
    assert packed == expected
    if before is not None:
        assert packed == before  # what version 1's start made of the same rows
    whole = sorted((row for row in rows if len(row) == 7), key=lambda row: row[0])
    assert whole == sorted(
        (m.topic, m.payload, m.qos, int(m.retain), m.properties, m.expiry_at, m.origin)
        for m in messages[-3:]
    )
    key = lambda m: m.topic  # noqa: E731
    assert sorted(state.retained, key=key) == sorted(messages, key=key)
    assert [(s.client_id, [f.topic_filter for f in s.subscriptions]) for s in state.sessions] == [
        ("c", ["a/#"])
    ]
    # And it goes on: replaced, deleted and added messages after the migration.
    async with opened(db_path) as store:
        store.save_retained(StoredMessage("t/0", b"new", 1, True, None, None, "p"))
        store.delete_retained("w/props")
        store.save_retained(StoredMessage("n", b"\x00", 0, True, None, 5.0, None))
    reloaded = {m.topic: m for m in (await _reload(db_path)).retained}
    assert len(reloaded) == len(messages)
    assert reloaded["t/0"] == StoredMessage("t/0", b"new", 1, True, None, None, "p")
    assert reloaded["n"] == StoredMessage("n", b"\x00", 0, True, None, 5.0, None)
    assert "w/props" not in reloaded


async def test_a_failed_migration_leaves_the_version_1_file_as_it_was(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _version_1_file(db_path)
    before = _rows(db_path, "SELECT * FROM retained ORDER BY topic")

    def broken(qos: int, retain: int, origin: str | None, payload: bytes) -> bytes:
        raise ValueError("no")

    monkeypatch.setattr(sqlite_module, "_pack_v1", broken)
    with pytest.raises(DatabaseUnusable):
        async with opened(db_path):
            pass
    assert _rows(db_path, "PRAGMA user_version") == [(1,)]
    assert _rows(db_path, "SELECT * FROM retained ORDER BY topic") == before


async def test_migrations_run_forward_from_the_version_on_file(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(db_path) as store:
        store.save_retained(_message(retain=True))

    async def add_column(db: object) -> None:
        await db.execute("ALTER TABLE retained ADD COLUMN note TEXT")  # type: ignore[attr-defined]

    monkeypatch.setattr(sqlite_module, "MIGRATIONS", (*sqlite_module.MIGRATIONS, add_column))
    monkeypatch.setattr(sqlite_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    state = await _reload(db_path)
    assert len(state.retained) == 1
    assert _rows(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]
    assert "note" in [row[1] for row in _rows(db_path, "PRAGMA table_info(retained)")]


async def test_a_read_only_file_is_refused(db_path: Path) -> None:
    async with opened(db_path):
        pass
    with read_only(db_path):
        message = await _refusal(db_path)
    assert "read-only" in message and "writable" in message


async def test_a_read_only_directory_is_refused(db_path: Path) -> None:
    async with opened(db_path):
        pass
    with read_only(db_path.parent):
        assert "read-only" in await _refusal(db_path)
        new = db_path.parent / "new.db"
        assert "read-only" in await _refusal(new)


# -- the disk fills up at run time ------------------------------------------------------------


async def test_a_full_disk_holds_callbacks_back_logs_once_and_recovers(
    db_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "RETRY_MAX", 0.05)
    caplog.set_level(logging.INFO, logger="mqttd.store")
    async with opened(db_path, commit_interval=0) as store:
        db = store._db
        assert db is not None
        ((pages,),) = await db.execute_fetchall("PRAGMA page_count")
        await db.execute(f"PRAGMA max_page_count = {pages}")  # no room to grow
        store.save_retained(_message("big", b"x" * 200_000, retain=True))
        ran: list[str] = []
        store.after_commit(lambda: ran.append("ack"))
        await asyncio.sleep(0.5)  # several retries
        assert ran == []
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert str(db_path) in errors[0].getMessage()
        assert "full" in errors[0].getMessage()
        # Later changes queue up behind the failing one, their callbacks too.
        store.save_retained(_message("small", retain=True))
        store.after_commit(lambda: ran.append("ack2"))
        await db.execute("PRAGMA max_page_count = 1073741823")  # space again
        for _ in range(100):
            if len(ran) == 2:
                break
            await asyncio.sleep(0.02)
        assert ran == ["ack", "ack2"]
        assert any("works again" in r.getMessage() for r in caplog.records)
    topics = sorted(m.topic for m in (await _reload(db_path)).retained)
    assert topics == ["big", "small"]


async def test_close_gives_up_on_a_disk_that_stays_full(
    db_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "CLOSE_FLUSH_TIMEOUT", 0.3)
    store = SqliteStore(db_path, commit_interval=0)
    await store.open()
    db = store._db
    assert db is not None
    ((pages,),) = await db.execute_fetchall("PRAGMA page_count")
    await db.execute(f"PRAGMA max_page_count = {pages}")
    store.save_retained(_message("big", b"x" * 200_000, retain=True))
    ran: list[int] = []
    store.after_commit(lambda: ran.append(1))
    await store.close()
    assert ran == []
    assert not store.is_open
    assert any("could not be written" in r.getMessage() for r in caplog.records)
    assert (await _reload(db_path)).retained == []


# -- with the broker core -----------------------------------------------------------------------


async def test_a_broker_restart_on_the_file_restores_sessions_queues_and_retained(
    db_path: Path,
) -> None:
    from support.core import Harness

    clock = FakeClock()
    store = SqliteStore(db_path, commit_interval=0)
    first = Harness(store=store, clock=clock)
    await first.broker.start()
    sub = first.connected("sub", clean_start=False)
    sub.subscribe("t", qos=2)
    sub.disconnect()
    pub = first.connected("pub")
    pub.publish("keep", b"r", qos=1, retain=True, packet_id=1)
    pub.publish("t", b"one", qos=1, packet_id=2)
    assert pub.packets() == []  # the PUBACKs wait for the commit
    await store.flush()
    assert pub.packets() == [PubAck(1), PubAck(2)]
    await first.broker.stop()

    store = SqliteStore(db_path, commit_interval=0)
    second = Harness(store=store, clock=clock)
    await second.broker.start()
    try:
        assert second.broker.retained.get("keep") is not None
        back = second.client(4)
        assert back.connect("sub", clean_start=False).session_present
        assert [p.payload for p in back.publishes()] == [b"one"]
    finally:
        await second.broker.stop()


async def test_retained_messages_packed_and_whole_come_back_after_a_restart(
    db_path: Path,
) -> None:
    from support.core import Harness

    clock = FakeClock()
    user = Properties(user_property=(("k", "v"),))
    store = SqliteStore(db_path, commit_interval=0)
    first = Harness(store=store, clock=clock)
    await first.broker.start()
    pub = first.client(5)
    pub.connect("pub\u00e9")
    pub.publish("r/plain", b"\x00\xffp", qos=1, retain=True, packet_id=1)
    pub.publish("r/props", b"q", qos=2, retain=True, packet_id=2, properties=user)
    await store.flush()
    await first.broker.stop()

    second = Harness(store=SqliteStore(db_path, commit_interval=0), clock=clock)
    await second.broker.start()
    try:
        plain = second.broker.retained.get("r/plain")
        props = second.broker.retained.get("r/props")
        assert plain is not None and props is not None
        assert (plain.payload, plain.qos, plain.origin, plain.properties) == (
            b"\x00\xffp",
            1,
            "pub\u00e9",
            None,
        )
        assert (props.payload, props.qos, props.origin, props.properties) == (
            b"q",
            2,
            "pub\u00e9",
            user,
        )
    finally:
        await second.broker.stop()


async def test_a_batch_only_patient_callbacks_wait_for_stays_open_until_an_urgent_one(
    db_path: Path,
) -> None:
    async with opened(db_path, commit_interval=0.1) as store:  # patient: 1 s
        store.save_retained(_message(retain=True))
        patient = asyncio.Event()
        store.after_commit(patient.set, patient=True)
        await asyncio.sleep(0.3)  # three commit intervals
        assert not patient.is_set()
        urgent = asyncio.Event()
        started = asyncio.get_running_loop().time()
        store.after_commit(urgent.set)  # due at once: its interval is over
        await asyncio.wait_for(urgent.wait(), 2)
        assert patient.is_set()  # the same batch, in order
        assert asyncio.get_running_loop().time() - started < 0.6


async def test_a_patient_batch_commits_by_the_patient_interval(db_path: Path) -> None:
    async with opened(db_path, commit_interval=0.01) as store:  # patient: 0.1 s
        assert store.patient_interval == pytest.approx(0.1)
        store.save_retained(_message(retain=True))
        done = asyncio.Event()
        store.after_commit(done.set, patient=True)
        await asyncio.wait_for(done.wait(), 2)
    assert len((await _reload(db_path)).retained) == 1


async def test_messages_folded_away_do_not_count_toward_commit_batch(db_path: Path) -> None:
    async with opened(db_path, commit_interval=10.0, commit_batch=10) as store:
        store.save_session("c", 4, 10, None)
        for i in range(1, 51):  # acknowledged within the batch: no row at all
            store.save_message(i, _message(payload=str(i).encode()))
            store.add_outbound("c", StoredOutbound(i, i, 1))
            store.remove_outbound("c", i)
        store.save_message(51, _message(payload=b"kept"))
        store.add_outbound("c", StoredOutbound(51, 51, 1))
        await store.flush()
        assert (store.batches, store.transactions) == (1, 1)
    state = await _reload(db_path)
    assert [o.seq for o in state.sessions[0].outbound] == [51]
    assert sorted(state.messages) == [51]


async def test_transactions_without_aiosqlite_execute_go_statement_by_statement(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(db_path) as store:
        db = store._db
        assert db is not None
        # An aiosqlite without its private `_execute`: the fallback path.
        monkeypatch.setattr(sqlite_module, "_one_call", lambda db: None)
        store.save_session("c", 4, 10, None)
        store.save_message(1, _message())
        store.add_outbound("c", StoredOutbound(1, 1, 1))
        store.save_retained(_message("r", retain=True))
        await store.flush()
        assert store.transactions == 1
        insert = ("INSERT INTO retained (topic, record) VALUES (?, ?)",)
        with pytest.raises(sqlite3.OperationalError):
            await store._transaction([(*insert, ("gone", b"x"), False), ("NOT SQL", (), False)])
        assert not db.in_transaction  # rolled back, "gone" with it
    state = await _reload(db_path)
    assert [m.topic for m in state.retained] == ["r"]
    assert [o.seq for o in state.sessions[0].outbound] == [1]


# The reference counting of messages saved in a batch (`_Batch.live`): a message row is
# written only if some reference to it survives the batch, or if it was saved and not
# yet referred to; `batch.changes` counts the row again when a reference comes back.


async def test_a_message_acknowledged_within_its_batch_is_not_written(db_path: Path) -> None:
    async with opened(db_path, commit_interval=10.0) as store:
        for client_id in ("a", "b"):
            store.save_session(client_id, 4, 10, None)
        await store.flush()
        store.save_message(1, _message())
        store.add_outbound("a", StoredOutbound(1, 1, 1))
        store.add_outbound("b", StoredOutbound(1, 1, 1))
        store.remove_outbound("a", 1)
        store.remove_outbound("b", 1)
        batch = store._open_batch
        assert batch is not None and batch.changes == 0  # nothing left to write
        await store.flush()
    assert _rows(db_path, "SELECT count(*) FROM messages") == [(0,)]
    assert _rows(db_path, "SELECT count(*) FROM outbound") == [(0,)]


async def test_a_message_one_reference_of_the_batch_still_holds_is_written(
    db_path: Path,
) -> None:
    async with opened(db_path, commit_interval=10.0) as store:
        for client_id in ("a", "b"):
            store.save_session(client_id, 4, 10, None)
        await store.flush()
        store.save_message(1, _message(payload=b"kept"))
        store.add_outbound("a", StoredOutbound(1, 1, 1))
        store.add_outbound("b", StoredOutbound(1, 1, 1))
        store.remove_outbound("a", 1)
        batch = store._open_batch
        # The message and b's entry: a's entry folded away, the message did not.
        assert batch is not None and batch.changes == 2
        await store.flush()
    state = await _reload(db_path)
    assert [(s.client_id, [o.seq for o in s.outbound]) for s in state.sessions] == [
        ("a", []),
        ("b", [1]),
    ]
    assert [m.payload for m in state.messages.values()] == [b"kept"]


async def test_a_message_referred_to_again_after_its_references_folded_is_written(
    db_path: Path,
) -> None:
    async with opened(db_path, commit_interval=10.0) as store:
        store.save_session("c", 4, 10, None)
        await store.flush()
        store.save_message(1, _message(payload=b"again"))
        store.add_outbound("c", StoredOutbound(1, 1, 1))
        store.remove_outbound("c", 1)  # its last reference folds: no row needed...
        batch = store._open_batch
        assert batch is not None and batch.changes == 0
        store.add_outbound("c", StoredOutbound(2, 1, 1))  # ... until one comes back
        assert batch.changes == 2  # the entry and the message row again
        await store.flush()
    state = await _reload(db_path)
    assert [o.seq for o in state.sessions[0].outbound] == [2]
    assert [m.payload for m in state.messages.values()] == [b"again"]


async def test_a_message_saved_before_its_batch_closed_is_written_unreferenced(
    db_path: Path,
) -> None:
    async with opened(db_path, commit_interval=10.0) as store:
        store.save_session("c", 4, 10, None)
        await store.flush()
        store.save_message(1, _message(payload=b"early"))
        await store.flush()  # the batch closed between save_message and add_outbound
        assert _rows(db_path, "SELECT id FROM messages") == [(1,)]
        store.add_outbound("c", StoredOutbound(1, 1, 1))
        store.remove_outbound("c", 1)
        await store.flush()
    # Its reference folded in the next batch, which did not save it: the row stays
    # until a load drops it as unreferenced.
    assert _rows(db_path, "SELECT count(*) FROM outbound") == [(0,)]
    assert _rows(db_path, "SELECT id FROM messages") == [(1,)]
