"""The SQLite store: one database file, WAL, one writer, group commit.

Theory of operation. The core records changes through the `Store` mutation methods
(base.py); they run on the event loop, never wait, and only fold the change into the
*open batch*: a net-effect diff keyed the way the tables are (retained topic, client id,
(client id, seq), ...), so a later change of the same key replaces an earlier one.
The writer task takes the open batch once `commit_interval` has passed since its first
change and the writer is free (a batch that reaches `commit_batch` changes closes at
once), turns it into ONE transaction (a few statements of up to 512 rows each, on
aiosqlite's thread), and after the COMMIT runs, on the event loop and in order, the
`after_commit` callbacks registered while that batch was open (or, when none was open,
on the last batch not yet committed). Everything recorded before a callback is
therefore durable when it runs. While the writer is busy with one transaction the next
batch keeps filling: the slower the disk, the bigger the batches (group commit). A batch
that only *patient* callbacks wait for (`after_commit(..., patient=True)`: publishers'
PUBACKs that their receivers' PUBACKs may release first) stays open up to
`patient_interval` (`PATIENT_COMMITS` intervals), so that its messages fold away.

Coalescing. Only what is provably equivalent is folded away:
- an outbound entry added and removed in the same batch leaves no trace, *if* the add
  was fresh: its seq is above every seq ever recorded for the session since its last
  delete (seq grows per session, base.py), so no row for it existed before;
- a message saved in a batch whose every reference was folded away is not written;
- a session created and deleted in the same batch leaves nothing; a session deleted in
  a batch wipes its rows first, then whatever the batch recorded after the delete is
  applied.
A transaction's result depends only on each key's last change, so the statements of one
batch run grouped by table, not in arrival order.

Messages are stored once (`messages`) and referenced by `outbound` rows; a transaction
that drops references ends by deleting the messages left without any (base.py: "the
store forgets a message when no outbound entry refers to it any more"). Records for a
session the store does not know are ignored, as `MemoryStore` does; the known client
ids and each session's highest seq are kept in memory (read at `open`).

Durability (`durability`):
- "safe" (default): ``synchronous=FULL``: each COMMIT is fsynced before its callbacks
  run, so an acknowledged message survives a crash of mqttd, of the OS, or a power cut.
- "fast": callbacks run at once (acknowledgements do not wait), commits are still
  batched, ``synchronous=NORMAL``. Risk: a crash of mqttd loses what was acknowledged
  since the last COMMIT (a few `commit_interval`s at most); an OS crash or power cut may
  also lose commits since the last WAL checkpoint (WAL+NORMAL does not fsync at COMMIT;
  the file stays consistent, the newest transactions are rolled back).

Failures. `open` refuses, with one `DatabaseUnusable` naming the file and what to do, a
file locked by another process (an exclusive ``flock`` on the database file for the life
of the store), one that is not a database or fails ``PRAGMA quick_check``, one written
by a newer mqttd (schema versions in ``PRAGMA user_version``), and a read-only file or
directory. The ``quick_check`` of a file that needs no migration runs beside the load
instead (a second connection, in a thread: 0.3 s of a big start): `open` starts it,
`load` and `retained_rows` raise its `DatabaseUnusable` before they return, and the
writer commits nothing before it passed, so a damaged file is still refused before a
broker is ready and is never written to (beyond `open`'s own test of writing).

At run time a COMMIT that fails (disk full: SQLITE_FULL, an I/O error) is rolled back
and retried with backoff; the batch's callbacks do not run until it commits, so no
QoS 1/2 acknowledgement for unwritten data goes out. One error line when the trouble
starts, one line when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Final, cast

import aiosqlite

from ..protocol.datatypes import Cursor
from ..protocol.properties import Properties, PropertyContext
from ..protocol.property_codec import decode_properties, encode_properties
from .base import (
    OutboundState,
    RetainedRow,
    StoredMessage,
    StoredOutbound,
    StoredSession,
    StoredState,
    StoredSubscription,
    StoredWill,
    pack_retained,
    unpack_retained,
)
from .stats import StoreStats

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "DatabaseUnusable",
    "SqliteStore",
]

logger = logging.getLogger("mqttd.store")

#: ``PRAGMA application_id`` of an mqttd database ("mqtd").
APPLICATION_ID: Final = 0x6D717464

# SQLite primary result codes (https://www.sqlite.org/rescode.html).
_SQLITE_PERM = 3
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_AUTH = 23
_SQLITE_NOTADB = 26

_PUBLISH = int(PropertyContext.PUBLISH)

# Retry of a failing COMMIT: first wait, then doubling up to the last.
RETRY_FIRST = 0.05
RETRY_MAX = 2.0
#: A batch that only patient `after_commit` callbacks wait for stays open up to this many
#: `commit_interval`s (docs/benchmarks.md, "Durable QoS 1": 10 measured best).
PATIENT_COMMITS = 10
#: How long `close` keeps retrying a failing COMMIT before giving the changes up.
CLOSE_FLUSH_TIMEOUT = 3.0


class DatabaseUnusable(sqlite3.DatabaseError):
    """The database file cannot be used; the message names it and says what to do.

    A `sqlite3.DatabaseError`, so `App.start` reports it as a start-up failure.
    """


# -- schema and migrations -----------------------------------------------------------------

_SCHEMA_V1: Final = (
    # Payload-bearing tables keep a rowid (large rows); the small ones are clustered on
    # their key (WITHOUT ROWID), so a session's rows sit together: loading them and
    # deleting a whole session are range scans on the primary key.
    """CREATE TABLE retained (
        topic TEXT PRIMARY KEY NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        properties BLOB,
        expiry_at REAL,
        origin TEXT)""",
    """CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        properties BLOB,
        expiry_at REAL,
        origin TEXT)""",
    """CREATE TABLE sessions (
        client_id TEXT PRIMARY KEY NOT NULL,
        protocol_level INTEGER NOT NULL,
        expiry_interval INTEGER NOT NULL,
        disconnected_at REAL,
        owner TEXT) WITHOUT ROWID""",
    """CREATE TABLE subscriptions (
        client_id TEXT NOT NULL,
        topic_filter TEXT NOT NULL,
        qos INTEGER NOT NULL,
        no_local INTEGER NOT NULL,
        retain_as_published INTEGER NOT NULL,
        retain_handling INTEGER NOT NULL,
        subscription_identifier INTEGER,
        PRIMARY KEY (client_id, topic_filter)) WITHOUT ROWID""",
    """CREATE TABLE outbound (
        client_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        message_id INTEGER NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        subscription_ids TEXT,
        packet_id INTEGER,
        state INTEGER NOT NULL,
        PRIMARY KEY (client_id, seq)) WITHOUT ROWID""",
    # The reference count of a message is a probe of this index.
    "CREATE INDEX outbound_by_message ON outbound (message_id)",
    """CREATE TABLE inbound_qos2 (
        client_id TEXT NOT NULL,
        packet_id INTEGER NOT NULL,
        PRIMARY KEY (client_id, packet_id)) WITHOUT ROWID""",
    """CREATE TABLE wills (
        client_id TEXT PRIMARY KEY NOT NULL,
        publish_at REAL NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        properties BLOB,
        expiry_at REAL,
        origin TEXT)""",
)

# Per connection (TEMP): every message id an outbound row stops referring to is noted,
# and `_COLLECT_RELEASED` deletes the ones nothing refers to at the END of the
# transaction. Not at once: a batch wipes a session before it inserts the rows of others,
# which may refer to the same message.
_RELEASE_TRACKING: Final = (
    "PRAGMA temp_store = MEMORY",
    # No key: an OR IGNORE in a trigger yields to the conflict clause of the statement
    # that fired it (an upsert's ABORT). Duplicates are harmless.
    "CREATE TEMP TABLE IF NOT EXISTS released (id INTEGER)",
    """CREATE TEMP TRIGGER IF NOT EXISTS outbound_release AFTER DELETE ON main.outbound
        BEGIN INSERT INTO released VALUES (OLD.message_id); END""",
    """CREATE TEMP TRIGGER IF NOT EXISTS outbound_repoint AFTER UPDATE OF message_id
        ON main.outbound WHEN OLD.message_id != NEW.message_id
        BEGIN INSERT INTO released VALUES (OLD.message_id); END""",
)
_COLLECT_RELEASED: Final[tuple[tuple[str, Sequence[Any], bool], ...]] = (
    (
        "DELETE FROM messages WHERE id IN (SELECT id FROM released)"
        " AND NOT EXISTS (SELECT 1 FROM outbound WHERE message_id = messages.id)",
        (),
        False,
    ),
    ("DELETE FROM released", (), False),
)


async def _migrate_to_v1(db: aiosqlite.Connection) -> None:
    """Version 1: the first schema."""
    for statement in _SCHEMA_V1:
        await db.execute(statement)
    await db.execute(f"PRAGMA application_id = {APPLICATION_ID}")


# Version 2 keeps a retained message as its broker's record (`base.pack_retained`: flags,
# origin and payload in one blob), so the start reads the record as it is instead of
# having SQLite build it per row (docs/benchmarks.md, start-up, eighth round). The
# record is the only copy of the payload; properties and expiry stay columns of their
# own (a message with either comes whole to the broker). The small columns come before
# the record: the start's WHERE on them then never reads a large record's overflow pages.
_RETAINED_V2: Final = """CREATE TABLE retained (
        topic TEXT PRIMARY KEY NOT NULL,
        expiry_at REAL,
        properties BLOB,
        record BLOB NOT NULL)"""


def _pack_v1(qos: int, retain: int, origin: str | None, payload: bytes) -> bytes:
    return pack_retained(qos, retain != 0, origin, payload)


async def _migrate_to_v2(db: aiosqlite.Connection) -> None:
    """Version 2: the retained table holds each message's packed record."""
    # Packed by the writer's own function, not by SQL (char() and ||): the same bytes by
    # construction, in a file of any text encoding. One rewrite of the table, once: 4 s
    # for a million messages with the check before it (docs/benchmarks.md, eighth round).
    await db.create_function("mqttd_pack_retained", 4, _pack_v1, deterministic=True)
    await db.execute("ALTER TABLE retained RENAME TO retained_v1")
    await db.execute(_RETAINED_V2)
    await db.execute(
        "INSERT INTO retained (topic, expiry_at, properties, record) SELECT topic, expiry_at,"
        " properties, mqttd_pack_retained(qos, retain, origin, payload) FROM retained_v1"
    )
    await db.execute("DROP TABLE retained_v1")


#: MIGRATIONS[n] takes a database from schema version n to n + 1, inside one
#: transaction. Append only: a released migration never changes.
MIGRATIONS: Final[Sequence[Callable[[aiosqlite.Connection], Awaitable[None]]]] = (
    _migrate_to_v1,
    _migrate_to_v2,
)

#: The schema version this mqttd writes (``PRAGMA user_version``).
SCHEMA_VERSION: Final = len(MIGRATIONS)


# -- SQL of the writer -----------------------------------------------------------------------

_WIPE_SESSION = (
    # outbound first: its trigger releases messages the session alone referred to.
    "DELETE FROM outbound WHERE client_id = ?",
    "DELETE FROM subscriptions WHERE client_id = ?",
    "DELETE FROM inbound_qos2 WHERE client_id = ?",
    "DELETE FROM wills WHERE client_id = ?",
    "DELETE FROM sessions WHERE client_id = ?",
)
_UPSERT_SESSION = (
    "INSERT INTO sessions (client_id, protocol_level, expiry_interval, disconnected_at, owner)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (client_id) DO UPDATE SET"
    " protocol_level = excluded.protocol_level, expiry_interval = excluded.expiry_interval,"
    " disconnected_at = excluded.disconnected_at, owner = excluded.owner"
)
_DELETE_OUTBOUND = "DELETE FROM outbound WHERE client_id = ? AND seq = ?"


class _Multi:
    """One statement for many rows: `head` + "(?, ...), (?, ...), ..." + `tail`.

    Why not ``executemany``: it releases the GIL around each row's step and must take it
    back after, which waits while the event loop thread runs (up to the interpreter's
    5 ms switch interval): a batch of a few hundred rows took tens of milliseconds
    under load, and the PUBACKs waiting for it too. One statement for many rows switches
    once. Row counts are rounded up to a few sizes by repeating the last row (every
    statement here gives the same result for a row given twice), so the statement
    texts stay few and prepared in sqlite3's cache.
    """

    __slots__ = ("_sql", "head", "row", "tail")

    SIZES: Final = (1, 2, 4, 8, 16, *range(32, 513, 32))

    def __init__(self, head: str, width: int, tail: str = "") -> None:
        self.head = head
        self.row = "(" + ", ".join("?" * width) + ")"
        self.tail = tail
        self._sql: dict[int, str] = {}

    def plan(self, rows: Sequence[Sequence[Any]]) -> Iterator[tuple[str, list[Any], bool]]:
        """(sql, parameters, False) for each chunk of `rows`."""
        largest = self.SIZES[-1]
        for start in range(0, len(rows), largest):
            chunk = list(rows[start : start + largest])
            size = next(n for n in self.SIZES if n >= len(chunk))
            chunk.extend([chunk[-1]] * (size - len(chunk)))
            sql = self._sql.get(size)
            if sql is None:
                sql = self._sql[size] = self.head + ", ".join([self.row] * size) + self.tail
            yield sql, list(chain.from_iterable(chunk)), False


# Row-value IN over a subquery with the key's types: only this form searches the whole
# primary key (SQLite 3.40 scans the table for "(a, b) IN (VALUES ...)", and only the
# client's rows without the CASTs, which matters for a session with a long queue).
_KEYS_IN = " IN (SELECT CAST(column1 AS TEXT), CAST(column2 AS INTEGER) FROM (VALUES "
_M_UPSERT_RETAINED = _Multi(
    "INSERT INTO retained (topic, expiry_at, properties, record) VALUES ",
    4,
    " ON CONFLICT (topic) DO UPDATE SET expiry_at = excluded.expiry_at,"
    " properties = excluded.properties, record = excluded.record",
)
_M_DELETE_RETAINED = _Multi("DELETE FROM retained WHERE topic IN (", 1, ")")  # IN ((?), (?))
_M_INSERT_MESSAGE = _Multi(
    "INSERT OR REPLACE INTO messages"
    " (id, topic, payload, qos, retain, properties, expiry_at, origin) VALUES ",
    8,
)
_M_UPSERT_OUTBOUND = _Multi(
    "INSERT INTO outbound"
    " (client_id, seq, message_id, qos, retain, subscription_ids, packet_id, state) VALUES ",
    8,
    " ON CONFLICT (client_id, seq) DO UPDATE SET message_id = excluded.message_id,"
    " qos = excluded.qos, retain = excluded.retain,"
    " subscription_ids = excluded.subscription_ids, packet_id = excluded.packet_id,"
    " state = excluded.state",
)
_M_UPDATE_OUTBOUND = _Multi(
    "UPDATE outbound SET packet_id = v.column3, state = v.column4 FROM (VALUES ",
    4,
    ") AS v WHERE outbound.client_id = v.column1 AND outbound.seq = v.column2",
)
_M_DELETE_OUTBOUND = _Multi("DELETE FROM outbound WHERE (client_id, seq)" + _KEYS_IN, 2, "))")
_M_INSERT_INBOUND = _Multi("INSERT OR IGNORE INTO inbound_qos2 (client_id, packet_id) VALUES ", 2)
_M_DELETE_INBOUND = _Multi(
    "DELETE FROM inbound_qos2 WHERE (client_id, packet_id)" + _KEYS_IN, 2, "))"
)
_UPSERT_SUBSCRIPTION = (
    "INSERT INTO subscriptions (client_id, topic_filter, qos, no_local, retain_as_published,"
    " retain_handling, subscription_identifier) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (client_id, topic_filter) DO UPDATE SET qos = excluded.qos,"
    " no_local = excluded.no_local, retain_as_published = excluded.retain_as_published,"
    " retain_handling = excluded.retain_handling,"
    " subscription_identifier = excluded.subscription_identifier"
)
_DELETE_SUBSCRIPTION = "DELETE FROM subscriptions WHERE client_id = ? AND topic_filter = ?"
_UPSERT_WILL = (
    "INSERT OR REPLACE INTO wills (client_id, publish_at, topic, payload, qos, retain,"
    " properties, expiry_at, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_WILL = "DELETE FROM wills WHERE client_id = ?"


# -- the batch: the net effect of the changes recorded since it opened ------------------------

# A message row without its id: topic, payload, qos, retain, properties, expiry_at, origin.
_MessageRow = tuple[str, bytes, int, int, bytes | None, float | None, str | None]

_INSERT = 0
_UPDATE = 1
_DELETE = 2


# The pending change of one outbound row: (kind, fresh, message id, qos, retain,
# subscription ids text, packet id, state); `fresh`: no row with this key existed before
# this batch. A tuple, not an object: one is made for every QoS 1/2 message a persistent
# session gets, and a tuple costs a fraction of an __init__ with eight arguments.
_OutboundChange = tuple[int, bool, int, int, int, "str | None", "int | None", int]
_REMOVED: _OutboundChange = (_DELETE, False, 0, 0, 0, None, None, 0)
_UNSET: Any = object()  # a will that this batch did not touch


@dataclass(slots=True)
class _ClientChanges:
    """The pending changes of one client id's session rows."""

    wiped: bool = False  # delete every row of the session first
    created: bool = False  # the session did not exist when this batch opened (or was wiped)
    session: tuple[int, int, float | None, str | None] | None = None
    subscriptions: dict[str, tuple[int, int, int, int, int | None] | None] = field(
        default_factory=dict
    )
    outbound: dict[int, _OutboundChange] = field(default_factory=dict)
    inbound: dict[int, bool] = field(default_factory=dict)  # packet id -> add (True) / remove
    will: Any = _UNSET  # a will row, None (delete) or _UNSET


@dataclass(eq=False, slots=True)
class _Batch:
    """The changes of one transaction, and the callbacks waiting for its COMMIT."""

    changes: int = 0
    due: bool = False
    #: Someone waits for this commit and has no other way to go on (`after_commit`
    #: without `patient`): the batch is due at `commit_interval`, not `patient_interval`.
    urgent: bool = False
    #: The interval passed while no one urgent waited: due when someone urgent comes.
    deferred: bool = False
    opened_at: float = 0.0
    # Topic -> message (packed when the batch is written: once per topic and batch) or None.
    retained: dict[str, StoredMessage | None] = field(default_factory=dict)
    # The messages saved in this batch, by id. Turned into rows only if written: most
    # messages of a persistent session's QoS 1 traffic are acknowledged within the batch
    # and never are. Their bookkeeping is counts in a dict of ints, not an object or a
    # list per message: nothing the garbage collector tracks is made per message, so
    # fewer generation-0 collections run on the hot path (ninth round).
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    #: Message id (saved in this batch, then referred to by an outbound entry of it) ->
    #: its references not folded away (added and removed in the batch). An id absent
    #: here was never referred to in the batch (a message id is saved once).
    live: dict[int, int] = field(default_factory=dict)
    clients: dict[str, _ClientChanges] = field(default_factory=dict)
    extra: list[tuple[str, list[tuple[Any, ...]]]] = field(default_factory=list)
    callbacks: list[Callable[[], None]] = field(default_factory=list)

    def statements(self) -> list[tuple[str, Sequence[Any], bool]]:
        """The (SQL, parameters, executemany?) that apply this batch, wipes first."""
        wipes: list[tuple[Any, ...]] = []
        sessions: list[tuple[Any, ...]] = []
        out_upserts: list[tuple[Any, ...]] = []
        out_updates: list[tuple[Any, ...]] = []
        out_deletes: list[tuple[Any, ...]] = []
        sub_upserts: list[tuple[Any, ...]] = []
        sub_deletes: list[tuple[Any, ...]] = []
        in_inserts: list[tuple[Any, ...]] = []
        in_deletes: list[tuple[Any, ...]] = []
        will_upserts: list[tuple[Any, ...]] = []
        will_deletes: list[tuple[Any, ...]] = []
        live: dict[int, int] = {}  # message id saved in this batch -> surviving references
        pack = pack_retained
        releases = bool(self.extra)  # may an outbound row stop referring to a message?
        messages = self.messages
        for client_id, c in self.clients.items():
            if c.wiped:
                wipes.append((client_id,))
            if c.session is not None:
                sessions.append((client_id, *c.session))
            for seq, o in c.outbound.items():
                kind = o[0]
                if kind == _INSERT:
                    mid = o[2]
                    if mid in messages:
                        live[mid] = live.get(mid, 0) + 1
                    if not o[1]:
                        releases = True  # may replace a row referring to another message
                    out_upserts.append((client_id, seq, *o[2:]))
                elif kind == _UPDATE:
                    out_updates.append((client_id, seq, o[6], o[7]))
                else:
                    out_deletes.append((client_id, seq))
            for topic_filter, sub in c.subscriptions.items():
                if sub is None:
                    sub_deletes.append((client_id, topic_filter))
                else:
                    sub_upserts.append((client_id, topic_filter, *sub))
            for packet_id, add in c.inbound.items():
                (in_inserts if add else in_deletes).append((client_id, packet_id))
            will = c.will
            if will is None:
                will_deletes.append((client_id,))
            elif will is not _UNSET:
                will_upserts.append((client_id, *will))
        referred = self.live
        message_rows = [
            (mid, *_message_row(message))
            for mid, message in messages.items()
            # Not written when every reference to it was folded away in this batch. One
            # saved but not yet referenced (the batch closed between the two calls) is.
            if live.get(mid) or mid not in referred
        ]
        retained_upserts: list[tuple[Any, ...]] = []
        retained_deletes: list[tuple[Any, ...]] = []
        for t, m in self.retained.items():
            if m is None:
                retained_deletes.append((t,))
                continue
            p = m.properties
            retained_upserts.append(
                (
                    t,
                    m.expiry_at,
                    None if p is None else _encode_properties(p),
                    pack(m.qos, m.retain, m.origin, m.payload),
                )
            )
        plan: list[tuple[str, Sequence[Any], bool]] = []
        if wipes:
            plan.extend((sql, wipes, True) for sql in _WIPE_SESSION)
        for multi, rows in (
            (_M_UPSERT_RETAINED, retained_upserts),
            (_M_DELETE_RETAINED, retained_deletes),
            (_M_INSERT_MESSAGE, message_rows),
            (_M_UPSERT_OUTBOUND, out_upserts),
            (_M_UPDATE_OUTBOUND, out_updates),
            (_M_DELETE_OUTBOUND, out_deletes),
            (_M_INSERT_INBOUND, in_inserts),
            (_M_DELETE_INBOUND, in_deletes),
        ):
            if rows:
                plan.extend(multi.plan(rows))
        for sql, rows in (
            (_UPSERT_SESSION, sessions),
            (_UPSERT_SUBSCRIPTION, sub_upserts),
            (_DELETE_SUBSCRIPTION, sub_deletes),
            (_UPSERT_WILL, will_upserts),
            (_DELETE_WILL, will_deletes),
            *self.extra,
        ):
            if rows:
                plan.append((sql, rows, True))
        if releases or wipes or out_deletes:
            plan.extend(_COLLECT_RELEASED)
        return plan


# -- value conversions ------------------------------------------------------------------------


def _encode_properties(properties: Properties | None) -> bytes | None:
    # The wire format of a PUBLISH property block: compact, and versioned by MQTT itself.
    if properties is None:
        return None
    return encode_properties(properties, _PUBLISH)


def _decode_properties(blob: bytes | None) -> Properties | None:
    if blob is None:
        return None
    return decode_properties(Cursor(blob, 0, len(blob)), _PUBLISH)


def _message_row(message: StoredMessage) -> _MessageRow:
    return (
        message.topic,
        message.payload,
        message.qos,
        int(message.retain),
        _encode_properties(message.properties),
        message.expiry_at,
        message.origin,
    )


def _whole_retained(
    topic: str, record: bytes, properties: bytes | None, expiry_at: float | None
) -> tuple[str, bytes, int, int, Properties | None, float | None, str | None]:
    """A retained row of the table as a whole row (`base.WholeRetainedRow`)."""
    payload, qos, retain, origin = unpack_retained(record)
    return topic, payload, qos, int(retain), _decode_properties(properties), expiry_at, origin


def _retained_message(
    topic: str, record: bytes, properties: bytes | None, expiry_at: float | None
) -> StoredMessage:
    payload, qos, retain, origin = unpack_retained(record)
    return StoredMessage(
        topic, payload, qos, retain, _decode_properties(properties), expiry_at, origin
    )


def _message(row: Sequence[Any]) -> StoredMessage:
    """A StoredMessage from (topic, payload, qos, retain, properties, expiry_at, origin)."""
    topic, payload, qos, retain, props, expiry_at, origin = row
    return StoredMessage(
        topic, payload, qos, bool(retain), _decode_properties(props), expiry_at, origin
    )


def _sub_ids_text(sub_ids: tuple[int, ...]) -> str | None:
    return ",".join(map(str, sub_ids)) if sub_ids else None


def _sub_ids(text: str | None) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split(",")) if text else ()


def _error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


# -- the store --------------------------------------------------------------------------------


# Retained messages without properties and expiry come as (topic, record), the record as
# stored (schema version 2); the others whole, unpacked from theirs.
_PACKED_RETAINED = (
    "SELECT topic, record FROM retained WHERE properties IS NULL AND expiry_at IS NULL"
)
_WHOLE_RETAINED = (
    "SELECT topic, record, properties, expiry_at FROM retained"
    " WHERE properties IS NOT NULL OR expiry_at IS NOT NULL"
)


class SqliteStore:
    """`Store` in one SQLite file (see the module docstring).

    `durability` is "safe" or "fast"; `commit_interval` (seconds) is the longest a
    change waits for others to share its transaction (0: as soon as the writer is
    free); `commit_batch` the most changes in one transaction.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "safe",
        commit_interval: float = 0.005,
        commit_batch: int = 5000,
    ) -> None:
        if durability not in ("safe", "fast"):
            raise ValueError(f"durability must be 'safe' or 'fast', not {durability!r}")
        if commit_batch < 1 or commit_interval < 0:
            raise ValueError("commit_batch must be >= 1 and commit_interval >= 0")
        self.path = os.path.abspath(os.fspath(path))
        self.durability = durability
        self.commit_interval = commit_interval
        self.commit_batch = commit_batch
        #: How long a batch that only patient `after_commit` callbacks wait for may
        #: stay open (see `after_commit`).
        self.patient_interval = max(commit_interval, PATIENT_COMMITS * commit_interval)
        self._fast = durability == "fast"
        self._db: aiosqlite.Connection | None = None
        self._lock_fd: int | None = None
        self._writer: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._open_batch: _Batch | None = None
        self._timer: asyncio.Handle | None = None
        self._queue: deque[_Batch] = deque()  # closed, waiting for the writer
        self._committing: _Batch | None = None  # the writer's, until its callbacks ran
        self._closing = False
        self._failing_since: float | None = None
        # The integrity check `open` started beside the load, until its verdict is in
        # (`_checked`); then the refusal it gave, if any.
        self._check: asyncio.Future[list[tuple[Any, ...]]] | None = None
        self._refusal: DatabaseUnusable | None = None
        # What the store knows without asking the database (read at open).
        self._sessions: set[str] = set()
        self._max_seq: dict[str, int] = {}
        #: Transactions committed (tests check that changes share transactions).
        self.transactions = 0
        #: Batches handed to the writer, including those that needed no transaction.
        self.batches = 0
        #: Commit latency and batch sizes (metrics, the admin API's GET /stats).
        self.statistics = StoreStats()

    def __repr__(self) -> str:
        return f"<SqliteStore {self.path} {self.durability}>"

    @property
    def is_open(self) -> bool:
        """True between `open` and `close`."""
        return self._db is not None

    def stats(self) -> dict[str, float]:
        """Figures for /metrics (`SupportsStats`): counters end in _total, others gauges."""
        figures: dict[str, float] = {
            "transactions_total": self.transactions,
            "commit_failures_total": self.statistics.commit_failures,
            "pending_writes": self.pending,  # the writer's queue depth, in changes
            "queued_batches": len(self._queue),
        }
        for suffix in ("", "-wal"):
            try:
                size = os.path.getsize(self.path + suffix)
            except OSError:
                size = 0
            figures["database_bytes" if not suffix else "wal_bytes"] = size
        return figures

    @property
    def pending(self) -> int:
        """Changes recorded but not committed yet."""
        batches = [*self._queue]
        for batch in (self._open_batch, self._committing):
            if batch is not None:
                batches.append(batch)
        return sum(b.changes for b in batches)

    # -- open / close ----------------------------------------------------------------------

    async def open(self) -> None:
        """Lock, open (create or migrate) and check the database; start the writer.

        Raises `DatabaseUnusable` with one line for the operator when it cannot be used.
        The integrity check of a file that needs no migration is only started here:
        `load`, `retained_rows` and `flush` raise its verdict (module docstring).
        Idempotent.
        """
        if self._db is not None:
            return
        self._lock()
        self._refusal = None
        try:
            db = await self._connect()
        except BaseException:
            await self._end_check()
            self._unlock()
            raise
        self._db = db
        self._closing = False
        self._failing_since = None
        self._wakeup = asyncio.Event()  # of this event loop (a store may be reopened)
        self._writer = asyncio.create_task(self._write_loop(), name="mqttd-store-writer")

    def _lock(self) -> None:
        path = self.path
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnusable(
                f"{path}: cannot create the directory {directory}: {exc.strerror}; "
                "create it (writable by mqttd) or set another --db / persistence.path"
            ) from exc
        if not os.access(directory, os.W_OK):
            raise self._read_only(f"the directory {directory} is not writable")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except IsADirectoryError as exc:
            raise DatabaseUnusable(
                f"{path}: is a directory; --db / persistence.path names the database file"
            ) from exc
        except OSError as exc:
            raise self._read_only(f"cannot open it for writing ({exc.strerror})") from exc
        try:
            # flock, not SQLite's own POSIX locks: held for the life of the store, by this
            # open file only, and released by the kernel however the process ends.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise DatabaseUnusable(
                f"{path}: the database is in use by another process (another mqttd on the "
                "same file?); stop that process, or give this one its own --db / "
                "persistence.path"
            ) from exc
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            # After SQLite closed the file: closing any descriptor of a file drops the
            # process's POSIX locks on it, SQLite's included.
            os.close(self._lock_fd)
            self._lock_fd = None

    def _read_only(self, why: str) -> DatabaseUnusable:
        return DatabaseUnusable(
            f"{self.path}: read-only: {why}; mqttd writes the database and its -wal and "
            "-shm files beside it: make the file and its directory writable by the mqttd "
            "user, or set another --db / persistence.path"
        )

    def _unusable(self, exc: sqlite3.Error) -> DatabaseUnusable:
        """One operator line for an error met while opening the database."""
        code = _error_code(exc)
        path = self.path
        if isinstance(exc, DatabaseUnusable):
            return exc
        if code in (_SQLITE_NOTADB, _SQLITE_CORRUPT):
            return DatabaseUnusable(
                f"{path}: not a usable mqttd database ({exc}): the file is damaged or is "
                "not a SQLite database; move it aside (keep it for inspection) to start with "
                "an empty one, or restore a backup"
            )
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return DatabaseUnusable(
                f"{path}: the database is locked by another process ({exc}); stop the other "
                "program using it, or give mqttd its own --db / persistence.path"
            )
        if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_PERM, _SQLITE_AUTH):
            return self._read_only(str(exc))
        if code == _SQLITE_FULL:
            return DatabaseUnusable(
                f"{path}: the disk is full ({exc}); free some space and start again"
            )
        if code == _SQLITE_IOERR:
            return DatabaseUnusable(
                f"{path}: I/O error ({exc}); check the disk and the file system"
            )
        return DatabaseUnusable(f"{path}: cannot use the database: {exc}")

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: no implicit transactions, the writer says BEGIN/COMMIT.
        # cached_statements: the multi-row statements come in a few sizes each (_Multi).
        db = await aiosqlite.connect(self.path, isolation_level=None, cached_statements=512)
        try:
            await self._prepare(db)
            for statement in _RELEASE_TRACKING:
                await db.execute(statement)
            await self._read_known(db)
        except sqlite3.Error as exc:
            with contextlib.suppress(Exception):
                await db.close()
            raise self._unusable(exc) from exc
        except BaseException:
            with contextlib.suppress(Exception):
                await db.close()
            raise
        return db

    async def _prepare(self, db: aiosqlite.Connection) -> None:
        """Check what the file is, set WAL and synchronous, migrate the schema."""
        version = await _pragma(db, "user_version")  # reads the header: NOTADB shows here
        application_id = await _pragma(db, "application_id")
        if version > SCHEMA_VERSION:
            raise DatabaseUnusable(
                f"{self.path}: written by a newer mqttd (schema version {version}; this "
                f"mqttd reads versions up to {SCHEMA_VERSION}); run the newer mqttd, or set "
                "another --db / persistence.path"
            )
        if application_id not in (0, APPLICATION_ID):
            raise DatabaseUnusable(
                f"{self.path}: a SQLite database of another application (application_id "
                f"{application_id:#x}), not mqttd's; set another --db / persistence.path"
            )
        if version == 0:
            tables = await _pragma_rows(db, "SELECT name FROM sqlite_master")
            if tables:
                raise DatabaseUnusable(
                    f"{self.path}: a SQLite database with tables of its own, not mqttd's; "
                    "set another --db / persistence.path"
                )
        mode = await _pragma_value(db, "PRAGMA journal_mode = WAL")
        if str(mode).lower() != "wal":
            raise DatabaseUnusable(
                f"{self.path}: cannot switch the database to WAL mode (got {mode!r}); put "
                "it on a local file system that supports shared memory (not a network one)"
            )
        # FULL fsyncs the WAL at every COMMIT; NORMAL only at checkpoints (module docs).
        await db.execute(f"PRAGMA synchronous = {'NORMAL' if self._fast else 'FULL'}")
        await db.execute("PRAGMA busy_timeout = 5000")  # a reader (sqlite3 CLI) may hold it
        await db.execute("PRAGMA journal_size_limit = 67108864")  # WAL back to 64 MiB
        if version == SCHEMA_VERSION:
            # Nothing to migrate: checked beside the load (module docstring, `_checked`).
            loop = asyncio.get_running_loop()
            self._check = loop.run_in_executor(None, _quick_check, self.path)
        elif version:
            # Checked before a migration writes to it.
            problems = await _pragma_rows(db, "PRAGMA quick_check")
            if problems != [("ok",)]:
                raise self._damaged(problems)
        for target in range(version, SCHEMA_VERSION):
            await db.execute("BEGIN IMMEDIATE")
            try:
                await MIGRATIONS[target](db)
                await db.execute(f"PRAGMA user_version = {target + 1}")
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                raise
            if target:
                logger.info("%s: schema migrated to version %d", self.path, target + 1)
        # A read-only file opens fine and fails at the first write: find out now.
        await db.execute("BEGIN IMMEDIATE")
        await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        await db.execute("COMMIT")

    def _damaged(self, problems: list[tuple[Any, ...]]) -> DatabaseUnusable:
        # One line: a report can span lines ("*** in database main ***\nPage 3: ...").
        detail = "; ".join(" ".join(str(row[0]).split()) for row in problems[:3])
        return DatabaseUnusable(
            f"{self.path}: the integrity check failed ({detail}): the file is "
            "damaged; move it aside (keep it for inspection) to start with an empty "
            "one, or restore a backup"
        )

    async def _checked(self) -> None:
        """Wait for the integrity check `open` started; raise `DatabaseUnusable` if the
        file failed it (again at every later call)."""
        check = self._check
        if check is not None:
            try:
                # Shielded: a cancelled waiter must not cancel the check for the others.
                problems = await asyncio.shield(check)
            except sqlite3.Error as exc:
                self._refusal = self._unusable(exc)
            else:
                if problems != [("ok",)]:
                    self._refusal = self._damaged(problems)
            self._check = None
        if self._refusal is not None:
            raise self._refusal

    async def _end_check(self) -> None:
        # Before the file is unlocked: no thread of ours may still read it.
        check = self._check
        if check is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(check)
            self._check = None

    async def _read_known(self, db: aiosqlite.Connection) -> None:
        """The client ids of the stored sessions and each one's highest outbound seq."""
        rows = await db.execute_fetchall("SELECT client_id FROM sessions")
        self._sessions = {row[0] for row in rows}
        rows = await db.execute_fetchall(
            "SELECT client_id, MAX(seq) FROM outbound GROUP BY client_id"
        )
        self._max_seq = {row[0]: row[1] for row in rows}

    async def close(self) -> None:
        """Commit everything recorded, run the callbacks waiting for it, close. Idempotent.

        If the database keeps failing, gives up after `CLOSE_FLUSH_TIMEOUT` seconds and
        says how many changes were not written (their acknowledgements never went out).
        """
        db = self._db
        if db is None:
            return
        self._closing = True
        self._wakeup.set()
        writer = self._writer
        try:
            if writer is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(writer), CLOSE_FLUSH_TIMEOUT)
                except TimeoutError:
                    writer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await writer
                    logger.error(
                        "persistence: %s: %d changes could not be written before the stop; "
                        "their acknowledgements were not sent",
                        self.path,
                        self.pending,
                    )
        finally:
            if writer is not None and not writer.done():
                writer.cancel()
            self._writer = None
            self._db = None
            self._open_batch = None
            self._queue.clear()
            self._committing = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            try:
                await self._end_check()
                await db.close()
            finally:
                self._unlock()

    # -- load ------------------------------------------------------------------------------

    async def load(self, retained: bool = True) -> StoredState:
        """Everything committed, after committing what is pending.

        With `retained` False the retained messages are left to `retained_rows`.

        Rows that no longer belong anywhere (an outbound entry whose message is gone, a
        message no entry refers to) are left out and deleted. A database that turns out
        damaged while it is read raises `DatabaseUnusable`.
        """
        try:
            return await self._load(retained)
        except DatabaseUnusable:
            raise
        except sqlite3.Error as exc:
            raise self._unusable(exc) from exc

    async def retained_rows(self, chunk: int = 20_000) -> AsyncIterator[list[RetainedRow]]:
        """The committed retained messages, `chunk` rows at a time: first the packed
        rows (no properties, no expiry: the record as the table keeps it), then the
        whole ones (`RetainedRow`).

        One cursor at a time, read on aiosqlite's thread a chunk at a time: a million
        retained messages never sit in memory twice (as rows and as the broker's
        messages). A packed row is two objects (its topic and its record) where a whole
        one is five or more, and no Python code runs per packed row here or in the
        broker's `from_rows` (docs/benchmarks.md, start-up, fourth round).
        """
        db = self._require_open()
        await self.flush()
        try:
            async with db.execute(_PACKED_RETAINED) as cursor:
                while rows := await cursor.fetchmany(chunk):
                    yield cast(list[RetainedRow], rows)
            async with db.execute(_WHOLE_RETAINED) as cursor:
                while rows := await cursor.fetchmany(chunk):
                    yield [_whole_retained(*row) for row in rows]
            await self._checked()  # what was read counts only from a sound file
        except DatabaseUnusable:
            raise
        except sqlite3.Error as exc:
            raise self._unusable(exc) from exc

    async def _load(self, with_retained: bool) -> StoredState:
        db = self._require_open()
        await self.flush()
        state = StoredState()
        if with_retained:
            state.retained = [
                _retained_message(*row)
                for row in await db.execute_fetchall(
                    "SELECT topic, record, properties, expiry_at FROM retained"
                )
            ]
        # Inlined (no call per row): a million retained messages is a real case.
        decode = _decode_properties
        # Equal strings the rows bring once per row (publisher ids of queued messages,
        # subscription filters many sessions share) are made one object: 100,000
        # sessions save about 11 MiB (docs/benchmarks.md, start-up, sixth round).
        shared: dict[str, str] = {}
        share = shared.setdefault
        messages = {
            mid: StoredMessage(
                t, p, q, r == 1, None if pr is None else decode(pr), e, o and share(o, o)
            )
            for mid, t, p, q, r, pr, e, o in await db.execute_fetchall(
                "SELECT id, topic, payload, qos, retain, properties, expiry_at, origin"
                " FROM messages"
            )
        }
        sessions: dict[str, StoredSession] = {}
        for client_id, level, expiry, disconnected_at, owner in await db.execute_fetchall(
            "SELECT client_id, protocol_level, expiry_interval, disconnected_at, owner"
            " FROM sessions"
        ):
            sessions[client_id] = StoredSession(
                client_id, level, expiry, disconnected_at, owner=owner
            )
        for client_id, topic_filter, qos, nl, rap, rh, sub_id in await db.execute_fetchall(
            "SELECT client_id, topic_filter, qos, no_local, retain_as_published,"
            " retain_handling, subscription_identifier FROM subscriptions"
        ):
            session = sessions.get(client_id)
            if session is not None:
                session.subscriptions.append(
                    StoredSubscription(
                        share(topic_filter, topic_filter), qos, bool(nl), bool(rap), rh, sub_id
                    )
                )
        del shared
        referenced: set[int] = set()
        dangling: list[tuple[str, int]] = []
        # Each session's highest seq, keyed by the session's own client id string (open
        # read them too, as strings of their own: 100,000 x 64 bytes saved).
        max_seq: dict[str, int] = {}
        # Primary key order: by client id, then seq, the delivery order.
        for client_id, seq, mid, qos, retain, sub_ids, packet_id, st in await db.execute_fetchall(
            "SELECT client_id, seq, message_id, qos, retain, subscription_ids, packet_id, state"
            " FROM outbound ORDER BY client_id, seq"
        ):
            session = sessions.get(client_id)
            if session is not None:
                max_seq[session.client_id] = seq  # ascending: the last one is the highest
            if session is None or mid not in messages:
                dangling.append((client_id, seq))
                continue
            referenced.add(mid)
            session.outbound.append(
                StoredOutbound(
                    seq, mid, qos, bool(retain), _sub_ids(sub_ids), packet_id, OutboundState(st)
                )
            )
        for client_id, packet_id in await db.execute_fetchall(
            "SELECT client_id, packet_id FROM inbound_qos2"
        ):
            session = sessions.get(client_id)
            if session is not None:
                session.inbound_qos2.add(packet_id)
        for row in await db.execute_fetchall(
            "SELECT client_id, publish_at, topic, payload, qos, retain, properties, expiry_at,"
            " origin FROM wills"
        ):
            session = sessions.get(row[0])
            if session is not None:
                session.will = StoredWill(_message(row[2:]), row[1])
        unreferenced = [mid for mid in messages if mid not in referenced]
        for mid in unreferenced:
            del messages[mid]
        state.messages = messages
        state.sessions = list(sessions.values())
        # The known ids as the same strings the sessions hold (not a second copy of each,
        # read at `open`); anything recorded meanwhile stays known.
        known = set(sessions)
        # Not update(self._sessions): a set merged with one as large is resized for
        # both (4 MiB more for 100,000), though nearly every id is there already.
        known.update(self._sessions.difference(known))
        self._sessions = known
        for client_id, seq in self._max_seq.items():  # recorded meanwhile, or no session
            if seq > max_seq.get(client_id, 0):
                max_seq[client_id] = seq
        self._max_seq = max_seq
        # What was read counts only from a sound file; and the writer waits for it.
        await self._checked()
        if dangling or unreferenced:
            logger.info(
                "%s: dropping %d outbound entries and %d messages that belong nowhere",
                self.path,
                len(dangling),
                len(unreferenced),
            )
            # Through the writer, which owns every transaction.
            batch = self._batch()
            batch.extra.append((_DELETE_OUTBOUND, dangling))
            batch.extra.append(("DELETE FROM messages WHERE id = ?", [(m,) for m in unreferenced]))
            batch.changes += len(dangling) + len(unreferenced)
            await self.flush()
        return state

    # -- group commit ------------------------------------------------------------------------

    def after_commit(self, callback: Callable[[], None], patient: bool = False) -> None:
        """Run `callback` once every change recorded before now is committed ("fast":
        now). Callbacks run in the order given, on the event loop.

        `patient`: the caller may be served sooner another way (a publisher's PUBACK
        that its receivers' PUBACKs release, broker/outbound.py). A batch only such
        callbacks wait for stays open up to `patient_interval` instead of
        `commit_interval`: meanwhile its messages are acknowledged end to end and
        fold away, so fewer rows are written, and fewer transactions.
        """
        if self._fast:
            callback()
            return
        target = self._open_batch
        if target is not None:
            if not patient and not target.urgent:
                target.urgent = True
                if target.deferred:
                    self._batch_due(target)
            target.callbacks.append(callback)
            return
        if target is None:
            target = self._queue[-1] if self._queue else self._committing
            if target is None:
                callback()  # nothing recorded is waiting: all of it is durable
                return
        target.callbacks.append(callback)

    async def flush(self) -> None:
        """Wait until everything recorded so far is committed."""
        if self._open_batch is None and not self._queue and self._committing is None:
            return
        await self._checked()  # a damaged file gets no commit: refused, not waited for
        done = asyncio.get_running_loop().create_future()
        target = self._open_batch
        if target is not None:
            self._close_open_batch()  # no reason to wait for the interval
        else:
            target = self._queue[-1] if self._queue else self._committing
        assert target is not None
        target.callbacks.append(lambda: _resolve(done))
        await done

    def _batch(self) -> _Batch:
        batch = self._open_batch
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._open_batch = _Batch(opened_at=loop.time())
            if self.commit_interval > 0:
                self._timer = loop.call_later(self.commit_interval, self._batch_due, batch)
            else:
                self._timer = loop.call_soon(self._batch_due, batch)
        return batch

    def _batch_due(self, batch: _Batch) -> None:
        # The interval is over: the writer takes the batch as soon as it is free.
        if batch.callbacks and not batch.urgent and not batch.deferred:
            # Only patient callbacks wait (see after_commit): give their messages the
            # time to be acknowledged end to end, up to `patient_interval`.
            loop = asyncio.get_running_loop()
            left = batch.opened_at + self.patient_interval - loop.time()
            if left > 0:
                batch.deferred = True
                self._timer = loop.call_later(left, self._batch_due, batch)
                return
        if batch.due:
            return
        batch.due = True
        if self._timer is not None and batch is self._open_batch:
            self._timer.cancel()
        self._timer = None
        self._wakeup.set()

    def _close_open_batch(self) -> None:
        batch = self._open_batch
        if batch is not None:
            self._open_batch = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._queue.append(batch)
            self._wakeup.set()

    def _changed(self, batch: _Batch) -> None:
        batch.changes += 1
        if batch.changes >= self.commit_batch:
            self._close_open_batch()

    def _client(self, client_id: str) -> _ClientChanges:
        batch = self._batch()
        changes = batch.clients.get(client_id)
        if changes is None:
            changes = batch.clients[client_id] = _ClientChanges()
        return changes

    async def _write_loop(self) -> None:
        """The one writer: a transaction per batch, then the batch's callbacks."""
        try:
            await self._checked()
        except DatabaseUnusable:
            return  # nothing goes into a damaged file; `load` and `flush` raise the error
        while True:
            batch = self._next_batch()
            if batch is None:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._committing = batch
            self.batches += 1
            await self._commit(batch)
            # Run by index: a callback may register another on this same batch.
            callbacks = batch.callbacks
            i = 0
            while i < len(callbacks):
                try:
                    callbacks[i]()
                except Exception:
                    logger.exception("persistence: an after_commit callback failed")
                i += 1
            self._committing = None

    def _next_batch(self) -> _Batch | None:
        if self._queue:
            return self._queue.popleft()
        batch = self._open_batch
        if batch is not None and (batch.due or self._closing):
            self._open_batch = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return batch
        return None

    async def _commit(self, batch: _Batch) -> None:
        """Apply `batch` in one transaction; on failure roll back and retry until it works."""
        plan = batch.statements()
        if not plan:
            return  # every change folded away: nothing to make durable
        delay = RETRY_FIRST
        retries = 0
        while True:
            started = time.perf_counter()
            try:
                await self._transaction(plan)
            except Exception as exc:
                self.statistics.commit_failures += 1
                retries += 1
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    logger.error(
                        "persistence: cannot write %s: %s%s; QoS 1/2 acknowledgements that "
                        "need it are held back, retrying until it works",
                        self.path,
                        exc,
                        " (free some disk space)" if _error_code(exc) == _SQLITE_FULL else "",
                        # A bug rather than the disk: the traceback helps.
                        exc_info=not isinstance(exc, sqlite3.Error),
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            self.transactions += 1
            self.statistics.committed(time.perf_counter() - started, batch.changes)
            if self._failing_since is not None:
                logger.warning(
                    "persistence: writing %s works again after %.1f s (%d retries)",
                    self.path,
                    time.monotonic() - self._failing_since,
                    retries,
                )
                self._failing_since = None
            return

    async def _transaction(self, plan: list[tuple[str, Sequence[Any], bool]]) -> None:
        db = self._require_open()
        run = _one_call(db)
        if run is not None:
            # The whole transaction in ONE call on aiosqlite's thread. Statement by
            # statement, each of the 5-8 statements was a hand-over between the threads,
            # and each waited for the GIL while the event loop ran (up to the 5 ms switch
            # interval): 3.3 ms per transaction on average, while PUBACKs waited.
            # `_execute` is aiosqlite's own queue (0.20-0.22); without it, the slow way.
            await run(_run_transaction, db._conn, plan)
            return
        await db.execute("BEGIN IMMEDIATE")
        try:
            for sql, parameters, many in plan:
                if many:
                    await db.executemany(sql, parameters)
                else:
                    await db.execute(sql, parameters)
            await db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (SQLITE_FULL can do that).
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
            raise

    def _require_open(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError(f"{self!r} is not open")
        return self._db

    # -- the mutations (they only record) -----------------------------------------------------

    def save_retained(self, message: StoredMessage) -> None:
        """Record `message` as the retained message of its topic."""
        batch = self._batch()
        batch.retained[message.topic] = message
        self._changed(batch)

    def delete_retained(self, topic: str) -> None:
        """Record that `topic` has no retained message."""
        batch = self._batch()
        batch.retained[topic] = None
        self._changed(batch)

    def save_session(
        self,
        client_id: str,
        protocol_level: int,
        expiry_interval: int,
        disconnected_at: float | None,
        owner: str | None = None,
    ) -> None:
        """Insert or update a session's own fields (`owner`: its user name, if any)."""
        created = client_id not in self._sessions
        if created:
            self._sessions.add(client_id)
        changes = self._client(client_id)
        if created:
            changes.created = True
        changes.session = (protocol_level, expiry_interval, disconnected_at, owner)
        self._changed(self._batch())

    def delete_session(self, client_id: str) -> None:
        """Forget a session and every row of it."""
        if client_id not in self._sessions:
            return
        self._sessions.discard(client_id)
        self._max_seq.pop(client_id, None)
        batch = self._batch()
        old = batch.clients.get(client_id)
        # A session created in this batch left no rows before it: only an earlier wipe
        # in this batch (if any) must still happen.
        wiped = old.wiped if old is not None and old.created else True
        if wiped:
            batch.clients[client_id] = _ClientChanges(wiped=True)
        else:
            batch.clients.pop(client_id, None)
        self._changed(batch)

    def add_subscription(self, client_id: str, subscription: StoredSubscription) -> None:
        """Insert or replace a subscription."""
        if client_id not in self._sessions:
            return
        s = subscription
        self._client(client_id).subscriptions[s.topic_filter] = (
            s.qos,
            int(s.no_local),
            int(s.retain_as_published),
            s.retain_handling,
            s.subscription_identifier,
        )
        self._changed(self._batch())

    def remove_subscription(self, client_id: str, topic_filter: str) -> None:
        """Forget a subscription."""
        if client_id not in self._sessions:
            return
        self._client(client_id).subscriptions[topic_filter] = None
        self._changed(self._batch())

    # The next four run for every QoS 1/2 message a persistent session gets: inlined.

    def save_message(self, message_id: int, message: StoredMessage) -> None:
        """Record a message that outbound entries will refer to."""
        batch = self._open_batch or self._batch()
        batch.messages[message_id] = message
        batch.changes += 1
        if batch.changes >= self.commit_batch:
            self._close_open_batch()

    def add_outbound(self, client_id: str, outbound: StoredOutbound) -> None:
        """Record an outbound entry."""
        if client_id not in self._sessions:
            return
        seq = outbound.seq
        max_seq = self._max_seq
        fresh = seq > max_seq.get(client_id, 0)
        if fresh:
            max_seq[client_id] = seq
        batch = self._open_batch or self._batch()
        clients = batch.clients
        changes = clients.get(client_id)
        if changes is None:
            changes = clients[client_id] = _ClientChanges()
        mid = outbound.message_id
        sub_ids = outbound.subscription_ids
        changes.outbound[seq] = (
            _INSERT,
            fresh,
            mid,
            outbound.qos,
            # bool and IntEnum as they are: sqlite3 binds int subclasses as integers.
            outbound.retain,
            _sub_ids_text(sub_ids) if sub_ids else None,
            outbound.packet_id,
            outbound.state,
        )
        if mid in batch.messages:
            live = batch.live
            n = live.get(mid)
            if n is None:
                live[mid] = 1
            else:
                live[mid] = n + 1
                if not n:
                    batch.changes += 1  # its row is needed again (see remove_outbound)
        batch.changes += 1
        if batch.changes >= self.commit_batch:
            self._close_open_batch()

    def set_outbound_state(
        self, client_id: str, seq: int, packet_id: int | None, state: OutboundState
    ) -> None:
        """Record an outbound entry's new packet id and state."""
        if client_id not in self._sessions or seq > self._max_seq.get(client_id, 0):
            return  # no such entry was ever recorded
        batch = self._open_batch or self._batch()
        clients = batch.clients
        changes = clients.get(client_id)
        if changes is None:
            changes = clients[client_id] = _ClientChanges()
        outbound = changes.outbound
        o = outbound.get(seq)
        if o is None:
            outbound[seq] = (_UPDATE, False, 0, 0, 0, None, packet_id, int(state))
        else:
            if o[0] != _DELETE:
                outbound[seq] = (*o[:6], packet_id, int(state))
            return  # folded into a change this batch has already counted
        batch.changes += 1
        if batch.changes >= self.commit_batch:
            self._close_open_batch()

    def remove_outbound(self, client_id: str, seq: int) -> None:
        """Forget an outbound entry."""
        if client_id not in self._sessions or seq > self._max_seq.get(client_id, 0):
            return
        batch = self._open_batch or self._batch()
        clients = batch.clients
        changes = clients.get(client_id)
        if changes is None:
            changes = clients[client_id] = _ClientChanges()
        outbound = changes.outbound
        o = outbound.get(seq)
        if o is not None and o[0] == _INSERT and o[1]:
            del outbound[seq]  # added and removed within the batch: no row at all
            # `commit_batch` bounds the rows a transaction writes: this one is gone. So
            # while the writer is busy, a batch that mostly folds stays open and goes
            # on folding (the fewer rows, the cheaper the commit) instead of closing
            # after a fixed number of calls.
            batch.changes -= 1
            live = batch.live
            mid = o[2]
            n = live.get(mid)
            if n is not None:  # a message saved in this batch
                live[mid] = n - 1
                if n == 1:
                    batch.changes -= 1  # its last reference folded: no message row either
            return
        if o is not None:
            outbound[seq] = _REMOVED
            return  # replaces a change already counted
        outbound[seq] = _REMOVED
        batch.changes += 1
        if batch.changes >= self.commit_batch:
            self._close_open_batch()

    def add_inbound_qos2(self, client_id: str, packet_id: int) -> None:
        """Record an inbound QoS 2 packet id awaiting PUBREL."""
        if client_id not in self._sessions:
            return
        self._client(client_id).inbound[packet_id] = True
        self._changed(self._batch())

    def remove_inbound_qos2(self, client_id: str, packet_id: int) -> None:
        """Forget an inbound QoS 2 packet id."""
        if client_id not in self._sessions:
            return
        self._client(client_id).inbound[packet_id] = False
        self._changed(self._batch())

    def save_will(self, client_id: str, will: StoredWill) -> None:
        """Record the session's pending will."""
        if client_id not in self._sessions:
            return
        self._client(client_id).will = (will.publish_at, *_message_row(will.message))
        self._changed(self._batch())

    def delete_will(self, client_id: str) -> None:
        """Forget the session's pending will."""
        if client_id not in self._sessions:
            return
        self._client(client_id).will = None
        self._changed(self._batch())


def _one_call(db: aiosqlite.Connection) -> Callable[..., Awaitable[Any]] | None:
    """aiosqlite's own way to run a function on its thread (`_execute`, private), or
    None if this aiosqlite has none: `_transaction` then goes statement by statement."""
    return cast("Callable[..., Awaitable[Any]] | None", getattr(db, "_execute", None))


def _run_transaction(conn: sqlite3.Connection, plan: list[tuple[str, Sequence[Any], bool]]) -> None:
    """Apply `plan` in one transaction (on aiosqlite's thread); roll back on failure."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, parameters, many in plan:
            if many:
                conn.executemany(sql, parameters)
            else:
                conn.execute(sql, parameters)
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (SQLITE_FULL can do that).
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _pragma(db: aiosqlite.Connection, name: str) -> int:
    value = await _pragma_value(db, f"PRAGMA {name}")
    return int(value) if value is not None else 0


async def _pragma_value(db: aiosqlite.Connection, sql: str) -> Any:
    rows = await _pragma_rows(db, sql)
    return rows[0][0] if rows else None


def _quick_check(path: str) -> list[tuple[Any, ...]]:
    """``PRAGMA quick_check`` of the file on a connection of its own, for a thread of its
    own: SQLite releases the GIL while it reads, so it runs beside the load."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA busy_timeout = 5000")
        # It reads every page once: a page cache of its own would only add to the peak.
        db.execute("PRAGMA cache_size = -256")
        return [tuple(row) for row in db.execute("PRAGMA quick_check")]
    finally:
        db.close()


async def _pragma_rows(db: aiosqlite.Connection, sql: str) -> list[tuple[Any, ...]]:
    rows: Iterable[Any] = await db.execute_fetchall(sql)
    return [tuple(row) for row in rows]
