"""What the admin API answers, as plain JSON-ready dicts read from the broker core.

No HTTP here: `server.py` turns requests into calls of these functions, so listing,
filtering and paging are tested without a socket. Everything runs on the event loop
between two packets, so what a page shows is one consistent moment of the broker.

Paging comes two ways. Clients, sessions and subscriptions use ``page``/``limit`` with
the total count (EMQX's shape): tens of thousands of entries are filtered and sorted per
request in a few milliseconds. Retained messages use a cursor on topic order instead:
with a million of them, an offset (or a sort of all of them) would make pages cost more
the further they go, so a page walks the retained tree on from the cursor
(`RetainedIndex`), and sees the tree as it is now.
"""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..broker.broker import Broker
from ..broker.connection import Connection
from ..broker.message import Message
from ..broker.session import Session

__all__ = [
    "MAX_LIMIT",
    "ClientFilter",
    "Page",
    "RetainedIndex",
    "client_detail",
    "client_summary",
    "list_clients",
    "list_sessions",
    "list_subscriptions",
    "message_json",
    "page_of",
    "session_summary",
]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000  # entries per page at most: one page never holds the loop for long


@dataclass(slots=True)
class Page:
    """One page of a list: its items and where it stands in the whole."""

    items: list[dict[str, Any]]
    total: int
    page: int
    limit: int

    def json(self) -> dict[str, Any]:
        """``{"data": [...], "meta": {"page", "limit", "count", "hasnext"}}`` (EMQX's shape)."""
        return {
            "data": self.items,
            "meta": {
                "page": self.page,
                "limit": self.limit,
                "count": self.total,
                "hasnext": self.page * self.limit < self.total,
            },
        }


def page_of(
    entries: Sequence[Any], page: int, limit: int, render: Callable[[Any], dict[str, Any]]
) -> Page:
    """Page `page` (from 1) of `entries`, `limit` per page, each rendered by `render`."""
    start = (page - 1) * limit
    return Page([render(e) for e in entries[start : start + limit]], len(entries), page, limit)


@dataclass(slots=True)
class ClientFilter:
    """EMQX-like filters: substrings of client id and user name, exact address and level.

    `connected`: True = connected only, False = offline sessions only, None = both.
    """

    clientid: str | None = None
    username: str | None = None
    ip: str | None = None
    proto_ver: int | None = None
    connected: bool | None = None

    def accepts(self, session: Session) -> bool:
        """True when `session` passes every filter that is set."""
        connection = session.connection
        if self.connected is not None and (connection is not None) != self.connected:
            return False
        if self.clientid is not None and self.clientid not in session.client_id:
            return False
        username = connection.username if connection is not None else session.username
        if self.username is not None and self.username not in (username or ""):
            return False
        if self.proto_ver is not None and session.protocol_level != self.proto_ver:
            return False
        return self.ip is None or (connection is not None and _host(connection.peer) == self.ip)


def _host(peer: str) -> str:
    """The address part of "host:port" or "[v6]:port"."""
    host = peer.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") else host


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def client_summary(session: Session) -> dict[str, Any]:
    """One row of the clients list: who, from where, how busy."""
    connection = session.connection
    return {
        "clientid": session.client_id,
        "username": connection.username if connection is not None else session.username,
        "connected": connection is not None,
        "ip_address": _host(connection.peer) if connection is not None else None,
        "peer": connection.peer if connection is not None else None,
        "listener": connection.listener if connection is not None else None,
        "proto_ver": session.protocol_level,
        "connected_at": _iso(connection.connected_at) if connection is not None else None,
        "keepalive": connection.keep_alive if connection is not None else None,
        "clean_start": not session.persistent,
        "expiry_interval": session.expiry_interval,
        "inflight": len(session.inflight),
        "queued": session.queue_length,
        "queued_bytes": session.queued_bytes,
        "subscriptions_cnt": len(session.subscriptions),
        "node": "local",
    }


def session_summary(session: Session) -> dict[str, Any]:
    """One row of the sessions list (connected or not)."""
    row = client_summary(session)
    row["persistent"] = session.persistent
    return row


def client_detail(session: Session) -> dict[str, Any]:
    """A client with its subscriptions (and their options) and its queue sizes."""
    row = session_summary(session)
    row["subscriptions"] = [
        _subscription(session.client_id, topic_filter, options)
        for topic_filter, options in sorted(session.subscriptions.items())
    ]
    row["will_pending"] = session.pending_will is not None
    return row


def _subscription(client_id: str, topic_filter: str, options: Any) -> dict[str, Any]:
    return {
        "clientid": client_id,
        "topic": topic_filter,
        "qos": options.qos,
        "nl": int(options.no_local),
        "rap": int(options.retain_as_published),
        "rh": options.retain_handling,
    }


def _sorted_sessions(broker: Broker, keep: Callable[[Session], bool]) -> list[Session]:
    # Sorted by client id: pages are stable while clients come and go elsewhere.
    return sorted((s for s in broker.sessions.values() if keep(s)), key=lambda s: s.client_id)


def list_clients(broker: Broker, where: ClientFilter, page: int, limit: int) -> Page:
    """Connected clients (by default) or any sessions, filtered, sorted by client id."""
    return page_of(_sorted_sessions(broker, where.accepts), page, limit, client_summary)


def list_sessions(broker: Broker, where: ClientFilter, page: int, limit: int) -> Page:
    """Every session, offline ones included, filtered, sorted by client id."""
    return page_of(_sorted_sessions(broker, where.accepts), page, limit, session_summary)


def list_subscriptions(
    broker: Broker,
    clientid: str | None,
    topic: str | None,
    match_topic: str | None,
    page: int,
    limit: int,
) -> Page:
    """Subscriptions of every session: exact `clientid`, exact filter `topic`, or the
    filters that `match_topic` (a topic name) would be delivered through."""
    rows: list[tuple[str, str, Any]] = []
    sessions: Iterable[Session]
    if clientid is not None:
        one = broker.sessions.get(clientid)
        sessions = (one,) if one is not None else ()
    else:
        sessions = broker.sessions.values()
    for session in sessions:
        for topic_filter, options in session.subscriptions.items():
            if topic is not None and topic_filter != topic:
                continue
            if match_topic is not None and not topic_matches(topic_filter, match_topic):
                continue
            rows.append((session.client_id, topic_filter, options))
    rows.sort(key=lambda row: (row[0], row[1]))
    return page_of(rows, page, limit, lambda row: _subscription(*row))


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True when `topic` (a name) matches `topic_filter` (4.7; "$" rule of 4.7.2)."""
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2] if topic_filter.count("/") >= 2 else ""
    filters = topic_filter.split("/")
    names = topic.split("/")
    if topic[:1] == "$" and filters[0] in ("+", "#"):
        return False
    for i, level in enumerate(filters):
        if level == "#":
            return True
        if i >= len(names) or (level != "+" and level != names[i]):
            return False
    return len(names) == len(filters)


def message_json(topic: str, message: Message, now: float) -> dict[str, Any]:
    """A retained message: the payload as text when it is UTF-8, always as base64 too."""
    try:
        text: str | None = message.payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    expires_in = None
    if message.expiry_at is not None:
        expires_in = max(0, int(message.expiry_at - now))
    return {
        "topic": topic,
        "qos": message.qos,
        "payload": text,
        "payload_base64": base64.b64encode(message.payload).decode("ascii"),
        "size": len(message.payload),
        "publisher": message.origin,
        "expires_in": expires_in,
    }


class RetainedIndex:
    """Cursor pages of retained messages in topic order (`RetainedTree.iter_sorted`).

    A page walks the retained tree from the cursor, sorting the children of the nodes on
    its way only: with a million messages under a few levels, a page costs about as much
    as its own entries. `meta.count` (how many match) comes with a first page (no
    cursor) for "#", where it is a length, and for any filter when asked (`with_count`):
    that is one `match`, whose cost follows the number of matches (0.4 s for a million),
    so it is not paid by default.
    """

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def count(self, topic_filter: str) -> int:
        """How many retained messages match `topic_filter`."""
        retained = self._broker.retained
        if topic_filter == "#":
            return len(retained) - retained.count_prefix("$")
        return len(retained.match(topic_filter))

    def page(
        self, topic_filter: str, after: str | None, limit: int, with_count: bool = False
    ) -> dict[str, Any]:
        """Up to `limit` retained messages matching `topic_filter` with topics after
        `after` (the previous page's cursor), in topic order, and the next cursor."""
        retained = self._broker.retained
        now = self._broker.clock.now()
        found = list(itertools.islice(retained.iter_sorted(topic_filter, after), limit + 1))
        more = len(found) > limit
        items = [message_json(topic, message, now) for topic, message in found[:limit]]
        return {
            "data": items,
            "meta": {
                "limit": limit,
                "count": (
                    self.count(topic_filter)
                    if after is None and (with_count or topic_filter == "#")
                    else None
                ),
                "cursor": found[limit - 1][0] if more else None,
                "hasnext": more,
            },
        }


def connection_of(broker: Broker, client_id: str) -> Connection | None:
    """The live connection of `client_id`, if connected."""
    session = broker.sessions.get(client_id)
    return session.connection if session is not None else None
