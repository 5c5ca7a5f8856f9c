"""The retained-message tree: at most one retained message per topic name (3.3.1.3).

Retained messages are kept in a trie of topic levels, the mirror image of the
subscription tree: here the stored keys are topic names and the query is a filter. A new
subscription walks the filter down the trie ("+" fans out over every child, "#" takes a
whole subtree), so the cost follows the number of messages that match, not the number
retained.

Memory is what a million retained messages are about (docs/benchmarks.md, start-up):
one dict (topic name -> message, see `RetainedTree`) holds the messages, with no tuple
per message, and the trie holds each topic string once more only as a reference, with
no node of its own for a message's last level (see `_Node`). `iter_match`
hands matches out one at a time, so a subscription to "#" streams them as its client
drains instead of listing them all.
The broker's tree keeps each message as a compact record (one `bytes` object,
retained_record.py) and makes a new `Message` each time one is read.

[MQTT-4.7.2-1]: a filter whose first level is a wildcard does not match topic names
starting with "$", so "#" does not return "$SYS/..." messages while "$SYS/#" does.

`RetainedMessages` is the broker's use of the tree: a retained PUBLISH is kept or, with
an empty payload, clears its topic [MQTT-3.3.1-10, -11], and the change is recorded in
the store ($SYS topics excepted: the broker makes them afresh after a restart); a new
subscription gets the matching messages with the retain flag set, except expired ones,
which are dropped (and dead-lettered) on the way. At start, `from_rows` turns the store's
rows into the tree's records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar, cast

from ..protocol.errors import TopicNameInvalid
from .message import Message
from .recovery import stored_message
from .retained_feed import RetainedFeed, add_feed
from .retained_record import RetainedRecord, message_of, pack, pack_fields
from .settings import DropReason
from .topic_tree import split_topic_filter

if TYPE_CHECKING:
    from ..auth.hooks import Authorise
    from ..store.base import RetainedRow, Store, WholeRetainedRow
    from .backplane import Backplane
    from .clock import Clock
    from .dead_letter import DeadLetters
    from .scheduler import Scheduler
    from .session import Session
    from .subscription import SubOptions

__all__ = ["RetainedMessages", "RetainedTree"]

V = TypeVar("V")


class _Node:
    """One inner topic level: its own level name (`level`, its key in its parent's
    children, "456" for the third level of "fleet/7/456/state"), its children, and
    `topic`, the topic name, while a message is retained at this level too (None
    otherwise).

    A message's level with nothing below it (most of them: "fleet/7/456/state") has no
    node at all: its parent's children hold the topic string itself, the same object
    as the message's key in the tree's index, which holds the message. Inner nodes keep
    no path of their own, and the tree hands one string object to every node of the
    same level name (`RetainedTree._share`): "456" under a thousand parents is one
    string, not a thousand (docs/benchmarks.md, start-up, seventh round).

    Children are kept as in trie.py: none, the one child itself, or a dict from level
    name to child once there are two.
    """

    __slots__ = ("children", "level", "topic")

    def __init__(self, level: str) -> None:
        self.level = level
        self.children: _Children = None
        self.topic: str | None = None  # None: no message retained at this level


#: A child in the trie: an inner node, or the topic name of a message below nothing.
_Child: TypeAlias = "_Node | str"
_Children: TypeAlias = "dict[str, _Node | str] | _Node | str | None"

#: The most level names `RetainedTree` keeps to share among its nodes. Level names that
#: repeat ("state", "0".."999") come back at once after the table is emptied; names that
#: never repeat (a device id) would otherwise make it grow with the tree.
_SHARED_LEVELS = 8192

_MISSING: Any = object()  # not retained (a value may be anything, None included)


def _level_of(child: _Child) -> str:
    # A message's leaf is named by its topic's last level.
    if isinstance(child, str):
        return child[child.rfind("/") + 1 :]
    return child.level


def _child(node: _Node, level: str) -> _Child | None:
    children = node.children
    if children is None:
        return None
    if isinstance(children, dict):
        return children.get(level)
    if isinstance(children, str):
        # The last level of a message's topic, without slicing it out.
        n = len(level)
        matches = children.endswith(level) and (len(children) == n or children[-n - 1] == "/")
        return children if matches else None
    return children if children.level == level else None


def _child_list(node: _Node) -> list[_Child]:
    children = node.children
    if children is None:
        return []
    if isinstance(children, dict):
        return list(children.values())
    return [children]


def _drop(node: _Node, level: str) -> None:
    # Forget the child named `level`; a dict left with one child collapses.
    children = node.children
    if isinstance(children, dict):
        del children[level]
        if len(children) == 1:
            (node.children,) = children.values()
    else:
        node.children = None


def _check_topic_name(topic: str) -> None:
    # Topic names are never empty and never hold wildcards [MQTT-4.7.3-1], [MQTT-4.7.1-1].
    if not topic or "+" in topic or "#" in topic:
        raise TopicNameInvalid(f"not a topic name: {topic!r}")


def _same(topic: str, value: Any) -> Any:
    return value


def _keep(value: Any) -> Any:
    return value


class RetainedTree(Generic[V]):
    """Retained messages by exact topic name, matched against subscription filters.

    `V` is the stored message (the broker's retained record). Mutating the tree while
    iterating it is safe: a message deleted before the iteration reaches it is skipped.

    Memory: a retained message costs its value, its topic string and its slot in
    `_index` (topic -> value), and the topic string's slot in its parent's children
    (see `_Node`); inner nodes cost a node each, named by a shared string. The index
    makes `get` and replacing a message (every retained PUBLISH to a known topic) one
    lookup: without it, 2.9-4.4 us walks instead of 0.16 us.
    """

    __slots__ = ("_dollar", "_index", "_levels", "_pack", "_root", "_unpack")

    def __init__(
        self,
        pack: Callable[[V], object] | None = None,
        unpack: Callable[[str, Any], V] | None = None,
    ) -> None:
        """`pack` turns a value into what the tree keeps, `unpack(topic, kept)` makes
        the value handed out again (the broker's retained messages: `retained_record`);
        without them the value itself is kept."""
        self._pack: Callable[[V], object] = pack if pack is not None else _keep
        self._unpack: Callable[[str, Any], V] = unpack if unpack is not None else _same
        self._root = _Node("")
        self._index: dict[str, object] = {}  # topic -> the kept value
        # "$" topics (the broker's own, few) once more, for `count_prefix` and "#".
        self._dollar: set[str] = set()
        # Level name -> the string new nodes of that name get (see `_Node`), bounded.
        self._levels: dict[str, str] = {}

    def __len__(self) -> int:
        """The number of retained messages."""
        return len(self._index)

    def count_prefix(self, prefix: str) -> int:
        """How many "$" topics start with `prefix` (e.g. "$SYS/"); they are few."""
        return sum(1 for topic in self._dollar if topic.startswith(prefix))

    def __iter__(self) -> Iterator[tuple[str, V]]:
        """Every (topic, value), in no particular order (persistence, expiry sweeps)."""
        index = self._index
        for topic in list(index):
            value = index.get(topic, _MISSING)
            if value is not _MISSING:  # else deleted since the iteration began
                yield topic, self._unpack(topic, value)

    def _share(self, level: str) -> str:
        # The string every new node named `level` gets (see `_Node` and `_SHARED_LEVELS`).
        levels = self._levels
        shared = levels.get(level)
        if shared is None:
            if len(levels) >= _SHARED_LEVELS:
                levels.clear()
            shared = levels[level] = level
        return shared

    def _put(self, node: _Node, level: str, child: _Child) -> None:
        # Set (or replace) the child named `level`.
        children = node.children
        if children is None:
            node.children = child
        elif isinstance(children, dict):
            children[level] = child
        else:
            old = _level_of(children)
            if old == level:
                node.children = child
            else:
                node.children = {self._share(old): children, level: child}

    def _step(self, node: _Node, level: str) -> _Node:
        # The inner node named `level` below `node`: made if missing; a message's leaf
        # (a topic string) that gets levels below it becomes a node holding its topic.
        child = _child(node, level)
        if isinstance(child, _Node):
            return child
        grown = _Node(self._share(level))
        grown.topic = child
        self._put(node, grown.level, grown)
        return grown

    def _hold(self, node: _Node, level: str, topic: str) -> None:
        # Mark `topic`, whose last level is `level`, as holding a message below `node`.
        child = _child(node, level)
        if child is None:
            self._put(node, self._share(level), topic)
        elif isinstance(child, _Node) and child.topic is None:
            child.topic = topic
        # else: the topic's own leaf, there already, or a node holding it

    def set(self, topic: str, value: V) -> None:
        """Retain `value` for `topic`, replacing any message retained there."""
        index = self._index
        if topic not in index:
            _check_topic_name(topic)
            levels = topic.split("/")
            node = self._root
            for level in levels[:-1]:
                node = self._step(node, level)
            self._hold(node, levels[-1], topic)
            if topic[:1] == "$":
                self._dollar.add(topic)
        index[topic] = self._pack(value)

    def load(self, entries: Iterable[tuple[str, object]]) -> None:
        """`set` for many messages at once (start-up): the same result, faster. The
        values are given as kept (already packed, see `__init__`).

        Topics stored together usually share most of their path ("fleet/7/1/state",
        "fleet/7/2/state"): the nodes of the previous topic's parent path are kept, and
        a topic walks only from the deepest of them its own parent path shares, so most
        topics cost one or two child lookups instead of a walk from the root.
        """
        root = self._root
        index = self._index
        shared = self._levels
        share = self._share
        step = self._step
        parent_key: str | None = None  # the previous topic's parent path ("fleet/7/1")
        parent_levels: list[str] = []  # its levels
        path: list[_Node] = []  # their nodes, from the root's child
        # The parent path's own parent path ("fleet/7"), None when it has none: a topic
        # whose parent path is that plus one level is a sibling's, one lookup from
        # path[-2].
        grand: str | None = None
        # Inlined (no call per message, 1,000,000 at start): the topic check, the common
        # walks (a sibling of the previous parent, children in a dict or none yet) and
        # a message's leaf below a node that has no child yet. `rpartition` rather than
        # `rfind` and a slice: one call with one argument is a third of the cost.
        for topic, value in entries:
            if not topic or "+" in topic or "#" in topic:
                _check_topic_name(topic)  # raises
            key, slash, name = topic.rpartition("/")
            if not slash:
                parent = root
            else:
                if key != parent_key:
                    up_key, up, level = key.rpartition("/")
                    if up and up_key == grand:
                        # A sibling of the previous parent ("fleet/7/1" -> "fleet/7/2").
                        parent_levels[-1] = level
                        parent = path[-2]
                        children = parent.children
                        if isinstance(children, dict):
                            found = children.get(level)
                            if found is None:
                                level = shared.get(level) or share(level)
                                found = children[level] = _Node(level)
                            elif not isinstance(found, _Node):
                                found = step(parent, level)
                        else:
                            found = step(parent, level)
                        path[-1] = found
                    else:
                        levels = key.split("/")
                        # Keep the nodes of the levels the previous parent path shares.
                        same = 0
                        for a, b in zip(levels, parent_levels, strict=False):
                            if a != b:
                                break
                            same += 1
                        del path[same:]
                        parent = path[-1] if path else root
                        for level in levels[same:]:
                            parent = step(parent, level)
                            path.append(parent)
                        parent_levels = levels
                        grand = up_key if up else None
                    parent_key = key
                parent = path[-1]
            if parent.children is None:
                parent.children = topic  # the message's leaf: its topic, no node
            else:
                self._hold(parent, name, topic)
            index[topic] = value
            if topic[0] == "$":
                self._dollar.add(topic)

    def get(self, topic: str) -> V | None:
        """The message retained for exactly `topic`, or None."""
        value = self._index.get(topic, _MISSING)
        return None if value is _MISSING else self._unpack(topic, value)

    def delete(self, topic: str) -> bool:
        """Forget the message retained for `topic`; True if there was one.

        Emptied nodes are pruned so the tree does not keep dead branches.
        """
        if self._index.pop(topic, _MISSING) is _MISSING:
            return False
        self._dollar.discard(topic)
        levels = topic.split("/")
        path = [self._root]  # path[i]: the parent of levels[i]
        for level in levels[:-1]:
            path.append(_child(path[-1], level))  # type: ignore[arg-type]
        i = len(levels) - 1
        held = _child(path[i], levels[i])
        if type(held) is _Node:
            held.topic = None
            if held.children is not None:
                return True  # the levels below stay
        while True:
            parent = path[i]
            _drop(parent, levels[i])
            if i == 0 or parent.topic is not None or parent.children is not None:
                return True
            i -= 1

    def _walk_all(self, nodes: list[_Child]) -> Iterator[tuple[str, V]]:
        # Everything in and below `nodes`, depth first (a node's messages' leaves as it
        # is visited, without a trip through the stack). Children are taken as a list
        # when their parent is visited, so a change of the tree meanwhile is safe: a
        # message deleted before it is reached is skipped (it left the index).
        get = self._index.get
        unpack = self._unpack
        stack = nodes[::-1]
        while stack:
            node = stack.pop()
            if isinstance(node, str):
                value = get(node, _MISSING)
                if value is not _MISSING:
                    yield node, unpack(node, value)
                continue
            topic = node.topic
            if topic is not None:
                value = get(topic, _MISSING)
                if value is not _MISSING:
                    yield topic, unpack(topic, value)
            children = node.children
            if isinstance(children, dict):
                for child in list(children.values()):
                    if isinstance(child, str):
                        value = get(child, _MISSING)
                        if value is not _MISSING:
                            yield child, unpack(child, value)
                    else:
                        stack.append(child)
            elif children is not None:
                stack.append(children)

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
        node: _Child,
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
        if type(node) is str:
            topic: str | None = node
            children: _Children = None
        else:
            topic = node.topic  # type: ignore[union-attr]
            children = node.children  # type: ignore[union-attr]
        if not rest or rest[0] == "#":
            if topic is not None and bound is None:
                value = self._index.get(topic, _MISSING)
                if value is not _MISSING:
                    yield topic, self._unpack(topic, value)  # "a/#" matches "a" too
            if not rest:
                return
        if children is None:
            return
        kids = children if isinstance(children, dict) else {_level_of(children): children}
        first = depth == 0  # wildcards in the first level skip "$" topics [MQTT-4.7.2-1]
        if rest[0] in ("#", "+"):
            names: list[str] = sorted(n for n in kids if not (first and n[:1] == "$"))
        else:
            if rest[0] not in kids:
                return
            names = [rest[0]]
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
            # Every topic but the "$" ones, from the index rather than a walk.
            dollar = self._dollar
            unpack = self._unpack
            return [(t, unpack(t, v)) for t, v in self._index.items() if t not in dollar]
        return list(self.iter_match(topic_filter))

    def iter_match(self, topic_filter: str) -> Iterator[tuple[str, V]]:
        """`match`, one (topic, value) at a time: what a subscription to "#" over a
        million retained messages streams from, without a list of them all.

        The levels above a wildcard are resolved when the iteration starts; below it,
        the tree is read as the iteration goes (a change meanwhile is safe, see
        `_walk_all`).
        """
        levels = split_topic_filter(topic_filter)
        if "+" not in topic_filter and "#" not in topic_filter:
            # A topic name (most SUBSCRIBEs of a fleet): one lookup, no walk.
            value = self._index.get(topic_filter, _MISSING)
            if value is not _MISSING:
                yield topic_filter, self._unpack(topic_filter, value)
            return
        nodes: list[_Child] = [self._root]
        # The child lookups inlined: a SUBSCRIBE's retained messages come from here.
        for i, level in enumerate(levels):
            if level == "#":
                # "#" is last; it matches the parent level and everything below it
                # [MQTT-4.7.1-2] (the root has no message: topics are never empty).
                # Wildcards in the first level skip "$" topics [MQTT-4.7.2-1].
                if i == 0:
                    nodes = [c for c in _child_list(self._root) if _level_of(c)[:1] != "$"]
                yield from self._walk_all(nodes)
                return
            alive: list[_Child] = []
            if level == "+":
                for node in nodes:
                    if isinstance(node, str):
                        continue  # a message's leaf: nothing below it
                    if i == 0:
                        alive.extend(c for c in _child_list(node) if _level_of(c)[:1] != "$")
                        continue
                    children = node.children
                    if isinstance(children, dict):
                        alive.extend(children.values())
                    elif children is not None:
                        alive.append(children)
            else:
                n = len(level)
                for node in nodes:
                    if isinstance(node, str):
                        continue
                    children = node.children
                    if isinstance(children, dict):
                        child = children.get(level)
                        if child is not None:
                            alive.append(child)
                    elif isinstance(children, str):
                        # A message's leaf: its topic's last level, not sliced out.
                        if children.endswith(level) and (
                            len(children) == n or children[-n - 1] == "/"
                        ):
                            alive.append(children)
                    elif children is not None and children.level == level:
                        alive.append(children)
            if not alive:
                return
            nodes = alive
        index = self._index
        unpack = self._unpack
        for node in nodes:
            topic = node if isinstance(node, str) else node.topic
            if topic is not None:
                value = index.get(topic, _MISSING)
                if value is not _MISSING:
                    yield topic, unpack(topic, value)


class RetainedMessages:
    """A broker's retained messages (see the module docstring)."""

    __slots__ = ("_clock", "_drops", "_scheduler", "_store", "backplane", "tree")

    def __init__(
        self, store: Store, clock: Clock, dead_letters: DeadLetters, scheduler: Scheduler
    ) -> None:
        # Kept compact, a `Message` made when one is read (retained_record.py).
        self.tree: RetainedTree[Message] = RetainedTree(pack, message_of)
        self._store = store
        self._clock = clock
        self._drops = dead_letters
        self._scheduler = scheduler
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

    def from_rows(
        self,
        rows: list[RetainedRow],
        now: float,
        wall: float,
        heads: dict[tuple[str | None, int, int], bytes],
    ) -> Iterable[tuple[str, RetainedRecord]]:
        """(topic, record) of each stored retained row, as the retained tree keeps it
        (retained_record.py), for `RetainedTree.load` at start; expired ones are dropped.

        A chunk of packed rows (`store.base.RetainedRow`: most messages have neither
        properties nor an expiry) is already that: it is handed on as it is. Whole rows
        without properties or expiry (a store that does not pack them) get their record
        as the head (flags and publisher id, the same for a publisher's every message,
        kept in `heads`) and the payload.
        """
        # A chunk is packed rows only or whole rows only (`Store.retained_rows`): its
        # first row tells which (no generator over a million rows at start).
        if not rows or len(rows[0]) == 2:
            return cast(list[tuple[str, RetainedRecord]], rows)
        return self._from_whole_rows(cast("list[WholeRetainedRow]", rows), now, wall, heads)

    def _from_whole_rows(
        self,
        rows: list[WholeRetainedRow],
        now: float,
        wall: float,
        heads: dict[tuple[str | None, int, int], bytes],
    ) -> Iterator[tuple[str, RetainedRecord]]:
        for topic, payload, qos, retain, properties, expiry_at, origin in rows:
            if properties is None and expiry_at is None:
                key = (origin, qos, retain)
                head = heads.get(key)
                if head is None:
                    head = heads[key] = pack_fields(qos, retain == 1, origin, b"")
                yield topic, head + payload
                continue
            if expiry_at is not None:
                expiry_at = now + (expiry_at - wall)  # wall clock -> the broker's clock
            message = Message(topic, payload, qos, retain == 1, properties, expiry_at, origin)
            if expiry_at is not None and expiry_at <= now:
                self._store.delete_retained(topic)
                self._drops.drop(DropReason.RETAINED_EXPIRED, message)
                continue
            yield topic, message

    def deliver(
        self,
        session: Session,
        topic_filter: str,
        options: SubOptions,
        authorise: Authorise | None,
    ) -> None:
        """Send the retained messages matching a new subscription, with retain=1.

        They go as the client takes them (retained_feed.py): the first step at once,
        the rest as its socket drains.
        """
        matches = self.tree.iter_match(topic_filter)
        feed = RetainedFeed(
            self._clock, self._scheduler, self._expired, topic_filter, matches, options, authorise
        )
        add_feed(session, feed)

    def _expired(self, topic: str, message: Message, client_id: str) -> None:
        self.tree.delete(topic)
        self._store.delete_retained(topic)
        self._drops.drop(DropReason.RETAINED_EXPIRED, message, client_id)
