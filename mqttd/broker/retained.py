"""The retained-message tree: at most one retained message per topic name (3.3.1.3).

Retained messages are kept in a trie of topic levels, the mirror image of the
subscription tree: here the stored keys are topic names and the query is a filter. A new
subscription walks the filter down the trie ("+" fans out over every child, "#" takes a
whole subtree), so the cost follows the number of messages that match, not the number
retained.

Each node that holds a message keeps it as the ready-made ``(topic, value)`` pair that
`match` and iteration hand out, so returning a million matches allocates no tuples. A
dict from topic name to node sits beside the trie: replacing the message of a known
topic (the common retained PUBLISH), `get`, iteration and a "#" subscription need no
walk. It costs about 10% more memory.

[MQTT-4.7.2-1]: a filter whose first level is a wildcard does not match topic names
starting with "$", so "#" does not return "$SYS/..." messages while "$SYS/#" does.

`RetainedMessages` is the broker's use of the tree: a retained PUBLISH is kept or, with
an empty payload, clears its topic [MQTT-3.3.1-10, -11], and the change is recorded in
the store ($SYS topics excepted: the broker makes them afresh after a restart); a new
subscription gets the matching messages with the retain flag set, except expired ones,
which are dropped (and dead-lettered) on the way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

from ..protocol.errors import TopicNameInvalid
from .message import Message
from .recovery import stored_message
from .settings import DropReason
from .topic_tree import split_topic_filter
from .trie import LevelNode

if TYPE_CHECKING:
    from ..auth.hooks import Authorise
    from ..store.base import Store
    from .backplane import Backplane
    from .clock import Clock
    from .dead_letter import DeadLetters
    from .session import Session
    from .subscription import SubOptions

__all__ = ["RetainedTree"]

V = TypeVar("V")


class _Node(LevelNode, Generic[V]):
    """One topic level; `entry` is set when a retained message has exactly this topic."""

    __slots__ = ("entry",)

    def __init__(self, level: str) -> None:
        super().__init__(level)
        self.entry: tuple[str, V] | None = None


def _check_topic_name(topic: str) -> None:
    # Topic names are never empty and never hold wildcards [MQTT-4.7.3-1], [MQTT-4.7.1-1].
    if not topic or "+" in topic or "#" in topic:
        raise TopicNameInvalid(f"not a topic name: {topic!r}")


class RetainedTree(Generic[V]):
    """Retained messages by exact topic name, matched against subscription filters.

    `V` is the stored message (the broker's retained record). Mutating the tree while
    iterating it is safe: a message deleted before the iteration reaches it is skipped,
    a message added meanwhile is not seen.
    """

    __slots__ = ("_dollar", "_plain", "_root")

    def __init__(self) -> None:
        self._root: _Node[V] = _Node("")
        # topic -> its trie node, beside the trie: replacing a retained message (every
        # retained PUBLISH to a known topic) and `get` are one dict lookup, and "#" is a
        # copy of `_plain` instead of a walk over every node. "$" topics are kept apart
        # because "#" must not return them [MQTT-4.7.2-1].
        self._plain: dict[str, _Node[V]] = {}
        self._dollar: dict[str, _Node[V]] = {}

    def __len__(self) -> int:
        """The number of retained messages."""
        return len(self._plain) + len(self._dollar)

    def count_prefix(self, prefix: str) -> int:
        """How many "$" topics start with `prefix` (e.g. "$SYS/"); they are few."""
        return sum(1 for topic in self._dollar if topic.startswith(prefix))

    def __iter__(self) -> Iterator[tuple[str, V]]:
        """Every (topic, value), in no particular order (persistence, expiry sweeps)."""
        for nodes in (self._plain, self._dollar):
            for node in list(nodes.values()):
                entry = node.entry
                if entry is not None:  # None: deleted since the iteration began
                    yield entry

    def set(self, topic: str, value: V) -> None:
        """Retain `value` for `topic`, replacing any message retained there."""
        index = self._dollar if topic[:1] == "$" else self._plain
        node = index.get(topic)
        if node is not None:
            node.entry = (topic, value)
            return
        _check_topic_name(topic)
        node = self._root
        for level in topic.split("/"):
            node = node.add_child(level)
        node.entry = (topic, value)
        index[topic] = node

    def get(self, topic: str) -> V | None:
        """The message retained for exactly `topic`, or None."""
        node = (self._dollar if topic[:1] == "$" else self._plain).get(topic)
        if node is None or node.entry is None:
            return None
        return node.entry[1]

    def delete(self, topic: str) -> bool:
        """Forget the message retained for `topic`; True if there was one.

        Emptied nodes are pruned so the tree does not keep dead branches.
        """
        node = (self._dollar if topic[:1] == "$" else self._plain).pop(topic, None)
        if node is None:
            return False
        node.entry = None
        path: list[tuple[_Node[V], str]] = []
        parent = self._root
        for level in topic.split("/"):
            path.append((parent, level))
            child = parent.child(level)
            assert child is not None  # every indexed topic has its path in the trie
            parent = child
        for parent, level in reversed(path):
            if node.entry is not None or node.children is not None:
                break
            parent.remove_child(level)
            node = parent
        return True

    def iter_sorted(self, topic_filter: str, after: str | None = None) -> Iterator[tuple[str, V]]:
        """The (topic, value) matching `topic_filter`, in topic order, after topic `after`.

        Topic order is level by level ("a" < "a/b" < "a-b": a topic's own message comes
        before those below it). Only the nodes on the way are visited, each sorting its
        children, so one page of a million retained messages costs the sorts along one
        path, not a sort of everything: the admin API pages with it (`after` = cursor).
        """
        bound = after.split("/") if after is not None else None
        return self._walk(self._root, split_topic_filter(topic_filter), 0, 0, bound)

    def _walk(
        self,
        node: _Node[V],
        levels: list[str],
        at: int,
        depth: int,
        bound: list[str] | None,
    ) -> Iterator[tuple[str, V]]:
        # `node` is `depth` levels down; `levels[at:]` is what the filter still asks for.
        # `bound`: the cursor's levels while this node is on its path (only what sorts
        # after it is wanted), None once past it. The node's own message is wanted only
        # past the cursor: on its path it is the cursor or a prefix of it, both before.
        rest = levels[at:]
        if not rest or rest[0] == "#":
            if node.entry is not None and bound is None:
                yield node.entry  # "a/#" matches "a" too [MQTT-4.7.1-2]
            if not rest:
                return
        children = node.children
        if children is None:
            return
        kids = children if isinstance(children, dict) else {children.level: children}
        first = depth == 0  # wildcards in the first level skip "$" topics [MQTT-4.7.2-1]
        if rest[0] in ("#", "+"):
            names: list[str] = sorted(n for n in kids if not (first and n[:1] == "$"))
        elif rest[0] in kids:
            names = [rest[0]]
        else:
            return
        next_at = at if rest[0] == "#" else at + 1
        for name in names:
            child_bound: list[str] | None = None
            if bound is not None and depth < len(bound):
                if name < bound[depth]:
                    continue
                if name == bound[depth]:
                    child_bound = bound
            yield from self._walk(kids[name], levels, next_at, depth + 1, child_bound)

    def match(self, topic_filter: str) -> list[tuple[str, V]]:
        """Every retained (topic, value) whose topic matches `topic_filter`, unordered."""
        if topic_filter == "#":
            # Every topic but the "$" ones, without walking the trie.
            return [e for node in self._plain.values() if (e := node.entry) is not None]
        levels = split_topic_filter(topic_filter)
        out: list[tuple[str, V]] = []
        nodes = [self._root]
        for i, level in enumerate(levels):
            # Wildcards in the first level skip "$" topics [MQTT-4.7.2-1].
            skip_dollar = i == 0
            if level == "#":
                # "#" is last; it matches the parent level and everything below it.
                stack: list[_Node[V]] = []
                for node in nodes:
                    if node.entry is not None:
                        out.append(node.entry)
                    if skip_dollar:
                        stack.extend(c for c in node.child_nodes() if c.level[:1] != "$")
                    else:
                        stack.extend(node.child_nodes())
                while stack:
                    node = stack.pop()
                    if node.entry is not None:
                        out.append(node.entry)
                    children = node.children
                    if children is not None:
                        if isinstance(children, dict):
                            stack.extend(children.values())
                        else:
                            stack.append(children)
                return out
            alive: list[_Node[V]] = []
            if level == "+":
                for node in nodes:
                    if skip_dollar:
                        alive.extend(c for c in node.child_nodes() if c.level[:1] != "$")
                    else:
                        alive.extend(node.child_nodes())
            else:
                for node in nodes:
                    child = node.child(level)
                    if child is not None:
                        alive.append(child)
            if not alive:
                return out
            nodes = alive
        for node in nodes:
            if node.entry is not None:
                out.append(node.entry)
        return out


class RetainedMessages:
    """A broker's retained messages (see the module docstring)."""

    __slots__ = ("_clock", "_drops", "_store", "backplane", "tree")

    def __init__(self, store: Store, clock: Clock, dead_letters: DeadLetters) -> None:
        self.tree: RetainedTree[Message] = RetainedTree()
        self._store = store
        self._clock = clock
        self._drops = dead_letters
        #: The other nodes of a cluster, told of every change made here (backplane.py).
        self.backplane: Backplane | None = None

    def retain(self, message: Message) -> bool:
        """Store, replace or clear (empty payload) the retained message; True if recorded."""
        topic = message.topic
        if not message.payload:
            # [MQTT-3.3.1-10] [MQTT-3.3.1-11]: an empty retained message clears the topic.
            return self.delete(topic)
        self.tree.set(topic, message)
        if topic.startswith("$SYS/"):
            # The broker's own figures are made afresh after a restart: not persisted.
            return False
        self._store.save_retained(stored_message(message, self._clock))
        if self.backplane is not None:
            self.backplane.retained_set(message)
        return True

    def delete(self, topic: str) -> bool:
        """Forget the message retained for `topic`; True if a stored one was recorded gone.

        $SYS topics are node-local and never stored: False for them.
        """
        if not self.tree.delete(topic) or topic.startswith("$SYS/"):
            return False
        self._store.delete_retained(topic)
        if self.backplane is not None:
            self.backplane.retained_clear(topic)
        return True

    def from_node(self, topic: str, message: Message | None) -> None:
        """Another node set (`message`) or cleared (None) `topic`: follow, tell nobody."""
        if message is None:
            if self.tree.delete(topic):
                self._store.delete_retained(topic)
            return
        self.tree.set(topic, message)
        self._store.save_retained(stored_message(message, self._clock))

    def deliver(
        self,
        session: Session,
        topic_filter: str,
        options: SubOptions,
        authorise: Authorise | None,
    ) -> None:
        """Send the retained messages matching a new subscription, with retain=1."""
        now = self._clock.now()
        for topic, message in self.tree.match(topic_filter):
            if message.expiry_at is not None and message.expiry_at <= now:
                self.tree.delete(topic)
                self._store.delete_retained(topic)
                self._drops.drop(DropReason.RETAINED_EXPIRED, message, session.client_id)
                continue
            if authorise is not None and not authorise(
                session.client_id, session.username, "read", topic
            ):
                continue  # a wildcard matched a retained topic the client may not read
            # A copy: the retained Message outlives any store record made for one
            # delivery, so its store_id must not be reused by the next one.
            copy = Message(
                message.topic,
                message.payload,
                message.qos,
                message.retain,
                message.properties,
                message.expiry_at,
                message.origin,
            )
            session.deliver(
                copy, session.outgoing_qos(options.qos, message), True, options.sub_ids
            )
