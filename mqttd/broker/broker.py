"""The broker: client registry, session takeover, routing, subscriptions, retained messages.

Theory of operation. `Broker` owns what is shared between connections: the sessions by
client id, the subscriptions (subscriptions.py: the tree whose keys are `Session`
objects, values their `SubOptions`, and the shared-subscription groups of shared.py),
the retained tree, the wills (wills.py), the one `Scheduler` and the counters.
Restoring from the store is recovery.py's mapping; the broker puts what it gives back
into place (`start`). It is as free of I/O as the rest of the core: the shell calls
`connection()` per socket and drives `scheduler.run_due()`; only `start`/`stop` are
async, because they load from and flush the store. In a cluster, what other nodes do
here goes through cluster_host.py, which uses the registry's named operations
(`take_over`, `end_session`, `forget_session`, `restore`, `expire_later`).

Routing (`publish`): the tree's match for a topic is cached (a tuple that stays the same
object until a subscription changes), and so is the delivery plan built from it here:
the plan folds several matching subscriptions of one session into one delivery (3.1.1
3.3.5: the highest QoS; 5.0 3.3.4: one PUBLISH carrying every Subscription Identifier).
Each receiver's delivery follows the same rules (`Session.offer`): No Local, the
ACL's read right, QoS min(published, granted) [MQTT-3.8.4-8], retain flag 0
[MQTT-3.3.1-9] unless a 5.0 subscription asked for Retain As Published. A plan holds
sessions, so a subscription change drops the plans it can alter (subscriptions.py).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Mapping

from ..auth.enhanced import AuthMethods
from ..auth.hooks import Authenticate, Authorise, AuthResult, ConnectInfo, allow_all
from ..auth.limits import AddressRateLimiter
from ..protocol.reason_codes import ReasonCode
from ..store.base import Store, StoredMessage, StoredSession
from .backplane import Backplane
from .clock import Clock
from .cluster_host import ClusterHost
from .connection import Connection, Sink
from .dead_letter import DeadLetters, DropReason
from .delivery import MATCHED, NONE, RECORDED, REFUSED, aggregate, build_plan
from .flow import FlowControl
from .keepalive import KeepaliveLanes
from .message import Message
from .outbound import CommitWait, PublisherAck
from .recovery import message_from_stored, restore_session, set_persistent, stored_message
from .retained import RetainedMessages, RetainedTree
from .scheduler import Scheduler
from .session import Session, SubOptions
from .settings import BrokerSettings
from .shared import SharedSubscriptions, undelivered_shared
from .stats import BrokerStats
from .subscriptions import Subscriptions
from .wills import Wills

__all__ = ["Broker"]

logger = logging.getLogger("mqttd.broker")

_NEVER_EXPIRES = 0xFFFFFFFF
#: The most record heads (publisher id, QoS, retain) `start` keeps to reuse between the
#: retained messages it loads (one publisher's many messages); past it, it starts over.
_HEADS_KEPT = 10_000
_PLAN_CACHE_SIZE = 10_000


class Broker:
    """The MQTT broker core (see the module docstring)."""

    def __init__(
        self,
        settings: BrokerSettings,
        store: Store,
        clock: Clock,
        authenticate: Authenticate | None = None,
        authorise: Authorise | None = None,
        sessions_owned: bool = False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.scheduler = Scheduler(clock)
        self.keepalive = KeepaliveLanes(self.scheduler)
        self.stats = BrokerStats()
        #: Every drop point calls `dead_letters.drop(reason, ...)` (dead_letter.py).
        self.dead_letters = DeadLetters(self.stats, clock, self.scheduler, self.publish)
        #: Back-pressure: pauses publishers of saturated sessions (flow.py).
        self.flow = FlowControl(settings, self.scheduler, self.stats)
        #: The client whose QoS 1 PUBLISH is being routed (inbound.py) and its PUBACK, made
        #: by the first delivery to a persistent session that holds it (`Session._hold`).
        self.acking: Connection | None = None
        self.pending_ack: PublisherAck | None = None
        self.commit_wait = CommitWait()  # the acks of a read that wait for a commit
        self._authenticate: Authenticate = authenticate or allow_all
        #: The ACL hook (`mqttd.security`); None = everything is allowed, and the hot
        #: path pays one None check. May be replaced at run time (a reload).
        self.authorise: Authorise | None = authorise
        #: True when authentication is on: a session belongs to the user that made it.
        self.sessions_owned = sessions_owned
        #: Enhanced authentication methods by Authentication Method name (5.0 4.12):
        #: `broker.auth_methods.register("SCRAM-SHA-256", users.authenticator_factory())`.
        self.auth_methods = AuthMethods()
        self.connection_limiter: AddressRateLimiter | None = (
            AddressRateLimiter(settings.connection_rate, settings.connection_burst)
            if settings.connection_rate > 0
            else None
        )
        self._over_max_connections = False
        self._sessions: dict[str, Session] = {}
        # A dict used as a set: about 30 bytes an entry where a set takes 50-105 (its
        # table grows 4x at a time), per idle connection (docs/benchmarks.md).
        self._connections: dict[Connection, None] = {}
        #: Shared subscriptions "$share/{name}/{filter}" (shared.py).
        self.shared = SharedSubscriptions()
        #: What SUBSCRIBE and UNSUBSCRIBE change (subscriptions.py); `publish` reads its
        #: tree and plan cache directly.
        self.subscriptions = Subscriptions(settings, store, self.shared)
        self._tree = self.subscriptions.tree
        self._plans = self.subscriptions.plans
        #: Wills published, delayed and cancelled (wills.py).
        self.wills = Wills(self.scheduler, store, clock, self.stats, self.publish)
        #: Retained messages kept, cleared, persisted and sent (retained.py).
        self.retained_messages = RetainedMessages(store, clock, self.dead_letters, self.scheduler)
        self._retained: RetainedTree[Message] = self.retained_messages.tree
        self._next_message_id = 1
        self._stopping = False
        #: True in a cluster: a CONNECT's client id is claimed before its CONNACK.
        self.clustered = False
        #: The other nodes of a cluster (backplane.py); None on a single node.
        self._backplane: Backplane | None = None

    # -- life cycle --------------------------------------------------------------------

    def use_backplane(self, backplane: Backplane) -> None:
        """Join a cluster through `backplane` (before `start`); a single node keeps none."""
        if backplane.distributed:
            self._backplane = backplane
            self.clustered = True
            # Durable sessions: a store that also keeps sessions in the cluster.
            store = self.store = backplane.wrap_store(self.store)
            self.wills._store = self.retained_messages._store = store
            self.subscriptions.store = store
            self.shared.backplane = backplane
            self.subscriptions.backplane = backplane
            self.retained_messages.backplane = backplane
            self.wills.backplane = backplane
            # What other nodes do here goes through a host of its own (cluster_host.py).
            backplane.bind(ClusterHost(self, backplane))

    async def start(self) -> None:
        """Open the store and load retained messages and persistent sessions from it.

        Python's cyclic garbage collector is off while they load: the millions of objects
        a big store makes would otherwise set off full collections over and over as the
        heap grows, each walking everything loaded so far (4.4 of 10.5 s for 1,000,000
        retained messages and 100,000 sessions, docs/benchmarks.md). Loading makes
        no garbage cycles worth collecting meanwhile; the collector is back on after.
        """
        collecting = gc.isenabled()
        gc.disable()
        try:
            await self._load()
        finally:
            # Everything loaded goes to the oldest generation at once (freeze, then
            # unfreeze, moves it there without a walk). Left in the youngest, where the
            # collector's counts put it, the first collection after enabling would walk
            # every object loaded, and the next ones again as they aged.
            gc.freeze()
            gc.unfreeze()
            if collecting:
                gc.enable()

    async def _load(self) -> None:
        await self.store.open()
        now = self.clock.now()
        wall = self.clock.wall()
        # Sessions first: the memory their records took is free again (and reused) when
        # the retained messages come, so the two do not add up in the peak.
        state = await self.store.load(retained=False)
        if state.messages:
            self._next_message_id = max(state.messages) + 1
        messages: dict[int, Message] = {}
        for mid, stored in state.messages.items():
            message = message_from_stored(stored, now, wall)
            message.store_id = mid
            messages[mid] = message
        ended: list[Session] = []
        options: dict[tuple[int, bool, bool, int, int | None], SubOptions] = {}
        place = self.subscriptions.restoring()  # one tree walk per distinct filter
        # Each record is let go once its session is made, so the two never all coexist.
        stored_sessions = state.sessions
        state.sessions = []
        stored_sessions.reverse()
        while stored_sessions:
            stored_session = stored_sessions.pop()
            session, will_delay = self.restore(stored_session, messages, now, wall, options, place)
            if will_delay is not None and self.clustered:
                # The cluster's wills bucket has it: the survivors, or this node once
                # started, publish it from there, once (cluster/nodes.py).
                session.pending_will = None
            elif will_delay is not None:
                session.will_timer = self.scheduler.call_later(
                    will_delay,
                    lambda s=session: self.wills.publish_pending(s),  # type: ignore[misc]
                )
            remaining = session.expiry_interval
            disconnected_at = stored_session.disconnected_at
            if disconnected_at is None:
                # Connected when the process stopped: the countdown starts now.
                self.save_session(session, wall)
            elif remaining != _NEVER_EXPIRES:
                remaining = int(remaining - max(0.0, wall - disconnected_at))
            if remaining != _NEVER_EXPIRES:
                if remaining <= 0:
                    ended.append(session)
                    continue
                # Not `expire_later`: this lambda shares the frame's `self` cell, 40 bytes
                # less per session than a call's own closure (100,000 sessions at start).
                session.expiry_timer = self.scheduler.call_later(
                    remaining,
                    lambda s=session: self._expire_session(s),  # type: ignore[misc]
                )
        del state, messages, place  # its memo: one entry per distinct filter
        # Retained messages a chunk at a time, straight from the store's rows into the
        # tree: a million of them is a real case (docs/benchmarks.md, start-up).
        heads: dict[tuple[str | None, int, int], bytes] = {}  # see `from_rows`
        from_rows = self.retained_messages.from_rows
        async for rows in self.store.retained_rows():
            self._retained.load(from_rows(rows, now, wall, heads))
            if len(heads) > _HEADS_KEPT:
                heads.clear()  # publishers that do not repeat: the dict would only grow
        # After the retained messages: the wills of these sessions may retain newer ones.
        for session in ended:
            self.stats.sessions_expired += 1
            self.end_session(session, DropReason.SESSION_EXPIRED)
        logger.info(
            "loaded %d retained messages and %d persistent sessions",
            len(self._retained),
            len(self._sessions),
        )

    def restore(
        self,
        stored: StoredSession,
        messages: dict[int, Message],
        now: float,
        wall: float,
        options: dict[tuple[int, bool, bool, int, int | None], SubOptions] | None = None,
        subscribe: Callable[[Session, str, SubOptions], object] | None = None,
    ) -> tuple[Session, float | None]:
        """A persistent session from its record (recovery.py), put in the registry with
        its subscriptions in the trees (`subscribe`, default `Subscriptions.restore`);
        and the delay left of its pending will."""
        subscribe = subscribe or self.subscriptions.restore
        session, will_delay = restore_session(self, stored, messages, now, wall, subscribe, options)
        self._sessions[session.client_id] = session
        return session, will_delay

    async def stop(self) -> None:
        """DISCONNECT 0x8B to 5.0 clients, close every connection, flush the store.

        Wills are not published for a shutdown; persistent sessions and pending
        delayed wills stay in the store for the next start.
        """
        self._stopping = True
        for connection in list(self._connections):
            connection.disconnect(ReasonCode.SERVER_SHUTTING_DOWN, publish_will=False)
        self.dead_letters.flush()  # the scheduler runs no more: publish what waits
        await self.store.close()

    def connection(
        self, sink: Sink, peer: str, listener: str = "tcp", identity: str | None = None
    ) -> Connection:
        """A new connection for a socket (the shell calls this on accept).

        `identity` is the Common Name of a verified TLS client certificate. Over
        `settings.max_connections` the connection is closed at once.
        """
        connection = Connection(self, sink, peer, listener, identity)
        limit = self.settings.max_connections
        if limit and len(self._connections) >= limit:
            self.stats.connections_refused += 1
            if not self._over_max_connections:
                self._over_max_connections = True
                logger.warning("max_connections (%d) reached: refusing new connections", limit)
            connection.disconnect(ReasonCode.SERVER_BUSY, publish_will=False)
            return connection
        self._over_max_connections = False
        self._connections[connection] = None
        return connection

    # -- read-only views ---------------------------------------------------------------

    @property
    def sessions(self) -> Mapping[str, Session]:
        """Every session by client id (connected or not)."""
        return self._sessions

    @property
    def connections(self) -> frozenset[Connection]:
        """Every open connection."""
        return frozenset(self._connections)

    @property
    def retained(self) -> RetainedTree[Message]:
        """The retained messages."""
        return self._retained

    def refresh_gauges(self) -> BrokerStats:
        """Fill the gauge fields of `stats` from the current state, and return it."""
        stats = self.stats
        stats.sessions = len(self._sessions)
        stats.subscriptions = sum(len(s.subscriptions) for s in self._sessions.values())
        # Retained messages of clients: the broker's own $SYS values are not counted.
        stats.retained_messages = len(self._retained) - self._retained.count_prefix("$SYS/")
        stats.messages_inflight = sum(len(s.inflight) for s in self._sessions.values())
        stats.messages_queued = sum(s.queue_length for s in self._sessions.values())
        return stats

    # -- operator actions (the admin API) -----------------------------------------------

    def kick(self, client_id: str, discard_session: bool = False) -> bool:
        """Disconnect `client_id` for an operator; True if it had a connection or session.

        A 5.0 client gets DISCONNECT 0x98 (Administrative action); its will is published
        as for any server-side disconnect. With `discard_session` its session ends too,
        even a persistent one (queued messages are dropped as an expired session's).
        """
        session = self._sessions.get(client_id)
        if session is None:
            return False
        connection = session.connection
        if connection is not None:
            connection.close_reason = "kicked by an operator (0x98)"
            connection.disconnect(ReasonCode.ADMINISTRATIVE_ACTION, publish_will=True)
        if discard_session and self._sessions.get(client_id) is session:
            self.end_session(session, DropReason.SESSION_EXPIRED)
        return True

    def delete_retained(self, topic: str) -> bool:
        """Forget the message retained for `topic` (memory and store); True if there was one.

        Unlike an empty retained PUBLISH, nothing is routed to subscribers; in a cluster
        every node forgets it.
        """
        if self._retained.get(topic) is None:
            return False
        self.retained_messages.delete(topic)
        return True

    # -- called by Connection ----------------------------------------------------------

    def authenticate(self, info: ConnectInfo) -> AuthResult:
        """Ask the authentication hook about a CONNECT."""
        return self._authenticate(info)

    def session_owned_by_other(self, client_id: str, username: str | None) -> bool:
        """True when authentication is on and `client_id`'s session belongs to another user.

        Such a CONNECT neither takes the session over nor ends it, clean start or not.
        """
        if not self.sessions_owned:
            return False
        session = self._sessions.get(client_id)
        return session is not None and session.username != username

    def open_session(
        self, connection: Connection, client_id: str, clean_start: bool, expiry_interval: int
    ) -> tuple[Session, bool]:
        """Find or create the session for an accepted CONNECT; return (session, present).

        Takes over a connection already using the client id [MQTT-3.1.4-3]. A session is
        resumed only when it outlives connections and the client did not ask for a clean
        start [MQTT-3.2.2-2]; otherwise it ends and a new one starts.
        """
        session = self._sessions.get(client_id)
        if session is not None:
            old = session.connection
            if old is not None:
                self.take_over(old, session)
            if session.will_timer is not None:
                # A new connection within the Will Delay Interval cancels the will.
                self.wills.cancel_pending(session)
            if session.expiry_timer is not None:
                session.expiry_timer.cancel()
                session.expiry_timer = None
            if clean_start or not session.persistent:
                # Messages a clean start discards were discarded by their own client.
                dropped = None if clean_start else DropReason.SESSION_EXPIRED
                self.end_session(session, dropped, release=False)  # the new one keeps the id
                session = None
        present = session is not None and connection.protocol_level != 3
        if session is None:
            session = Session(self, client_id, connection.protocol_level)
            self._sessions[client_id] = session
        session.username = connection.username
        session.protocol_level = connection.protocol_level
        session.expiry_interval = expiry_interval
        set_persistent(session, expiry_interval > 0, self.store, self.save_session)
        connection.session = session
        return session, present

    def claim_before_connack(
        self, client_id: str, clean_start: bool, answered: Callable[[int], None]
    ) -> bool:
        """In a cluster, claim `client_id` for a CONNECT: True, and `answered(code)` once
        decided (0: owned; else the CONNACK's refusal); False on a single node."""
        if self._backplane is not None:
            self._backplane.claim_client_id(client_id, clean_start, answered)
        return self._backplane is not None

    def take_over(self, old: Connection, session: Session) -> None:
        """A new connection (here or, in a cluster, on another node) takes `session`
        over: DISCONNECT 0x8E to `old`, and its will published unless it waits."""
        self.stats.takeovers += 1
        if logger.isEnabledFor(logging.INFO):
            logger.info("client %r connected again: closing its old connection", session.client_id)
        will = old.will
        # 3.x (Mosquitto) and 5.0 without a delay publish the old will now; a delayed
        # will is cancelled by the new connection (5.0 3.1.2.5).
        publish = will is not None and (old.protocol_level != 5 or old.will_delay == 0)
        old.will = None
        old.session = None
        session.detach()
        old.disconnect(ReasonCode.SESSION_TAKEN_OVER, publish_will=False)
        if publish and will is not None:
            self.wills.publish(will)

    def save_session(self, session: Session, disconnected_at: float | None) -> None:
        """Record a persistent session's own fields, and its owner when sessions are owned."""
        if session.username is None or not self.sessions_owned:
            # The owner only matters with authentication on; None is the parameter's
            # default, so a store that keeps no owner works without it.
            self.store.save_session(
                session.client_id, session.protocol_level, session.expiry_interval, disconnected_at
            )
        else:
            self.store.save_session(
                session.client_id,
                session.protocol_level,
                session.expiry_interval,
                disconnected_at,
                session.username,
            )

    def set_session_expiry(self, session: Session, expiry_interval: int) -> None:
        """A 5.0 DISCONNECT changed the Session Expiry Interval (3.14.2.2.2)."""
        expiry_interval = min(expiry_interval, self.settings.max_session_expiry_interval)
        session.expiry_interval = expiry_interval
        set_persistent(session, expiry_interval > 0, self.store, self.save_session)

    def connection_closed(
        self, connection: Connection, was_connected: bool, publish_will: bool
    ) -> None:
        """A connection ended: detach its session, publish or schedule its will."""
        self._connections.pop(connection, None)
        if was_connected:
            self.stats.clients_connected -= 1
        session = connection.session
        will = connection.will
        connection.session = None
        connection.will = None
        if session is None:
            return
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "client %r disconnected from %s (%s)",
                session.client_id,
                connection.peer,
                connection.close_reason,
            )
        session.detach()
        if session.persistent:
            self.save_session(session, self.clock.wall())
        if self._stopping:
            if not session.persistent:
                self.end_session(session, DropReason.SESSION_EXPIRED)
            return
        if will is not None and publish_will:
            self.wills.connection_ended(session, will, connection.will_delay)
        if self._backplane is not None and session.pending_will is None:
            self._backplane.will_settled(session.client_id)
        if not session.persistent:
            self.end_session(session, DropReason.SESSION_EXPIRED)
        elif session.expiry_interval != _NEVER_EXPIRES:
            self.expire_later(session, session.expiry_interval)

    # -- sessions ending -----------------------------------------------------------------

    def expire_later(self, session: Session, delay: float) -> None:
        """End `session` in `delay` seconds unless a client resumes it first."""
        session.expiry_timer = self.scheduler.call_later(
            delay, lambda: self._expire_session(session)
        )

    def _expire_session(self, session: Session) -> None:
        session.expiry_timer = None
        if session.connection is not None or self._sessions.get(session.client_id) is not session:
            return
        self.stats.sessions_expired += 1
        if logger.isEnabledFor(logging.INFO):
            logger.info("session %r expired", session.client_id)
        self.end_session(session, DropReason.SESSION_EXPIRED)

    def end_session(
        self, session: Session, dropped: DropReason | None = None, release: bool = True
    ) -> None:
        """The session is over: publish a pending will, drop subscriptions and messages.

        `dropped`: the reason its undelivered messages are counted (and dead-lettered)
        under; None when its own client asked for them to go (clean start). `release`:
        give the client id up in the cluster (not when a new connection keeps it).
        """
        if session.expiry_timer is not None:
            session.expiry_timer.cancel()
            session.expiry_timer = None
        if session.will_timer is not None:
            self.wills.publish_pending(session)
        shared = undelivered_shared(session) if self.shared.groups else None
        for topic_filter in session.subscriptions:
            self.subscriptions.remove(session, topic_filter)
        session.subscriptions.clear()
        if shared:
            self.shared.hand_over(session, shared, self.authorise)
        if dropped is not None and (session.inflight or session.queue_length):
            drops = self.dead_letters
            drops.drop_session(dropped, session.client_id, session.inflight.values())
            drops.drop_session(dropped, session.client_id, session.queue)
        session.clear()
        if self._sessions.get(session.client_id) is session:
            del self._sessions[session.client_id]
            if self._backplane is not None and release:
                self._backplane.release_client_id(session.client_id)
        if session.persistent:
            session.persistent = False
            self.store.delete_session(session.client_id)

    def forget_session(self, session: Session) -> None:
        """The session lives on another node now: forget it here only (no will, no dead
        letters, no release of the client id, nothing handed to other group members)."""
        if session.expiry_timer is not None:
            session.expiry_timer.cancel()
            session.expiry_timer = None
        if session.will_timer is not None:
            self.wills.cancel_pending(session)
        for topic_filter in session.subscriptions:
            self.subscriptions.remove(session, topic_filter)
        session.subscriptions.clear()
        session.clear()
        if self._sessions.get(session.client_id) is session:
            del self._sessions[session.client_id]
        if session.persistent:
            session.persistent = False
            self.store.delete_session(session.client_id)

    # -- routing -----------------------------------------------------------------------

    def next_message_id(self) -> int:
        """A fresh id for a message recorded in the store."""
        mid = self._next_message_id
        self._next_message_id = mid + 1
        return mid

    def outgoing_qos(self, granted: int, message: Message) -> int:
        """The QoS of one delivery: min(granted, published) [MQTT-3.8.4-8], or the
        granted QoS with upgrade_outgoing_qos (Mosquitto's non-standard option)."""
        return granted if self.settings.upgrade_outgoing_qos else min(granted, message.qos)

    def publish(
        self, message: Message, origin: Session | None = None, from_node: bool = False
    ) -> int:
        """Route `message` to every matching session; retain it if asked.

        `origin` is the publishing client's session (None for wills, bridges, $SYS).
        Returns `delivery.Delivery` bits: RECORDED means the publisher's acknowledgement
        must wait for `store.after_commit`. `from_node`: another node of the cluster
        published it (`publish_from_node`).
        """
        if message.topic[:5] != "$SYS/":
            # Client traffic only: the broker's own $SYS figures are not "routed messages".
            self.stats.messages_routed += 1
        # Whom to pause if a receiver is saturated (flow.py); cleared before returning.
        flow = self.flow
        flow.publisher = origin.connection if origin is not None else None
        flags = NONE
        if self._backplane is not None and not from_node:
            # First, so that a message the cluster cannot carry goes nowhere.
            carried = self._backplane.publish(message)
            if carried is None:
                flow.publisher = None
                self._refuse_too_large(origin)
                return REFUSED
            # Other nodes may hold matching subscriptions: never "no subscribers" (0x10);
            # stored in the cluster (True): the ack waits for it too.
            flags = MATCHED | RECORDED if carried else MATCHED
        if message.retain and not from_node and self.retained_messages.retain(message):
            flags |= RECORDED
        topic = message.topic
        matches = self._tree.match(topic)
        # The ACL's read right, per receiver and topic (cached by the hook); None = no ACL.
        authorise = self.authorise
        if matches:
            flags |= MATCHED
            if len(matches) == 1:
                session, options = matches[0]
                if session.offer(message, options, authorise):
                    flags |= RECORDED
            else:
                cached = self._plans.get(topic)
                if cached is None or cached[0] is not matches:
                    if len(self._plans) >= _PLAN_CACHE_SIZE:
                        self._plans.clear()
                    cached = self._plans[topic] = (matches, build_plan(matches))
                singles, multiples = cached[1]
                for session, options in singles:
                    if session.offer(message, options, authorise):
                        flags |= RECORDED
                for session, all_options in multiples:
                    aggregated = aggregate(session, all_options, message)
                    if aggregated is not None and session.offer(message, aggregated, authorise):
                        flags |= RECORDED
        # In a cluster the backplane picks the group member (`deliver_shared_from_node`).
        if self.shared.groups and self._backplane is None:
            flags |= self.shared.publish(message, authorise)
        flow.publisher = None
        return flags

    @staticmethod
    def _refuse_too_large(origin: Session | None) -> None:
        """The backplane refused a message larger than the cluster carries (it logged
        why): its publisher is disconnected as for a packet above the Maximum Packet
        Size, 0x95 for 5.0, the socket closed for 3.x (docs/cluster.md, "Large messages")."""
        connection = origin.connection if origin is not None else None
        if connection is not None:
            connection.disconnect(
                ReasonCode.PACKET_TOO_LARGE, reason="message larger than the cluster carries"
            )

    # -- retained messages ---------------------------------------------------------------

    def deliver_retained(self, session: Session, topic_filter: str, options: SubOptions) -> None:
        """Send the retained messages matching a new subscription, with retain=1."""
        if len(self._retained):
            self.retained_messages.deliver(session, topic_filter, options, self.authorise)

    # -- persistence helpers -------------------------------------------------------------

    def stored_message(self, message: Message) -> StoredMessage:
        """The store's record of `message` (recovery.py's mapping, with this clock)."""
        return stored_message(message, self.clock)
