"""The Backplane on NATS with JetStream: one node's link to the others (docs/cluster.md).

Theory of operation. The core calls this object synchronously (`mqttd.broker.backplane`
says when); nothing here blocks it. Work for NATS goes into two queues:

- the *outbox* (`_send_loop`): messages to publish and NATS SUB/UNSUB changes, in the
  order the core made them, so a subscription is asked for before any later message.
  nats-py buffers these writes and flushes them in batches; no task per message.
- the *requests* (`requests.KeyedRequests`): JetStream requests, which take a round
  trip or more each: client-id claims and releases, will entries, retained sets and
  clears. Those of one client id (or one retained topic) run one at a time, in order,
  so a claim is answered before the release that follows it; those of different keys
  run at the same time (up to `MAX_IN_FLIGHT`), so a storm of CONNECTs is not served
  one round trip at a time and a slow takeover holds up its own client id only. A
  request that fails because NATS or JetStream is away (or still recovering after a
  restart) is tried again in place for up to 30 s, so its key's order holds.

Routing is interest-based on core NATS (at most once, like QoS 0 on a network). With
durable sessions a QoS 1/2 message published here is also written to JetStream's
messages stream, and its PUBACK waits for that (`publish` returns True; durable.py).
When this node's link to NATS broke (or nats-py dropped messages), `catchup.CatchUp`
routes what core NATS lost from that stream; `_seen` (seen.py) lets each id through once.
A filter held here is counted
(`interest_added`/`interest_removed`); its first holder subscribes its subjects
(`subjects.filter_to_subjects`, counted per subject too), its last one unsubscribes.
A SUBSCRIBE whose subjects are new waits for nats-server to confirm them: a probe
request after the SUBs, on their connection (`interest_pending`, interest.py).
Every message published here goes to its topic's subject; NATS forwards it only to nodes
subscribed to a matching subject, and never back to this connection (`no_echo`). A node
whose subscriptions overlap (`a/#` and `a/+`) gets one copy per matching NATS
subscription; the envelope's (boot, seq) id lets it route the first copy only, through
its own topic tree, which delivers once per local subscription.

Shared subscriptions: a node with members of "$share/{share}/{filter}" queue-subscribes
the filter's subjects in one NATS queue group per (share, filter), so NATS hands each
message to one node of the group; that node's core picks one of its members
(`BackplaneHost.deliver_shared_from_node`). These subscriptions use a second connection
without `no_echo`, so a node's own messages reach its own members through NATS too, and
local members compete with remote ones. The core never picks shared members itself when
a backplane is present. With durable sessions the queue groups carry QoS 0 messages
only: QoS 1/2 ones come from the group's JetStream consumers (shares.py), which give a
dead node's unacknowledged messages to another member.

Client ids live in the KV bucket `mqttd_<cluster>_clients`: a claim reads the key and
writes it with compare-and-set on the revision it read (create when absent); the new
revision is the claim's fencing token (`ClientIdClaims`). When the previous owner was
another node, that node is asked on its subject `mqttd.<cluster>.node.<node>.takeover`
and closes its connection with 0x8E; with durable sessions the claim waits for its
answer, reads the session's log and hands the session to the core (sessions.py). Only
then is the claim answered, and the CONNACK goes out. A release deletes the key only
at our revision.

Retained messages live in the KV bucket `mqttd_<cluster>_retained`, one key per topic
(history 1: the last message per subject), as envelopes; a clear writes a "cleared"
envelope, so a node that was away learns of clears too. Every node watches the bucket
and keeps its own retained tree in step (`BackplaneHost.retained_from_node`), skipping
its own changes; start-up waits for the bucket's current contents before listeners open.

With durable sessions, a node that starts on its own store (SQLite) first drops the
sessions the cluster holds elsewhere or ended (`_drop_stale_sessions`), and later a
copy it kept, when another node takes its client id (`_on_notice`).

Liveness, the self-fence and the wills of dead nodes are `nodes.NodeLiveness`'s: this
module writes a client's will to the bucket `mqttd_<cluster>_wills` right after its
claim (the same request, so in the client id's order), and drops it when the core says
the will is settled (the client id's order too).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats
from nats import errors as nats_errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import KeyValueConfig
from nats.js.errors import (
    BadRequestError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from ..broker.backplane import BackplaneHost, ClientIdClaims
from ..broker.clock import Clock
from ..broker.message import Message
from ..config import ClusterConfig
from ..protocol.reason_codes import ReasonCode
from ..store.base import Store, StoredState
from .catchup import MAX_HELD, CatchUp
from .durable import DurableStore, SessionLog
from .envelope import (
    Envelope,
    EnvelopeError,
    decode_envelope,
    encode_envelope,
    envelope_qos,
)
from .interest import InterestConfirmations
from .limits import fits, packet_limit
from .nodes import NodeLiveness
from .requests import KeyedRequests
from .seen import SeenIds
from .sessions import SessionMover
from .shares import SharedConsumers
from .subjects import (
    filter_to_subjects,
    long_subject,
    subject_prefix,
    topic_matches,
    topic_to_subject,
)

__all__ = ["BackplaneError", "ClusterStats", "NatsBackplane", "default_node_name"]

logger = logging.getLogger("mqttd.cluster")

#: Messages waiting for NATS at most; more are dropped (and counted) while NATS is away.
MAX_OUTBOX = 100_000
_CLAIM_ATTEMPTS = 16
#: How long a JetStream request is tried again while NATS or JetStream is away, seconds.
_RETRY_FOR = 30.0
#: Bounds of `stop`, seconds: the queued requests, then each closing step.
_STOP_DRAIN = 1.5
_STOP_STEP = 0.5
_SUBJECT_CACHE = 10_000
#: Claims read at once when a node checks the sessions of its store at start.
_STALE_BATCH = 64

_PUB, _SUB, _UNSUB = 0, 1, 2


class BackplaneError(Exception):
    """The cluster cannot start: NATS unreachable, JetStream missing, a bucket refused."""


@dataclass(slots=True)
class ClusterStats:
    """Counters of one node's traffic with the others (for $SYS and /metrics)."""

    routed_out: int = 0
    routed_in: int = 0
    duplicates: int = 0
    dropped: int = 0
    claims: int = 0
    takeovers_sent: int = 0
    takeovers_received: int = 0
    retained_updates_in: int = 0
    shared_in: int = 0
    #: Messages refused as larger than NATS carries (their publishers disconnected).
    too_large: int = 0


def default_node_name() -> str:
    """The host name, reduced to the characters a subject token and a KV key allow."""
    name = socket.gethostname() or "node"
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in name)


def _client_key(client_id: str) -> str:
    # The order key of a client id's requests (claim, release, will entry).
    return "c" + client_id


def _retained_key(topic: str) -> str:
    # The order key of a retained topic's writes.
    return "r" + topic


def _kv_key(name: str) -> str:
    # KV keys allow few characters and NATS lines are bounded: a fixed-size digest.
    return hashlib.sha256(name.encode()).hexdigest()


class NatsBackplane:
    """The Backplane of one node of a cluster over NATS (see the module docstring)."""

    distributed = True

    def __init__(
        self,
        config: ClusterConfig,
        clock: Clock,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.tls = tls
        self.node = config.node or default_node_name()
        #: This process's incarnation: message ids are (boot, seq).
        self.boot = secrets.randbits(63)
        self.stats = ClusterStats()
        self.claims = ClientIdClaims()
        self.interest: dict[str, int] = {}
        self._prefix = subject_prefix(config.name)
        self._long = long_subject(config.name)
        self._takeover_prefix = f"mqttd.{config.name}.node."
        self._subject_refs: dict[str, int] = {}
        self._subs: dict[str, Subscription] = {}
        self._subjects: dict[str, str | None] = {}
        self._seq = 0
        #: Ids of the messages routed here: the second copy (overlapping subscriptions,
        #: a catch-up's replay) is dropped.
        self._seen = SeenIds()
        #: Live messages kept back while a catch-up replays what came before (catchup.py).
        self._held: list[bytes] | None = None
        #: When the link to NATS broke (wall clock), until the catch-up after it starts.
        self._broken_at: float | None = None
        self.catch_up: CatchUp | None = None
        self._outbox: deque[tuple[int, str, bytes]] = deque()
        #: New NATS subscriptions until nats-server confirms them, and the SUBACKs
        #: that wait for that (interest.py).
        self._interest = InterestConfirmations(self._probe, config.request_timeout)
        self._probe_subject = f"{self._takeover_prefix}{self.node}.probe"
        #: Shared groups to join (True) or leave on NATS, in order: (join, share, filter).
        self._share_ops: deque[tuple[bool, str, str]] = deque()
        self._share_subs: dict[tuple[str, str], list[Subscription]] = {}
        #: JetStream requests: in order per client id or retained topic, else concurrent.
        self.requests = KeyedRequests()
        #: Takeover answers on their way (each waits for the session's records stored).
        self._answers: set[asyncio.Task[None]] = set()
        self._outbox_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._host: BackplaneHost | None = None
        #: False once the node is stopping: what other nodes send is ignored from then on.
        self._inbound = True
        self._nc: NATS | None = None
        #: The connection of the shared groups' queue subscriptions: it receives this
        #: node's own messages too (no no_echo), so local members compete fairly.
        self._shared_nc: NATS | None = None
        self._clients: KeyValue | None = None
        self._retained: KeyValue | None = None
        self._nodes: KeyValue | None = None
        #: Durable sessions (`[cluster] durable_sessions`): durable.py, sessions.py.
        self.sessions_move = config.durable_sessions
        self._durable_store: DurableStore | None = None
        self.mover: SessionMover | None = None
        #: Shared groups' QoS 1/2 messages from JetStream (shares.py; durable sessions).
        self.shares: SharedConsumers | None = None
        #: Heartbeats, self-fence and dead nodes' wills (nodes.py); set by `start`.
        self.liveness: NodeLiveness | None = None
        #: The last heartbeat's round trip to JetStream, seconds; -1 = not yet.
        self.rtt = -1.0
        #: Sessions restored from the node's store that the cluster held elsewhere.
        self.stale_sessions_dropped = 0
        #: NATS's max_payload as the server said when this node connected (bytes; 0
        #: before), and the largest MQTT packet that fits it (limits.py): the broker's
        #: effective max_packet_size in a cluster.
        self.max_payload = 0
        self.packet_limit = 0

    # -- the Backplane interface (called by the core) ---------------------------------

    @property
    def host(self) -> BackplaneHost:
        """The core bound to this node."""
        if self._host is None:
            raise RuntimeError("backplane not bound to a broker")
        return self._host

    def bind(self, host: BackplaneHost) -> None:
        """Attach the core that messages and notices from other nodes go to."""
        self._host = host

    def interest_added(self, topic_filter: str) -> None:
        """One more subscription on `topic_filter` here; the first subscribes on NATS."""
        count = self.interest.get(topic_filter, 0)
        self.interest[topic_filter] = count + 1
        if count:
            return
        for subject in filter_to_subjects(topic_filter, self._prefix):
            refs = self._subject_refs.get(subject, 0)
            self._subject_refs[subject] = refs + 1
            if not refs:
                self._interest.subscribing(subject)
                self._queue(_SUB, subject, b"")

    def interest_removed(self, topic_filter: str) -> None:
        """One subscription fewer on `topic_filter`; the last one unsubscribes on NATS."""
        count = self.interest.get(topic_filter, 0)
        if count > 1:
            self.interest[topic_filter] = count - 1
            return
        if self.interest.pop(topic_filter, None) is None:
            return
        for subject in filter_to_subjects(topic_filter, self._prefix):
            refs = self._subject_refs.get(subject, 0)
            if refs <= 1:
                self._subject_refs.pop(subject, None)
                self._interest.unsubscribing(subject)
                self._queue(_UNSUB, subject, b"")
            else:
                self._subject_refs[subject] = refs - 1

    def interest_pending(self, topic_filters: Sequence[str], confirmed: Callable[[], None]) -> bool:
        """True while a subject of `topic_filters` waits for nats-server to confirm its
        SUB (interest.py): `confirmed()` comes then, or after `request_timeout`."""
        prefix = self._prefix
        subjects = [s for f in topic_filters for s in filter_to_subjects(f, prefix)]
        return self._interest.wait(subjects, confirmed)

    async def _probe(self) -> None:
        # One round trip after the SUBs sent so far, on their connection: nobody
        # answers the probe subject, so nats-server says "no responders" at once.
        nc = self._nc
        if nc is None:
            raise nats_errors.ConnectionClosedError
        with contextlib.suppress(nats_errors.NoRespondersError):
            await nc.request(self._probe_subject, b"", timeout=self.config.request_timeout)

    def share_added(self, share: str, topic_filter: str) -> None:
        """This node has members of the group: join its NATS queue group."""
        self._share_ops.append((True, share, topic_filter))
        self._outbox_wake.set()

    def share_removed(self, share: str, topic_filter: str) -> None:
        """This node's last member of the group left: leave its NATS queue group."""
        self._share_ops.append((False, share, topic_filter))
        self._outbox_wake.set()

    def publish(self, message: Message) -> bool | None:
        """Send a message published here to the nodes subscribed to its subject; True
        when a QoS 1/2 copy goes to JetStream too (durable sessions: the ack waits);
        None when it is too large for NATS (limits.py): the core refuses it."""
        topic = message.topic
        if topic.startswith("$SYS/"):
            return False  # each node's own figures
        subjects = self._subjects
        subject = subjects.get(topic, "")
        if subject == "":
            if len(subjects) >= _SUBJECT_CACHE:
                subjects.clear()
            subject = subjects[topic] = topic_to_subject(topic, self._prefix)
        data = self._encode(message)
        if data is None:
            return False
        nc = self._nc
        if nc is not None and not fits(len(data), nc.max_payload, self.node):
            self._too_large(message, len(data), nc.max_payload)
            return None
        if len(self._outbox) >= MAX_OUTBOX:
            self.stats.dropped += 1
            return False
        self.stats.routed_out += 1
        self._queue(_PUB, subject or self._long, data)
        store = self._durable_store
        if store is not None and message.qos and store.log is not None:
            message_id = f"{self.node}.{self.boot}.{self._seq}"
            store.current = (message.payload, message_id)
            log = store.log
            stream_subject = (
                log.message_prefix + subject[len(self._prefix) :] if subject else log.message_long
            )
            log.write_message(stream_subject, data, message_id)
            return True
        return False

    def _too_large(self, message: Message, size: int, max_payload: int) -> None:
        self.stats.too_large += 1
        logger.warning(
            "cluster: a message on %r from client %r refused, its client disconnected"
            " (0x95): its envelope of %d bytes and its copies do not fit NATS's"
            " max_payload of %d bytes (the cluster's largest packet is %d bytes)",
            message.topic,
            message.origin,
            size,
            max_payload,
            self.packet_limit,
        )

    def wrap_store(self, store: Store) -> Store:
        """With durable sessions, the store that also writes sessions to JetStream."""
        if not self.sessions_move:
            return store
        self._durable_store = DurableStore(store)
        return self._durable_store

    @property
    def peers(self) -> list[str]:
        """The nodes whose heartbeat is fresh, this one included (refreshed each beat)."""
        return self.liveness.peers if self.liveness is not None else []

    def claim_client_id(
        self, client_id: str, clean_start: bool, answered: Callable[[int], None]
    ) -> None:
        """A client connects here: claim its id in the KV bucket (fenced by revision),
        bring its session over (sessions.py), then `answered(0)`, or the CONNACK reason code
        that refuses the client here."""
        liveness = self.liveness
        if liveness is not None and liveness.fenced:
            # Cut off from NATS: no claim (it would take the client from where it is now).
            asyncio.get_running_loop().call_soon(self.host.node_fenced)
            answered(ReasonCode.USE_ANOTHER_SERVER)
            return
        self.claims.claiming(client_id)
        self._submit(
            _client_key(client_id),
            lambda: self._claim(client_id, clean_start, answered),
            lambda: self._claim_given_up(client_id, answered),
        )

    def release_client_id(self, client_id: str) -> None:
        """The session of `client_id` ended here: delete its key if our claim holds it."""
        self._submit(
            _client_key(client_id),
            lambda: self._release(client_id),
            lambda: self._forget(client_id),
        )

    def will_settled(self, client_id: str) -> None:
        """The will of `client_id` is no longer due: drop it from the wills bucket."""
        liveness = self.liveness
        if liveness is not None:
            self._submit(_client_key(client_id), lambda: liveness.drop_will(client_id))

    def retained_set(self, message: Message) -> None:
        """Record the new retained message of its topic in the bucket."""
        if message.topic.startswith("$SYS/"):
            return
        data = self._encode(message)
        if data is not None:
            topic = message.topic
            self._submit(_retained_key(topic), lambda: self._put_retained(topic, data))

    def retained_clear(self, topic: str) -> None:
        """Record in the bucket that `topic` has no retained message any more."""
        if topic.startswith("$SYS/"):
            return
        envelope = Envelope(topic, b"", 0, True, None, None, self.node, self.boot, 0)
        envelope.cleared = True
        data = encode_envelope(envelope)
        self._submit(_retained_key(topic), lambda: self._put_retained(topic, data))

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to NATS, open the buckets, load the retained messages, start the tasks.

        Raises `BackplaneError` when NATS cannot be reached within `connect_timeout`
        or JetStream refuses the buckets.
        """
        config = self.config
        try:
            self._nc = await asyncio.wait_for(
                nats.connect(**self._connect_options()), config.connect_timeout
            )
        except (TimeoutError, OSError, nats_errors.Error) as exc:
            raise BackplaneError(
                f"cannot reach NATS at {', '.join(config.urls)}: {exc or type(exc).__name__}"
            ) from exc
        nc = self._nc
        self.max_payload = nc.max_payload
        self.packet_limit = packet_limit(nc.max_payload, self.node)
        try:
            options = self._connect_options(main=False)
            options["no_echo"] = False
            options["name"] += " (shared)"
            self._shared_nc = await asyncio.wait_for(
                nats.connect(**options), config.connect_timeout
            )
            js = nc.jetstream(timeout=config.request_timeout)
            base = f"mqttd_{config.name}"
            self._clients = await self._bucket(js, f"{base}_clients")
            self._retained = await self._bucket(js, f"{base}_retained")
            # Heartbeats go on the second connection, which carries no messages from this
            # node: on the first they would wait behind its outgoing traffic.
            assert self._shared_nc is not None
            beat_js = self._shared_nc.jetstream(timeout=config.request_timeout)
            self._nodes = await self._bucket(beat_js, f"{base}_nodes", ttl=config.node_timeout)
            wills = await self._bucket(js, f"{base}_wills")
            self.liveness = NodeLiveness(
                config,
                self.node,
                self._nodes,
                wills,
                self._clients,
                lambda: self.host,
                self._will_message,
            )
            log = None
            if self._durable_store is not None:
                log = SessionLog(
                    nc,
                    js,
                    config.name,
                    self.node,
                    self.boot,
                    lambda client_id: self.claims.token(client_id) is not None,
                    config.request_timeout,
                    config.replicas,
                    config.message_retention,
                )
                await log.open()
                self._durable_store.log = log
                self.shares = SharedConsumers(
                    self._shared_nc,
                    beat_js,
                    log,
                    lambda: self.host,
                    self._message,
                    self._routing,
                    config.shared_ack_wait,
                )
                self.shares.start()
                self.catch_up = CatchUp(log, self, 2 * config.request_timeout, log.replay_margin)
            self.mover = SessionMover(nc, log, self._takeover_prefix, config.request_timeout)
            if log is not None and self._host is not None:
                await self._drop_stale_sessions(log)
            await nc.subscribe(self._takeover_prefix + self.node + ".takeover", cb=self._on_notice)
            await nc.subscribe(self._long, cb=self._on_message)
            await self.liveness.start()
            self.requests.start()
            loaded = asyncio.get_running_loop().create_future()
            self._tasks = [
                asyncio.create_task(self._watch_retained(loaded), name="mqttd-cluster-retained"),
                asyncio.create_task(self._send_loop(), name="mqttd-cluster-send"),
                asyncio.create_task(self._heartbeat_loop(), name="mqttd-cluster-heartbeat"),
                asyncio.create_task(self.liveness.watchdog(), name="mqttd-cluster-fence"),
                asyncio.create_task(self.liveness.survey_loop(), name="mqttd-cluster-survey"),
            ]
            await asyncio.wait_for(loaded, config.connect_timeout + config.request_timeout)
            await nc.flush(timeout=max(1, int(config.request_timeout)))
        except BackplaneError:
            await self.stop()
            raise
        except (TimeoutError, OSError, nats_errors.Error) as exc:
            await self.stop()
            raise BackplaneError(f"NATS JetStream refused the cluster's buckets: {exc}") from exc
        logger.info(
            "cluster %r: node %r joined through %s (%d live nodes)",
            config.name,
            self.node,
            nc.connected_url.netloc if nc.connected_url else "?",
            len(self.peers),
        )

    def stop_inbound(self) -> None:
        """Ignore what other nodes send from now on (the core is stopping: its store closes)."""
        self._inbound = False
        if self.shares is not None:
            self.shares.accepting = False

    async def stop(self) -> None:
        """Finish the queued requests, leave, close NATS: about 3 s at most in all, so a
        SIGTERM stop stays well within its bounds even when NATS does not answer."""
        self._inbound = False
        await self._interest.close()
        if self.catch_up is not None:
            await self.catch_up.close()
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain(), _STOP_DRAIN)
        if self.shares is not None:
            await self.shares.stop()
        log = self._durable_store.log if self._durable_store is not None else None
        if log is not None:
            await log.flush(_STOP_DRAIN)  # the last records of sessions (disconnect times)
            await log.close()
        await self.requests.close(_STOP_STEP)
        for answer in self._answers:
            answer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, _STOP_STEP)
        self._tasks = []
        nc = self._nc
        if nc is not None and self.liveness is not None and nc.is_connected:
            # Leave at once rather than when the heartbeat runs out; no will is due from
            # a graceful stop (as on one broker).
            await self.liveness.stop(_STOP_STEP)
        for conn in (nc, self._shared_nc):
            if conn is None:
                continue
            if conn.is_connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.flush(), _STOP_STEP)  # what is published
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), _STOP_STEP)
        self._nc = self._shared_nc = None

    async def _drain(self) -> None:
        while self._outbox or self._share_ops or self.requests.busy:
            self._outbox_wake.set()
            await asyncio.sleep(0.01)

    def _connect_options(self, main: bool = True) -> dict[str, Any]:
        """nats.connect's options; `main`: the connection of routing and JetStream (a
        break in it may have lost messages: a catch-up follows)."""
        config = self.config
        options: dict[str, Any] = {
            "servers": list(config.urls),
            "name": f"mqttd {config.name}/{self.node}",
            # A node never needs its own messages back: the core delivered them here.
            "no_echo": True,
            "connect_timeout": config.connect_timeout,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "error_cb": self._on_error if main else self._on_shared_error,
            "disconnected_cb": self._on_disconnected if main else self._on_shared_disconnected,
            "reconnected_cb": self._on_reconnected if main else self._on_shared_reconnected,
        }
        if config.user:
            options["user"] = config.user
            options["password"] = config.password
        if config.token:
            options["token"] = config.token
        if config.credentials_file:
            options["user_credentials"] = config.credentials_file
        if self.tls is not None:
            options["tls"] = self.tls
        return options

    async def _bucket(self, js: Any, name: str, ttl: float | None = None) -> KeyValue:
        kv_config = KeyValueConfig(bucket=name, history=1, replicas=self.config.replicas, ttl=ttl)
        try:
            bucket: KeyValue = await js.create_key_value(kv_config)
        except BadRequestError:
            # Made before with other settings (replicas changed): use it as it is.
            bucket = await js.key_value(name)
        return bucket

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats_errors.SlowConsumerError):
            # nats-py dropped messages this node read too slowly: replay them.
            catch_up = self.catch_up
            if catch_up is not None and not catch_up.running:
                logger.warning("cluster: %s; catching up from the stream", exc)
            self._gap(self.clock.wall(), reconnected=False)
            return
        logger.warning("cluster: NATS error: %s", exc)

    async def _on_disconnected(self) -> None:
        if self._inbound:
            logger.warning("cluster: disconnected from NATS; reconnecting")
        if self._broken_at is None:
            self._broken_at = self.clock.wall()
        store = self._durable_store
        if self._inbound and self.catch_up is not None and store and store.log is not None:
            # From now on: nats-py routes what comes on the new connection before it
            # tells us of it, and those messages must not overtake the catch-up.
            self.hold()

    async def _on_reconnected(self) -> None:
        nc = self._nc
        url = nc.connected_url.netloc if nc is not None and nc.connected_url else "?"
        logger.info("cluster: reconnected to NATS at %s", url)
        broken_at, self._broken_at = self._broken_at, None
        self._gap(self.clock.wall() if broken_at is None else broken_at)

    async def _on_shared_error(self, exc: Exception) -> None:
        logger.warning("cluster: NATS error (shared groups' connection): %s", exc)

    async def _on_shared_disconnected(self) -> None:
        if self._inbound:
            logger.warning("cluster: shared groups' connection to NATS lost; reconnecting")

    async def _on_shared_reconnected(self) -> None:
        logger.info("cluster: shared groups' connection to NATS is back")

    def _gap(self, at: float, reconnected: bool = True) -> None:
        """What was stored since a margin before `at` may have been lost on its way here."""
        catch_up, store = self.catch_up, self._durable_store
        log = store.log if store is not None else None
        if catch_up is not None and log is not None and self._inbound:
            catch_up.gap(at - log.replay_margin, reconnected)

    # -- catching up (catchup.CatchUpHost) ----------------------------------------------

    def catch_up_subjects(self, prefix: str, long: str) -> list[str]:
        """The subjects under `prefix` of the filters this node holds, and `long`."""
        subjects = {s for f in self.interest for s in filter_to_subjects(f, prefix)}
        return [*sorted(subjects), long]

    def hold(self) -> None:
        """Keep live messages back from now on (a catch-up replays older ones first)."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        """Route the messages kept back, and the live ones from now on."""
        held, self._held = self._held, None
        for data in held or ():
            self.route(data)

    async def flush(self) -> None:
        """Return once NATS has processed what this node sent so far."""
        nc = self._nc
        if nc is None:
            raise nats_errors.ConnectionClosedError
        await nc.flush(timeout=max(1, int(self.config.request_timeout)))

    # -- messages -----------------------------------------------------------------------

    def _encode(self, message: Message) -> bytes | None:
        self._seq += 1
        expiry_wall = None
        if message.expiry_at is not None:
            expiry_wall = self.clock.wall() + (message.expiry_at - self.clock.now())
        envelope = Envelope(
            message.topic,
            message.payload,
            message.qos,
            message.retain,
            message.properties,
            message.origin,
            self.node,
            self.boot,
            self._seq,
            expiry_wall,
        )
        try:
            return encode_envelope(envelope)
        except ValueError as exc:
            self.stats.dropped += 1
            logger.warning("cluster: cannot send a message on %r: %s", message.topic, exc)
            return None

    def _message(self, envelope: Envelope) -> Message:
        expiry_at = None
        if envelope.expiry_wall is not None:
            expiry_at = self.clock.now() + (envelope.expiry_wall - self.clock.wall())
        return Message(
            envelope.topic,
            envelope.payload,
            envelope.qos,
            envelope.retain,
            envelope.properties,
            expiry_at,
            envelope.origin,
        )

    def _routing(self, envelope: Envelope) -> None:
        # The message's id goes into the records of the sessions it is queued for.
        store = self._durable_store
        if store is not None and envelope.qos:
            store.current = (envelope.payload, f"{envelope.node}.{envelope.boot}.{envelope.seq}")

    def _queue(self, kind: int, subject: str, data: bytes) -> None:
        self._outbox.append((kind, subject, data))
        self._outbox_wake.set()

    async def _send_loop(self) -> None:
        nc = self._nc
        assert nc is not None
        outbox = self._outbox
        while True:
            await self._outbox_wake.wait()
            self._outbox_wake.clear()
            while self._share_ops:
                join, share, topic_filter = self._share_ops.popleft()
                try:
                    await self._change_share(join, share, topic_filter)
                except Exception as exc:
                    logger.warning(
                        "cluster: NATS refused $share/%s/%s: %s", share, topic_filter, exc
                    )
            while outbox:
                kind, subject, data = outbox.popleft()
                try:
                    if kind == _PUB:
                        await nc.publish(subject, data)
                    elif kind == _SUB:
                        self._subs[subject] = await nc.subscribe(subject, cb=self._on_message)
                    else:
                        sub = self._subs.pop(subject, None)
                        if sub is not None:
                            await sub.unsubscribe()
                except Exception as exc:  # NATS away: count, keep going
                    if kind == _PUB:
                        self.stats.dropped += 1
                    logger.warning("cluster: NATS refused %s: %s", subject, exc)
                if kind == _SUB:
                    self._interest.sent()
            self._interest.kick()

    async def _change_share(self, join: bool, share: str, topic_filter: str) -> None:
        key = (share, topic_filter)
        for sub in self._share_subs.pop(key, []):
            await sub.unsubscribe()
        shares = self.shares
        if not join:
            if shares is not None:
                shares.leave(share, topic_filter)
            return
        if shares is not None:
            # QoS 1/2 messages come from JetStream (shares.py), QoS 0 ones as below.
            await shares.join(share, topic_filter)
        nc = self._shared_nc
        assert nc is not None
        # One queue group per (share, filter) cluster-wide: NATS hands each message to one
        # subscriber of it, on whichever node. The filter's subjects are disjoint (`a` and
        # `a.>`), so a message matches one of them at most. Long topics come on their
        # own subject, in the same queue group.
        queue = "mqttd-" + hashlib.sha256(f"{share}\0{topic_filter}".encode()).hexdigest()[:32]
        callback = self._shared_callback(share, topic_filter)
        subjects = (*filter_to_subjects(topic_filter, self._prefix), self._long)
        self._share_subs[key] = [
            await nc.subscribe(subject, queue=queue, cb=callback) for subject in subjects
        ]

    def _shared_callback(self, share: str, topic_filter: str) -> Callable[[Msg], Awaitable[None]]:
        async def on_shared(msg: Msg) -> None:
            if not self._inbound:
                return
            if self.shares is not None and envelope_qos(msg.data) and msg.subject != self._long:
                # QoS 1/2: the group's consumers deliver it from the messages stream
                # (shares.py), except a long topic's (on the stream's catch-all subject,
                # which they do not read): that one comes this way.
                return
            try:
                envelope = decode_envelope(msg.data)
            except EnvelopeError as exc:
                logger.warning("cluster: dropping a message on %s: %s", msg.subject, exc)
                return
            if not topic_matches(topic_filter, envelope.topic):
                return  # a long topic, or a widened filter: not this group's
            self.stats.shared_in += 1
            self._routing(envelope)
            try:
                self.host.deliver_shared_from_node(self._message(envelope), share, topic_filter)
            except Exception:
                logger.exception("cluster: delivering to $share/%s/%s failed", share, topic_filter)

        return on_shared

    async def _on_message(self, msg: Msg) -> None:
        if not self._inbound:
            return
        held = self._held
        if held is not None:  # a catch-up replays older messages first
            held.append(msg.data)
            if len(held) >= MAX_HELD:
                self.release()
            return
        self.route(msg.data)

    def route(self, data: bytes) -> bool:
        """Route one envelope from another node through the core, unless its id was
        routed here before (then False)."""
        if not self._inbound:
            return False
        try:
            envelope = decode_envelope(data)
        except EnvelopeError as exc:
            logger.warning("cluster: dropping a message from another node: %s", exc)
            return False
        if envelope.boot == self.boot or not self._seen.first(envelope.boot, envelope.seq):
            self.stats.duplicates += 1
            return False
        self.stats.routed_in += 1
        self._routing(envelope)
        try:
            self.host.publish_from_node(self._message(envelope))
        except Exception:
            logger.exception("cluster: routing a message from node %r failed", envelope.node)
        return True

    # -- client ids -----------------------------------------------------------------------

    def _submit(
        self,
        key: str,
        op: Callable[[], Awaitable[None]],
        give_up: Callable[[], None] | None = None,
    ) -> None:
        """Run `op` after the requests submitted before on `key` (its client id or
        retained topic), beside those of other keys; `give_up` runs when JetStream
        stayed away for `_RETRY_FOR` seconds."""
        self.requests.submit(key, lambda: self._with_retries(op, give_up))

    async def _with_retries(
        self, op: Callable[[], Awaitable[None]], give_up: Callable[[], None] | None
    ) -> None:
        # JetStream away or still recovering (after a NATS restart): try again, in place,
        # so the requests after this one on its key keep their order. Each op can run
        # again safely.
        deadline = asyncio.get_running_loop().time() + _RETRY_FOR
        delay = 0.1
        while True:
            try:
                await op()
                return
            except (TimeoutError, OSError, nats_errors.Error) as exc:
                if asyncio.get_running_loop().time() + delay > deadline:
                    logger.warning("cluster: JetStream request failed, given up: %s", exc)
                    break
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)
            except Exception:
                logger.exception("cluster: JetStream request failed")
                break
        if give_up is not None:
            give_up()

    def _forget(self, client_id: str) -> None:
        self.claims.release(client_id)  # a release given up: the key stays, unowned here

    def _claim_given_up(self, client_id: str, answered: Callable[[int], None]) -> None:
        # Unanswered: keep serving the client (as one broker would), unfenced: any other
        # node's claim supersedes token 0.
        if not self.claims.claimed(client_id, 0):
            self.host.client_id_taken_elsewhere(client_id)
            answered(ReasonCode.SERVER_UNAVAILABLE)
            return
        answered(0)

    async def _claim(
        self, client_id: str, clean_start: bool, answered: Callable[[int], None]
    ) -> None:
        kv = self._clients
        assert kv is not None
        key = _kv_key(client_id)
        liveness = self.liveness
        life = liveness.life if liveness is not None else ""
        value = json.dumps({"node": self.node, "boot": self.boot, "life": life}).encode()
        previous: bytes | None = None
        token = 0
        for _ in range(_CLAIM_ATTEMPTS):
            try:
                entry = await kv.get(key)
                previous, last = entry.value, entry.revision
            except KeyNotFoundError:
                previous, last = None, None
            try:
                if last is None:
                    token = await kv.create(key, value)
                else:
                    token = await kv.update(key, value, last=last)
                break
            except KeyWrongLastSequenceError:
                continue  # another node claimed in between: read again
        if not token:
            self._claim_given_up(client_id, answered)
            return
        self.stats.claims += 1
        if not self.claims.claimed(client_id, token):
            self.host.client_id_taken_elsewhere(client_id)
            answered(ReasonCode.SERVER_UNAVAILABLE)
            return
        owner, owner_boot = None, None
        if previous:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                held = json.loads(previous)
                owner, owner_boot = str(held["node"]), held.get("boot")
        mover = self.mover
        assert mover is not None
        if owner is not None and owner != self.node:
            self.stats.takeovers_sent += 1
            await mover.hand_over(owner, client_id, token)
        state: StoredState | None = None
        replayed: list[bytes] = []
        if owner is not None and (owner != self.node or owner_boot != self.boot):
            # The session was held elsewhere (or by this node's earlier life): its log
            # in the cluster is the truth.
            state, replayed = await mover.bring_over(client_id, clean_start)
        if self.claims.token(client_id) != token:
            # Another node's claim came while this one was under way.
            answered(ReasonCode.SERVER_UNAVAILABLE)
            return
        if state is not None:
            log = mover.log
            assert log is not None
            for record in replayed:
                log.write(client_id, record)  # ours now: the replayed messages join its log
            with log.muted(client_id):
                self.host.session_from_node(state)
        answered(0)
        if liveness is not None:
            await self._keep_will(liveness, client_id)

    async def _keep_will(self, liveness: NodeLiveness, client_id: str) -> None:
        # Asked now, after the CONNECT was handled: the will as it stands (None when the
        # client is gone again, or has none: then an entry of an earlier connection goes).
        will = self.host.will_of(client_id)
        data = b""
        if will is not None:
            data = self._encode(will[0]) or b""
            if not data:
                will = None
        await liveness.keep_will(client_id, will, data)

    def _will_message(self, data: bytes) -> Message | None:
        try:
            return self._message(decode_envelope(data))
        except EnvelopeError as exc:
            logger.warning("cluster: dropping an unreadable will: %s", exc)
            return None

    async def _release(self, client_id: str) -> None:
        if self.liveness is not None:
            await self.liveness.drop_will(client_id)
        token = self.claims.token(client_id)
        kv = self._clients
        if token and kv is not None:
            with contextlib.suppress(BadRequestError, KeyWrongLastSequenceError):
                # Compare-and-delete: only if nobody claimed it since our claim.
                await kv.delete(_kv_key(client_id), last=token)
        if self.claims.token(client_id) == token:
            self.claims.release(client_id)

    async def _on_notice(self, msg: Msg) -> None:
        if not self._inbound:
            return
        try:
            notice = json.loads(msg.data)
            client_id, token = str(notice["client_id"]), int(notice["token"])
        except (ValueError, KeyError, TypeError):
            logger.warning("cluster: dropping a malformed takeover notice")
            return
        self.stats.takeovers_received += 1
        if self.claims.superseded(client_id, token):
            logger.info("cluster: client %r connected to another node: closing it here", client_id)
            self.host.client_id_taken_elsewhere(client_id)
        elif self.claims.unclaimed(client_id) and self.host.drop_stale_session(client_id):
            # A copy this node kept from its store (its earlier life owned the session):
            # the session goes to the other node from its log, not from here.
            self.stale_sessions_dropped += 1
        if self.mover is not None:
            # The new node waits for this, once our records of the session are stored:
            # answered beside the next notices (nats-py hands them over one at a time),
            # so sessions leaving this node all at once each wait one flush, not all.
            task = asyncio.create_task(self.mover.answer(msg))
            self._answers.add(task)
            task.add_done_callback(self._answers.discard)

    # -- sessions restored from the node's own store -------------------------------------

    async def _drop_stale_sessions(self, log: SessionLog) -> None:
        """At start, before the listeners open: forget the sessions restored from the
        node's store (SQLite) that the cluster no longer gives this node (docs/cluster.md,
        "Sessions in a node's SQLite file").

        - claimed by another node: the session moved there (its log is the truth);
        - claimed by nobody, and its log ends with the session's end: it ended in the
          cluster (a clean start or its expiry elsewhere) after it left this node.

        Each is dropped from memory, from the node's store and from NATS interest, and no
        will is published for it (the wills bucket holds the wills). The sessions whose
        claim still names this node (its earlier life) stay, subscribed, as on one broker
        (a client that comes back gets the session from its log, `_claim`); so do those
        the cluster never held (no claim, no log: a file from before the cluster).
        """
        host = self.host
        kv = self._clients
        assert kv is not None
        client_ids = host.offline_sessions()
        stale: list[str] = []

        async def judge(client_id: str) -> None:
            try:
                entry = await kv.get(_kv_key(client_id))
                owner = json.loads(entry.value or b"{}").get("node")
            except KeyNotFoundError:
                owner = None
            except (ValueError, AttributeError):
                return  # unreadable: keep the session as it is
            if owner is None:
                if await log.ended(client_id):
                    stale.append(client_id)
            elif owner != self.node:
                stale.append(client_id)

        try:
            for i in range(0, len(client_ids), _STALE_BATCH):
                batch = client_ids[i : i + _STALE_BATCH]
                await asyncio.gather(*(judge(client_id) for client_id in batch))
        except (TimeoutError, OSError, nats_errors.Error) as exc:
            logger.warning("cluster: could not check the sessions of the node's store: %s", exc)
        for client_id in stale:
            if host.drop_stale_session(client_id):
                self.stale_sessions_dropped += 1
        if stale:
            logger.info(
                "cluster: %d of %d sessions from the node's store are held elsewhere or"
                " ended in the cluster: dropped here",
                len(stale),
                len(client_ids),
            )

    # -- retained messages ----------------------------------------------------------------

    async def _put_retained(self, topic: str, data: bytes) -> None:
        kv = self._retained
        assert kv is not None
        try:
            await kv.put(_kv_key(topic), data)
        except nats_errors.MaxPayloadError:
            # Not seen: `publish` refused such a message first. Never tried again.
            logger.warning("cluster: the retained message of %r is too large for NATS", topic)

    async def _watch_retained(self, loaded: asyncio.Future[None]) -> None:
        kv = self._retained
        assert kv is not None
        watcher = await kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:  # the bucket's contents so far have been read
                    if not loaded.done():
                        loaded.set_result(None)
                    continue
                if entry.operation is not None or not entry.value:
                    continue  # a delete or purge by hand: no topic to tell the core
                try:
                    envelope = decode_envelope(entry.value)
                except EnvelopeError as exc:
                    logger.warning("cluster: dropping a retained entry: %s", exc)
                    continue
                if envelope.boot == self.boot or not self._inbound:
                    continue  # our own change: the core has it already
                self.stats.retained_updates_in += 1
                message = None
                if not envelope.cleared:
                    message = self._message(envelope)
                    if message.expiry_at is not None and message.expiry_at <= self.clock.now():
                        message = None  # expired while it waited in the bucket
                self.host.retained_from_node(envelope.topic, message)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watcher.stop(), _STOP_STEP)  # type: ignore[no-untyped-call]

    # -- liveness -------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        liveness = self.liveness
        assert liveness is not None
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            started = asyncio.get_running_loop().time()
            try:
                # A slow beat still counts (the fence measures from its start): wait for
                # it up to the timeout that others would judge this node by.
                await asyncio.wait_for(liveness.beat(), self.config.node_timeout)
            except Exception as exc:
                logger.warning("cluster: heartbeat failed: %s", exc or type(exc).__name__)
                continue
            # The round trip of the beat's KV write: NATS there and back plus JetStream's
            # store. Not nc.rtt(): a PING whose wait times out leaves a cancelled future
            # that the PONG then breaks nats-py's read loop on.
            self.rtt = asyncio.get_running_loop().time() - started

    def figures(self) -> dict[str, float]:
        """The node's cluster figures by metric name suffix (`_total`: a counter)."""
        stats = self.stats
        nc = self._nc
        liveness = self.liveness
        return {
            "peers": len(self.peers),
            "nats_rtt_seconds": self.rtt,
            "nats_connected": int(nc is not None and nc.is_connected),
            "nats_subscriptions": len(self._subject_refs),
            "suback_waits_total": self._interest.waits,
            "suback_waits_unconfirmed_total": self._interest.unconfirmed,
            "stale_sessions_dropped_total": self.stale_sessions_dropped,
            "outbox": len(self._outbox),
            "jetstream_requests": self.requests.waiting,
            "routed_out_total": stats.routed_out,
            "routed_in_total": stats.routed_in,
            "duplicates_total": stats.duplicates,
            "dropped_total": stats.dropped,
            "too_large_total": stats.too_large,
            "max_payload_bytes": self.max_payload,
            "packet_limit_bytes": self.packet_limit,
            "records_too_large_total": (
                log.too_large
                if self._durable_store is not None and (log := self._durable_store.log)
                else 0
            ),
            "claims_total": stats.claims,
            "takeovers_sent_total": stats.takeovers_sent,
            "takeovers_received_total": stats.takeovers_received,
            "retained_updates_in_total": stats.retained_updates_in,
            "shared_in_total": stats.shared_in,
            **(self._share_figures()),
            "catch_ups_total": self.catch_up.runs if self.catch_up is not None else 0,
            "recovered_total": self.catch_up.recovered if self.catch_up is not None else 0,
            **(liveness.figures() if liveness is not None else {}),
        }

    def _share_figures(self) -> dict[str, float]:
        shares = self.shares
        if shares is None:
            return {}
        return {
            "shared_held": shares.holding,
            "shared_taken_total": shares.taken,
            "shared_redelivered_total": shares.redelivered,
            "shared_passed_on_total": shares.passed_on,
        }

    def sys_figures(self) -> dict[str, str]:
        """The figures under $SYS/broker/cluster/ (a `SysTree` source)."""
        out = {"cluster/node": self.node}
        for key, value in self.figures().items():
            name = "cluster/" + key.removesuffix("_total").replace("_", "/", 1)
            out[name] = f"{value:.6f}" if isinstance(value, float) else str(value)
        return out
