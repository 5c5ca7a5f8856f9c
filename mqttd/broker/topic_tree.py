"""The subscription tree: which subscriptions match a PUBLISH topic name.

Theory of operation. Topic filters are stored in a trie with one node per topic level
(levels are separated by "/"; an empty level is a real level, so "a//b" has three and
"/a" starts with an empty level, 4.7.1). A node keeps its literal children (in a dict,
or the child itself when there is only one) and its two wildcard children apart:

- ``plus``: the node for a "+" level, which matches exactly one level of any name;
- ``hash_subs``: the subscriptions whose filter ends in "#" right below this node. "#"
  is always the last level (4.7.1.2), so it needs no node of its own; it matches the
  rest of the name, including nothing at all ("sport/#" matches "sport").

Matching splits the topic name once and walks the trie level by level with the set of
nodes still alive (usually one or two), so its cost grows with the depth of the name and
the number of wildcard branches met, never with the number of subscriptions.

[MQTT-4.7.2-1]: a filter whose first level is a wildcard must not match a name whose
first level starts with "$" ("$SYS/..."), so for such names the root's "+" and "#"
branches are skipped.

The result of a match is cached per topic name, because fleets publish to the same
topics over and over. A subscription change on an exact filter drops the one entry it
can alter (the topic equal to the filter); a change on a wildcard filter clears the
cache. The cache is also cleared when it reaches its bound, so a client publishing to
endless fresh topic names cannot grow memory.

Filters are expected to be valid (the protocol layer checks them, answering with reason
code 0x8F); the tree still refuses what would corrupt it: an empty filter, or "#" / "+"
mixed into a level or "#" before the last level.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Generic, TypeAlias, TypeVar

from ..protocol.errors import TopicFilterInvalid
from .trie import LevelNode

__all__ = ["DEFAULT_CACHE_SIZE", "Places", "TopicTree", "split_topic_filter"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Topic names whose match result is kept before the cache is cleared.
DEFAULT_CACHE_SIZE = 100_000


def split_topic_filter(topic_filter: str) -> list[str]:
    """Split a topic filter into levels, checking the wildcard rules of 4.7.1.

    Raises TopicFilterInvalid for an empty filter [MQTT-4.7.3-1], a "#" that is not alone
    in the last level [MQTT-4.7.1-2], or a "+" that does not fill its level [MQTT-4.7.1-3].
    """
    if not topic_filter:
        raise TopicFilterInvalid("empty topic filter")
    levels = topic_filter.split("/")
    if "#" in topic_filter or "+" in topic_filter:
        last = len(levels) - 1
        for i, level in enumerate(levels):
            if "#" in level and (level != "#" or i != last):
                raise TopicFilterInvalid(f"'#' must be alone in the last level: {topic_filter!r}")
            if "+" in level and level != "+":
                raise TopicFilterInvalid(f"'+' must fill a whole level: {topic_filter!r}")
    return levels


# The subscriptions ending at one place of the trie: none, one (key, value) pair held
# inline (the usual case: "devices/<id>/cmd" has one subscriber), or a dict key -> pair.
# The pairs are what `match` returns, built once per subscription rather than once per
# match, and shared by every cached result.
_Subs: TypeAlias = dict[K, tuple[K, V]] | tuple[K, V] | None


def _subs_put(subs: _Subs[K, V], pair: tuple[K, V]) -> tuple[_Subs[K, V], bool]:
    """`subs` with `pair` added, or replacing the pair of its key; True if the key is new."""
    if subs is None:
        return pair, True
    if isinstance(subs, dict):
        is_new = pair[0] not in subs
        subs[pair[0]] = pair
        return subs, is_new
    if subs[0] == pair[0]:
        return pair, False
    return {subs[0]: subs, pair[0]: pair}, True


def _subs_drop(subs: _Subs[K, V], key: K) -> tuple[_Subs[K, V], bool]:
    """`subs` without `key`'s pair; True if it was there."""
    if subs is None:
        return None, False
    if isinstance(subs, dict):
        if key not in subs:
            return subs, False
        del subs[key]
        if len(subs) == 1:
            (only,) = subs.values()
            return only, True
        return subs, True
    if subs[0] == key:
        return None, True
    return subs, False


class _Node(LevelNode, Generic[K, V]):
    """One topic level of the trie: literal children (trie.py), the "+" child, and the
    subscriptions ending here. Unused containers stay None."""

    __slots__ = ("hash_subs", "plus", "subs")

    def __init__(self, level: str) -> None:
        # Not super().__init__: one call less per node (100,000 sessions at start-up).
        self.level = level
        self.children = None
        self.plus: _Node[K, V] | None = None
        self.subs: _Subs[K, V] = None  # filters ending at this node
        self.hash_subs: _Subs[K, V] = None  # filters ending in "#" right below it

    def is_empty(self) -> bool:
        return (
            self.children is None
            and self.plus is None
            and self.subs is None
            and self.hash_subs is None
        )


#: Where filters end in one `TopicTree` (filter -> its node, and whether it ends in "#"):
#: the memo of `TopicTree.subscribe` while many subscriptions are put in at once.
Places: TypeAlias = dict[str, tuple[_Node[K, V], bool]]


class TopicTree(Generic[K, V]):
    """Subscriptions keyed by (topic filter, subscriber key), matched against topic names.

    `K` identifies a subscriber (a client id, or a (share name, filter) tuple for a shared
    subscription group); `V` is whatever the broker keeps per subscription (options,
    subscription identifier). One key holds at most one subscription per filter.
    """

    __slots__ = ("_cache", "_cache_size", "_count", "_root")

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        """`cache_size` bounds the per-topic match cache (0 disables it)."""
        self._root: _Node[K, V] = _Node("")
        self._count = 0
        self._cache: dict[str, tuple[tuple[K, V], ...]] = {}
        self._cache_size = cache_size

    def __len__(self) -> int:
        """The number of (filter, key) subscriptions."""
        return self._count

    @property
    def cache_len(self) -> int:
        """Topic names currently cached (for tests and benchmarks)."""
        return len(self._cache)

    def subscribe(
        self, topic_filter: str, key: K, value: V, places: Places[K, V] | None = None
    ) -> bool:
        """Add or replace `key`'s subscription on `topic_filter`; True if it was new.

        `places`, when given, remembers where each filter ends, so a filter met again
        is neither split nor walked: the restore at start-up puts 200,000 subscriptions
        of 100,000 sessions over 1,000 filters in with 1,000 walks. It is valid only
        while no subscription is removed (a pruned node would stay in it).
        """
        place = places.get(topic_filter) if places is not None else None
        if place is None:
            levels = split_topic_filter(topic_filter)
            node = self._root
            ends_in_hash = levels[-1] == "#"
            for level in levels[:-1] if ends_in_hash else levels:
                if level == "+":
                    child = node.plus
                    if child is None:
                        child = node.plus = _Node(level)
                else:
                    child = node.add_child(level)
                node = child
            if places is not None:
                places[topic_filter] = (node, ends_in_hash)
        else:
            node, ends_in_hash = place
        if ends_in_hash:
            node.hash_subs, is_new = _subs_put(node.hash_subs, (key, value))
        else:
            node.subs, is_new = _subs_put(node.subs, (key, value))
        if is_new:
            self._count += 1
        # A replaced value (new options) changes cached results too (none is cached
        # while the sessions are restored at start-up).
        if self._cache:
            self._invalidate(topic_filter)
        return is_new

    def unsubscribe(self, topic_filter: str, key: K) -> bool:
        """Remove `key`'s subscription on `topic_filter`; True if it existed.

        Nodes left empty are pruned, so subscription churn does not grow memory.
        """
        levels = split_topic_filter(topic_filter)
        node = self._root
        path: list[tuple[_Node[K, V], str]] = []  # (parent, level) down to `node`
        ends_in_hash = levels[-1] == "#"
        for level in levels[:-1] if ends_in_hash else levels:
            child = node.plus if level == "+" else node.child(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if ends_in_hash:
            node.hash_subs, found = _subs_drop(node.hash_subs, key)
        else:
            node.subs, found = _subs_drop(node.subs, key)
        if not found:
            return False
        self._count -= 1
        self._invalidate(topic_filter)
        # Prune from the leaf up while nodes hold nothing.
        for parent, level in reversed(path):
            if not node.is_empty():
                break
            if level == "+":
                parent.plus = None
            else:
                parent.remove_child(level)
            node = parent
        return True

    def subscribers(self, topic_filter: str) -> dict[K, V]:
        """A copy of the subscriptions on exactly `topic_filter` (e.g. one shared group)."""
        levels = split_topic_filter(topic_filter)
        node: _Node[K, V] | None = self._root
        ends_in_hash = levels[-1] == "#"
        for level in levels[:-1] if ends_in_hash else levels:
            assert node is not None
            node = node.plus if level == "+" else node.child(level)
            if node is None:
                return {}
        assert node is not None
        subs = node.hash_subs if ends_in_hash else node.subs
        if subs is None:
            return {}
        return dict(subs.values()) if isinstance(subs, dict) else dict((subs,))

    def match(self, topic: str) -> Sequence[tuple[K, V]]:
        """Every (key, value) whose filter matches the topic name `topic`.

        A key subscribed through several matching filters appears once per filter (the
        broker aggregates, 3.3.4). The result is a cached tuple: do not mutate it.
        """
        cache = self._cache
        hit = cache.get(topic)
        if hit is not None:
            return hit
        result = self._match(topic)
        if self._cache_size > 0:
            if len(cache) >= self._cache_size:
                cache.clear()
            cache[topic] = result
        return result

    def _invalidate(self, topic_filter: str) -> None:
        # A filter without wildcards matches one topic name, itself: only that cached
        # entry can change. A wildcard filter may change any entry, so all go; each
        # dropped entry was built by a cache miss, so clearing is amortised O(1) per miss.
        if "+" in topic_filter or "#" in topic_filter:
            self._cache.clear()
        else:
            self._cache.pop(topic_filter, None)

    def _match(self, topic: str) -> tuple[tuple[K, V], ...]:
        levels = topic.split("/")
        out: list[tuple[K, V]] = []
        root = self._root
        first = levels[0]
        nodes: list[_Node[K, V]] = []
        # The first level apart, for the "$" rule [MQTT-4.7.2-1].
        if first[:1] != "$":
            subs = root.hash_subs
            if subs is not None:
                if isinstance(subs, dict):
                    out.extend(subs.values())
                else:
                    out.append(subs)
            if root.plus is not None:
                nodes.append(root.plus)
        child = root.child(first)
        if child is not None:
            nodes.append(child)
        for i in range(1, len(levels)):
            if not nodes:
                return tuple(out)
            level = levels[i]
            alive: list[_Node[K, V]] = []
            for node in nodes:
                # The body of this loop is the innermost of the hot path: all inlined.
                subs = node.hash_subs
                if subs is not None:
                    if isinstance(subs, dict):
                        out.extend(subs.values())
                    else:
                        out.append(subs)
                # node.child(level):
                children = node.children
                if children is not None:
                    if isinstance(children, dict):
                        child = children.get(level)
                        if child is not None:
                            alive.append(child)
                    elif children.level == level:
                        alive.append(children)
                if node.plus is not None:
                    alive.append(node.plus)
            nodes = alive
        for node in nodes:
            subs = node.subs
            if subs is not None:
                if isinstance(subs, dict):
                    out.extend(subs.values())
                else:
                    out.append(subs)
            # "#" also matches its parent level: "sport/#" matches "sport" (4.7.1.2).
            subs = node.hash_subs
            if subs is not None:
                if isinstance(subs, dict):
                    out.extend(subs.values())
                else:
                    out.append(subs)
        return tuple(out)
