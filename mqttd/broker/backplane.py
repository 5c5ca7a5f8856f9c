"""The seam between one node's core and the other nodes of a cluster (docs/cluster.md).

Theory of operation. A `Backplane` is what the `Broker` tells about the few events other
nodes must hear of, and a `BackplaneHost` (the `ClusterHost` the Broker hands over,
cluster_host.py) is what a backplane calls when another node has something for this one.
Neither side does I/O here: the NATS backplane (`mqttd.cluster`) lives on the network
side of the layers and turns these calls into subjects, KV buckets and tasks; this
module has only the interfaces, the client-id fencing rule both implementations share
(`ClientIdClaims`) and the in-process implementation.

The core calls, on its own thread of control and never waiting for an answer:

- `interest_added` / `interest_removed` once per subscription that starts or ends on
  this node. The backplane counts them per filter and asks the network only for topics
  someone here wants. A SUBSCRIBE announces its new filters first, then asks
  `interest_pending`: while the network has not confirmed this node's interest in
  them, its SUBACK waits for `confirmed()` (subscribe.py), so that a message published
  on any node after the SUBACK reaches the new subscription, as on one broker.
- `share_added` / `share_removed` when this node gets its first member of a shared
  subscription group "$share/{share}/{filter}" or loses its last. Each message goes to
  one group cluster-wide: the backplane picks one node with members among all nodes,
  this one included, and that node's `BackplaneHost.deliver_shared_from_node` picks
  one of its members. The core then never picks members in `publish` itself. A
  backplane that redelivers what is not acknowledged (the NATS one, for QoS 1/2) passes
  a `SharedDelivery` along and hears from it when the member acknowledged the message.
- `publish` for every message published on this node (clients, wills, bridges); the
  backplane carries it to the nodes with matching interest. A message that arrives
  from another node goes to `BackplaneHost.publish_from_node` and is delivered here
  only: it never goes out again, so there are no loops and no duplicates.
- `claim_client_id` when a client connects here, before its CONNACK (which waits for
  the answer); `release_client_id` when its session ends here. Every claim gets a
  fencing token, larger than any before it for that client id; the node holding the
  largest token owns the client id. A node whose claim is superseded hears
  `BackplaneHost.client_id_taken_elsewhere` and closes its connection with
  DISCONNECT 0x8E (Session taken over), as one broker would.
- `retained_set` / `retained_clear` when a publish here changes a retained topic. The
  backplane keeps every node's retained tree in step through
  `BackplaneHost.retained_from_node`, so a SUBSCRIBE is answered from the node's own
  tree at once (the retained "lookup" is local and synchronous; the core never waits
  on the network for it).
- `will_settled` when the will of a client connected here is no longer due from the
  cluster (normal DISCONNECT, will published or cancelled here). Until then the
  backplane keeps the will where other nodes find it (`BackplaneHost.will_of` gives it),
  so that if this node dies a survivor publishes it (`BackplaneHost.publish_will`).
  A node cut off from the others too long closes its clients
  (`BackplaneHost.node_fenced`) and leaves their wills to the cluster.

The single-node broker holds no backplane at all (`Broker.use_backplane` keeps only a
distributed one), so its hot path pays one `is None` test per publish.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from ..store.base import Store, StoredState
from .message import Message
from .outbound import SharedDelivery
from .topic_tree import TopicTree

__all__ = [
    "Backplane",
    "BackplaneHost",
    "ClientIdClaims",
    "InProcessBackplane",
    "InProcessHub",
]


class BackplaneHost(Protocol):
    """What a backplane may call on the core (`cluster_host.ClusterHost` implements it)."""

    def publish_from_node(self, message: Message) -> int:
        """Deliver a message another node published to this node's subscriptions only."""
        ...

    def deliver_shared_from_node(
        self,
        message: Message,
        share: str,
        topic_filter: str,
        held: SharedDelivery | None = None,
    ) -> int:
        """Deliver `message` to one member here of "$share/{share}/{topic_filter}".

        `held`: the cluster's hold on a message it redelivers unless acknowledged
        (outbound.SharedDelivery), told when the member acknowledged it. Returns
        shared.NO_MEMBER, SETTLED, STORED or HELD (`SharedSubscriptions.deliver_to_group`).
        """
        ...

    def client_id_taken_elsewhere(self, client_id: str) -> None:
        """Another node claimed `client_id` after this one: close and end it here."""
        ...

    def retained_from_node(self, topic: str, message: Message | None) -> None:
        """Another node set (`message`) or cleared (None) the retained message of `topic`."""
        ...

    def session_from_node(self, state: StoredState) -> None:
        """A persistent session moves here (`state.sessions[0]`, its messages by id):
        it replaces any copy this node has, records itself in the node's store only."""
        ...

    def offline_sessions(self) -> list[str]:
        """The client ids of the persistent sessions here with no connection (at start:
        those the node restored from its own store)."""
        ...

    def drop_stale_session(self, client_id: str) -> bool:
        """The cluster holds the offline session of `client_id` elsewhere, or ended it:
        forget this node's copy (memory and store; no will). False if there was none
        or it has a connection."""
        ...

    def will_of(self, client_id: str) -> tuple[Message, int] | None:
        """The will of `client_id` connected here and the delay it would have, or None."""
        ...

    def publish_will(self, message: Message) -> None:
        """Publish a will a dead node left behind, as if its client had been here."""
        ...

    def node_fenced(self) -> None:
        """This node is cut off: close every connection (0x9C), publishing no will here."""
        ...


class Backplane(Protocol):
    """How the core reaches the other nodes of a cluster (see the module docstring)."""

    #: False when nothing leaves the process: the broker then keeps no reference to it.
    distributed: bool
    #: True when a session taken over by another node goes there with its messages
    #: (durable sessions): the node it leaves forgets it without dropping anything.
    sessions_move: bool

    def wrap_store(self, store: Store) -> Store:
        """The store the core records in: `store`, or one that also keeps sessions in
        the cluster (and whose `after_commit` waits for that too)."""
        ...

    def bind(self, host: BackplaneHost) -> None:
        """Attach the core that messages and notices from other nodes go to."""
        ...

    def interest_added(self, topic_filter: str) -> None:
        """One more subscription on `topic_filter` on this node."""
        ...

    def interest_removed(self, topic_filter: str) -> None:
        """One subscription fewer on `topic_filter` on this node."""
        ...

    def interest_pending(self, topic_filters: Sequence[str], confirmed: Callable[[], None]) -> bool:
        """False when the other nodes already route every topic of `topic_filters` here
        (announced with `interest_added`): the SUBACK goes at once. True when they may
        not yet: `confirmed()` comes once they do, or after a bounded wait (logged) if
        the network does not answer; never from inside this call."""
        ...

    def share_added(self, share: str, topic_filter: str) -> None:
        """This node has members of "$share/{share}/{topic_filter}" now."""
        ...

    def share_removed(self, share: str, topic_filter: str) -> None:
        """This node's last member of "$share/{share}/{topic_filter}" left."""
        ...

    def publish(self, message: Message) -> bool | None:
        """A message published on this node: carry it to the other nodes that want it.

        True when the backplane recorded it durably: the publisher's PUBACK/PUBREC then
        waits for `store.after_commit` (of the store `wrap_store` gave). None when the
        message cannot cross (larger than the cluster carries): the core then refuses
        it, here too, as a packet too large (docs/cluster.md, "Large messages").
        """
        ...

    def claim_client_id(
        self, client_id: str, clean_start: bool, answered: Callable[[int], None]
    ) -> None:
        """A client connects here with `client_id`: take ownership (fenced).

        `answered(code)` comes once the claim is decided (the CONNACK waits for it): 0
        when this node owns the client id, else the CONNACK reason code refusing it here
        (0x88 when another node's later claim won meanwhile). A backplane whose sessions
        move (`sessions_move`) first hands the session over from its previous node
        (`BackplaneHost.session_from_node`) unless `clean_start` ends it.
        """
        ...

    def release_client_id(self, client_id: str) -> None:
        """The session of `client_id` ended here: give ownership up, if still ours."""
        ...

    def retained_set(self, message: Message) -> None:
        """A publish here set the retained message of `message.topic`."""
        ...

    def retained_clear(self, topic: str) -> None:
        """A publish here cleared the retained message of `topic`."""
        ...

    def will_settled(self, client_id: str) -> None:
        """The will of `client_id` is no longer due from the cluster."""
        ...


class ClientIdClaims:
    """This node's claims on client ids and their fencing tokens.

    A token orders the claims on one client id cluster-wide (the NATS backplane uses
    the KV revision of the claim). The rule: a notice that another node claimed with a
    larger token than ours ends our claim; a smaller one is stale (our claim came after
    it) and is ignored. `release` hands back the token to give up, or None when the
    claim is no longer ours, so a node never releases what another node owns.

    A claim takes a round trip: between `claiming` and `claimed` a notice cannot be
    judged yet, so the largest token heard meanwhile is kept, and `claimed` says
    whether the claim had already lost to it when it was granted.
    """

    __slots__ = ("_heard", "_pending", "_tokens")

    def __init__(self) -> None:
        self._tokens: dict[str, int] = {}
        self._pending: dict[str, int] = {}  # client id -> claims on their way
        self._heard: dict[str, int] = {}  # client id -> largest token heard while pending

    def __len__(self) -> int:
        return len(self._tokens)

    def token(self, client_id: str) -> int | None:
        """Our token for `client_id`, or None when we hold no claim."""
        return self._tokens.get(client_id)

    def unclaimed(self, client_id: str) -> bool:
        """True when we neither hold nor are asking for a claim on `client_id`."""
        return client_id not in self._tokens and client_id not in self._pending

    def claiming(self, client_id: str) -> None:
        """A claim on `client_id` was asked for; its answer will come to `claimed`."""
        self._pending[client_id] = self._pending.get(client_id, 0) + 1

    def claimed(self, client_id: str, token: int) -> bool:
        """Our claim on `client_id` was granted with `token`.

        False when another node's claim with a larger token was heard while ours was
        on its way: ours lost, and the caller ends the client here.
        """
        pending = self._pending.get(client_id, 0)
        heard = self._heard.get(client_id)
        if pending <= 1:
            self._pending.pop(client_id, None)
            self._heard.pop(client_id, None)
        else:
            self._pending[client_id] = pending - 1
        if heard is not None and heard > token:
            self._tokens.pop(client_id, None)
            return False
        current = self._tokens.get(client_id)
        if current is None or token > current:
            self._tokens[client_id] = token
        return True

    def superseded(self, client_id: str, token: int) -> bool:
        """Another node claimed `client_id` with `token`: True if that ends our claim now."""
        if client_id in self._pending:
            # Judged when our own claim's token is known (`claimed`).
            self._heard[client_id] = max(token, self._heard.get(client_id, 0))
            return False
        current = self._tokens.get(client_id)
        if current is None or token <= current:
            return False
        del self._tokens[client_id]
        return True

    def release(self, client_id: str) -> int | None:
        """Forget our claim; return its token (to release with), or None if we had none."""
        return self._tokens.pop(client_id, None)


class InProcessHub:
    """Joins several in-process backplanes: a cluster inside one process, for tests.

    What nodes send each other is queued and delivered by `pump()`, as a network would
    deliver it later, so no core is re-entered from inside another core's call. The hub
    keeps the cluster-wide state the NATS backplane keeps in KV buckets: the owner of
    each client id with the last token, and the retained messages.
    """

    def __init__(self) -> None:
        self.nodes: list[InProcessBackplane] = []
        self.owners: dict[str, tuple[InProcessBackplane, int]] = {}
        self.retained: dict[str, Message] = {}
        #: Round-robin position of each shared group across the nodes.
        self._share_turn: dict[tuple[str, str], int] = {}
        self._next_token = 1
        self._pending: deque[Callable[[], object]] = deque()

    def pump(self) -> int:
        """Deliver everything in flight between the nodes; return how many were."""
        count = 0
        while self._pending:
            self._pending.popleft()()
            count += 1
        return count

    def _send(self, action: Callable[[], object]) -> None:
        self._pending.append(action)

    def _publish(self, sender: InProcessBackplane, message: Message) -> None:
        topic = message.topic
        for node in self.nodes:
            if node is not sender and node.wants(topic):
                copy = _copy(message)
                self._send(lambda n=node, m=copy: n.host.publish_from_node(m))  # type: ignore[misc]
        # Each shared group: one node with members, the sender included (a queue group).
        groups: dict[tuple[str, str], list[InProcessBackplane]] = {}
        for node in self.nodes:
            for key in node.shares_matching(topic):
                groups.setdefault(key, []).append(node)
        for key, nodes in groups.items():
            turn = self._share_turn.get(key, 0)
            self._share_turn[key] = turn + 1
            chosen = nodes[turn % len(nodes)]
            copy = _copy(message)
            self._send(
                lambda n=chosen, m=copy, k=key: n.host.deliver_shared_from_node(m, *k)  # type: ignore[misc]
            )

    def _claim(self, claimer: InProcessBackplane, client_id: str) -> None:
        token = self._next_token
        self._next_token = token + 1
        previous = self.owners.get(client_id)
        self.owners[client_id] = (claimer, token)
        claimer.claims.claiming(client_id)
        claimer.claims.claimed(client_id, token)
        if previous is not None and previous[0] is not claimer:
            old = previous[0]
            self._send(lambda: old.taken_over(client_id, token))

    def _release(self, node: InProcessBackplane, client_id: str, token: int) -> None:
        # Compare-and-delete: only the claim with this very token may be released.
        owner = self.owners.get(client_id)
        if owner is not None and owner[0] is node and owner[1] == token:
            del self.owners[client_id]

    def _retained(self, sender: InProcessBackplane, topic: str, message: Message | None) -> None:
        if message is None:
            self.retained.pop(topic, None)
        else:
            self.retained[topic] = message
        for node in self.nodes:
            if node is not sender:
                copy = None if message is None else _copy(message)
                self._send(
                    lambda n=node, m=copy: n.host.retained_from_node(topic, m)  # type: ignore[misc]
                )


class InProcessBackplane:
    """The in-process backplane: one node, or several joined by an `InProcessHub`.

    Without a hub it is today's single broker: nothing leaves the process, `distributed`
    is False and the broker does not even keep it. With a hub it is a sans-IO model of
    the NATS backplane (same interest counting and fencing rules) for unit tests.
    """

    def __init__(self, hub: InProcessHub | None = None) -> None:
        self.hub = hub
        self.distributed = hub is not None
        self.sessions_move = False
        #: Largest payload that crosses (None: any), as NATS's `max_payload` bounds a
        #: real cluster's messages: for tests of the refusal.
        self.max_payload: int | None = None
        self.claims = ClientIdClaims()
        self.interest: dict[str, int] = {}
        self.shares: set[tuple[str, str]] = set()
        self._tree: TopicTree[str, int] = TopicTree()
        self._share_tree: TopicTree[tuple[str, str], int] = TopicTree()
        self._host: BackplaneHost | None = None
        if hub is not None:
            hub.nodes.append(self)

    @property
    def host(self) -> BackplaneHost:
        """The core bound to this node."""
        if self._host is None:
            raise RuntimeError("backplane not bound to a broker")
        return self._host

    def bind(self, host: BackplaneHost) -> None:
        """Attach the core; a hub's retained messages are loaded into it."""
        self._host = host
        if self.hub is not None:
            for topic, message in self.hub.retained.items():
                host.retained_from_node(topic, _copy(message))

    def wants(self, topic: str) -> bool:
        """True if some subscription on this node matches `topic`."""
        return bool(self._tree.match(topic))

    def interest_added(self, topic_filter: str) -> None:
        """Count one more subscription on `topic_filter`."""
        count = self.interest.get(topic_filter, 0)
        self.interest[topic_filter] = count + 1
        if not count:
            self._tree.subscribe(topic_filter, topic_filter, 1)

    def interest_removed(self, topic_filter: str) -> None:
        """Count one subscription fewer; the last one takes the interest away."""
        count = self.interest.get(topic_filter, 0)
        if count <= 1:
            if self.interest.pop(topic_filter, None) is not None:
                self._tree.unsubscribe(topic_filter, topic_filter)
        else:
            self.interest[topic_filter] = count - 1

    def interest_pending(self, topic_filters: Sequence[str], confirmed: Callable[[], None]) -> bool:
        """Never: the hub routes by each node's interest as it is at the time."""
        return False

    def shares_matching(self, topic: str) -> list[tuple[str, str]]:
        """The shared groups with members on this node whose filter matches `topic`."""
        return [key for key, _ in self._share_tree.match(topic)]

    def share_added(self, share: str, topic_filter: str) -> None:
        """This node has members of the group now: the hub may pick it."""
        key = (share, topic_filter)
        if key not in self.shares:
            self.shares.add(key)
            self._share_tree.subscribe(topic_filter, key, 1)

    def share_removed(self, share: str, topic_filter: str) -> None:
        """This node's last member of the group left."""
        key = (share, topic_filter)
        if key in self.shares:
            self.shares.discard(key)
            self._share_tree.unsubscribe(topic_filter, key)

    def publish(self, message: Message) -> bool | None:
        """Hand `message` to the hub for the nodes whose interest matches; None when
        its payload is above `max_payload` (the model of NATS's own limit)."""
        if self.max_payload is not None and len(message.payload) > self.max_payload:
            return None
        if self.hub is not None:
            self.hub._publish(self, message)
        return False

    def wrap_store(self, store: Store) -> Store:
        """Sessions stay on their node here: the store as it is."""
        return store

    def claim_client_id(
        self, client_id: str, clean_start: bool, answered: Callable[[int], None]
    ) -> None:
        """Claim `client_id` with a fresh token (a single node owns everything)."""
        if self.hub is not None:
            self.hub._claim(self, client_id)
        answered(0)

    def release_client_id(self, client_id: str) -> None:
        """Release our claim on `client_id`, if it is still ours."""
        token = self.claims.release(client_id)
        if self.hub is not None and token is not None:
            self.hub._release(self, client_id, token)

    def retained_set(self, message: Message) -> None:
        """Share the new retained message of its topic."""
        if self.hub is not None:
            self.hub._retained(self, message.topic, _copy(message))

    def retained_clear(self, topic: str) -> None:
        """Share that `topic` has no retained message any more."""
        if self.hub is not None:
            self.hub._retained(self, topic, None)

    def will_settled(self, client_id: str) -> None:
        """Nothing to do: an in-process cluster dies as a whole."""

    def taken_over(self, client_id: str, token: int) -> None:
        """A notice from the hub: `client_id` was claimed elsewhere with `token`."""
        if self.claims.superseded(client_id, token):
            self.host.client_id_taken_elsewhere(client_id)


def _copy(message: Message) -> Message:
    # Each node gets its own Message: encodings and store ids are per node.
    return Message(
        message.topic,
        message.payload,
        message.qos,
        message.retain,
        message.properties,
        message.expiry_at,
        message.origin,
    )
