"""What the other nodes of a cluster do to this one: the core's side of the Backplane seam.

Theory of operation. A backplane (backplane.py) calls a `BackplaneHost` when another node
has something for this one: a message to deliver here only, a retained topic that
changed, a client id it claimed, a session that moves here, a will it asks about, or the
news that this node is cut off. `ClusterHost` is that host. The `Broker` hands one to
the backplane it joins (`Broker.use_backplane`) and keeps no cluster callbacks itself.

The host holds the broker through `NodeCore`, the few things it may use of it: the
registry's views and operations (take a session's connection over, end a session, forget
one that moved away, put a restored one in place, arm its expiry), the wills, the
shared-subscription groups, the retained messages, `publish`, and what a restored session
needs of its core (`SessionContext`). It never reaches into the broker's fields, so the
registry keeps its rules in one place (broker.py) and the cluster's decisions are here.

Messages from other nodes come through `publish_from_node`, one call more than a local
PUBLISH; a single node has no host at all, so its hot path pays nothing for this.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from ..protocol.reason_codes import ReasonCode
from .context import SessionContext
from .recovery import message_from_stored, record_restored
from .settings import DropReason

if TYPE_CHECKING:
    from ..auth.hooks import Authorise
    from ..store.base import StoredSession, StoredState
    from .backplane import Backplane
    from .connection import Connection
    from .message import Message
    from .outbound import SharedDelivery
    from .retained import RetainedMessages
    from .session import Session
    from .shared import SharedSubscriptions
    from .wills import Wills

__all__ = ["ClusterHost", "NodeCore"]

_NEVER_EXPIRES = 0xFFFFFFFF


class NodeCore(SessionContext, Protocol):
    """What the cluster host uses of the core it lives in (`Broker` is one)."""

    wills: Wills
    shared: SharedSubscriptions
    retained_messages: RetainedMessages
    authorise: Authorise | None

    @property
    def sessions(self) -> Mapping[str, Session]:
        """Every session by client id (connected or not)."""
        ...

    @property
    def connections(self) -> frozenset[Connection]:
        """Every open connection."""
        ...

    def publish(
        self, message: Message, origin: Session | None = None, from_node: bool = False
    ) -> int:
        """Route `message` to every matching session here."""
        ...

    def take_over(self, old: Connection, session: Session) -> None:
        """Close `old`, the connection of `session`, as a new connection takes it over."""
        ...

    def end_session(
        self, session: Session, dropped: DropReason | None = None, release: bool = True
    ) -> None:
        """The session is over: its will, subscriptions and messages go."""
        ...

    def forget_session(self, session: Session) -> None:
        """The session lives on another node now: forget it here only."""
        ...

    def restore(
        self, stored: StoredSession, messages: dict[int, Message], now: float, wall: float
    ) -> tuple[Session, float | None]:
        """A persistent session from its record, put in place (registry and trees)."""
        ...

    def expire_later(self, session: Session, delay: float) -> None:
        """End `session` in `delay` seconds unless a client resumes it first."""
        ...


class ClusterHost:
    """This node's `BackplaneHost` (backplane.py): what other nodes' events do here."""

    __slots__ = ("_backplane", "_core")

    def __init__(self, core: NodeCore, backplane: Backplane) -> None:
        self._core = core
        self._backplane = backplane

    def publish_from_node(self, message: Message) -> int:
        """A message another node published: delivered here only, never sent out again.

        Its retained state arrives separately (`retained_from_node`).
        """
        return self._core.publish(message, None, True)

    def deliver_shared_from_node(
        self,
        message: Message,
        share: str,
        topic_filter: str,
        held: SharedDelivery | None = None,
    ) -> int:
        """The cluster chose this node's members of "$share/{share}/{topic_filter}" for
        `message` (published on any node, this one included): deliver to one of them.
        `held` and the result: `SharedSubscriptions.deliver_to_group`."""
        core = self._core
        return core.shared.deliver_to_group(message, share, topic_filter, core.authorise, held)

    def retained_from_node(self, topic: str, message: Message | None) -> None:
        """Another node set (`message`) or cleared (None) the retained message of `topic`.

        The node's tree and store follow the cluster's; nothing is sent out again.
        """
        self._core.retained_messages.from_node(topic, message)

    def client_id_taken_elsewhere(self, client_id: str) -> None:
        """Another node of the cluster claimed `client_id` after this one (backplane.py).

        The connection here gets DISCONNECT 0x8E, as on one broker, and a delayed will is
        cancelled (the client is connected again). With durable sessions the session
        moved there, messages and all (`NodeCore.forget_session`); without, it ends here
        and its undelivered messages are dropped.
        """
        core = self._core
        session = core.sessions.get(client_id)
        if session is None:
            return
        old = session.connection
        if old is not None:
            core.take_over(old, session)
        if session.will_timer is not None:
            core.wills.cancel_pending(session)
        if self._backplane.sessions_move:
            core.forget_session(session)
        else:
            core.end_session(session, DropReason.SESSION_EXPIRED)

    def session_from_node(self, state: StoredState) -> None:
        """A persistent session moves here from its log (`state.sessions[0]`): it replaces
        this node's copy, recorded in the node's store as it came; an offline one's
        expiry starts counting here, and a pending will is dropped (its client is
        connecting)."""
        if not state.sessions:
            return
        core = self._core
        stored = state.sessions[0]
        stored.will = None
        old = core.sessions.get(stored.client_id)
        if old is not None:
            if old.connection is not None:
                core.take_over(old.connection, old)
            core.forget_session(old)
        now = core.clock.now()
        wall = core.clock.wall()
        messages = {mid: message_from_stored(m, now, wall) for mid, m in state.messages.items()}
        session, _ = core.restore(stored, messages, now, wall)
        record_restored(core, session, stored.disconnected_at)
        if session.expiry_interval != _NEVER_EXPIRES:
            core.expire_later(session, session.expiry_interval)

    def offline_sessions(self) -> list[str]:
        """The client ids of the persistent sessions here without a connection."""
        return [
            client_id
            for client_id, session in self._core.sessions.items()
            if session.connection is None and session.persistent
        ]

    def drop_stale_session(self, client_id: str) -> bool:
        """A copy of a session this node holds without a claim (restored from its store)
        that the cluster gave to another node, or ended: forget it here, its pending
        will unpublished (the wills bucket has it) and nothing dropped as undelivered:
        its messages are where the cluster holds the session, or were for it to end."""
        session = self._core.sessions.get(client_id)
        if session is None or session.connection is not None:
            return False
        self._core.forget_session(session)
        return True

    def will_of(self, client_id: str) -> tuple[Message, int] | None:
        """The will of `client_id` connected here, and its delay as `Wills` would apply it."""
        session = self._core.sessions.get(client_id)
        connection = session.connection if session is not None else None
        if session is None or connection is None or connection.will is None:
            return None
        delay = connection.will_delay
        delay = min(delay, session.expiry_interval) if delay and session.persistent else 0
        return connection.will, delay

    def publish_will(self, message: Message) -> None:
        """A will a dead node left behind (backplane.py): published here, cluster-wide."""
        self._core.wills.publish(message)

    def node_fenced(self) -> None:
        """Cut off from the cluster (backplane.py): DISCONNECT 0x9C to every client.

        No will is published here: the cluster holds them and a node that can reach it
        publishes them. Pending delayed wills are cancelled here for the same reason.
        """
        core = self._core
        for connection in core.connections:
            connection.close_reason = "cut off from the cluster (0x9C)"
            connection.disconnect(ReasonCode.USE_ANOTHER_SERVER, publish_will=False)
        for session in list(core.sessions.values()):
            if session.will_timer is not None:
                core.wills.cancel_pending(session)
