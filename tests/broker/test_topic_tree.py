"""The subscription tree: wildcard matching, the "$" rule, replacement, pruning, cache."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttd.broker import topic_tree
from mqttd.broker.topic_tree import TopicTree, split_topic_filter
from mqttd.protocol.errors import TopicFilterInvalid


def reference_match(topic_filter: str, topic: str) -> bool:
    """Topic matching written straight from 4.7, as the oracle for the trie."""
    f = topic_filter.split("/")
    t = topic.split("/")
    if t[0].startswith("$") and f[0] in ("+", "#"):
        return False  # [MQTT-4.7.2-1]
    for i, level in enumerate(f):
        if level == "#":
            return True  # the rest, including no level at all (the parent)
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return len(f) == len(t)


def keys(tree: TopicTree[str, str], topic: str) -> list[str]:
    return sorted(k for k, _ in tree.match(topic))


def keys_of(tree: TopicTree[str, int], topic: str) -> list[str]:
    return sorted(k for k, _ in tree.match(topic))


def tree_with(*filters: str) -> TopicTree[str, str]:
    """One subscriber per filter, keyed by the filter itself."""
    tree: TopicTree[str, str] = TopicTree()
    for f in filters:
        tree.subscribe(f, f, f)
    return tree


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b/c", "a/b/c", True),
        ("a/b/c", "a/b", False),
        ("a/b", "a/b/c", False),
        ("+/b/c", "a/b/c", True),
        ("a/+/c", "a/b/c", True),
        ("a/b/+", "a/b/c", True),
        ("a/+", "a", False),  # "+" is exactly one level
        ("a/+", "a/", True),  # ... which may be empty
        ("+/+", "/", True),
        ("+", "/a", False),
        ("#", "a/b/c", True),
        ("a/#", "a/b/c", True),
        ("a/#", "a", True),  # "#" matches the parent level (4.7.1.2)
        ("a/b/#", "a", False),
        ("+/#", "a", True),
        ("a/+/#", "a/b", True),
        ("a/+/#", "a", False),
        ("/a", "/a", True),  # leading "/" is an empty first level
        ("+/a", "/a", True),
        ("/+", "/a", True),
        ("a//b", "a//b", True),
        ("a/+/b", "a//b", True),
        ("a/b", "a//b", False),
        ("a/b/", "a/b", False),
        ("a/b/", "a/b/", True),
    ],
)
def test_filter_matches_topic_as_the_spec_says(
    topic_filter: str, topic: str, expected: bool
) -> None:
    assert reference_match(topic_filter, topic) is expected
    tree = tree_with(topic_filter)
    assert (keys(tree, topic) == [topic_filter]) is expected


def test_wildcard_first_level_never_matches_dollar_topics() -> None:
    tree = tree_with("#", "+/monitor/Clients", "+/#", "$SYS/#", "$SYS/monitor/+", "$SYS/+/Clients")
    assert keys(tree, "$SYS/monitor/Clients") == sorted(
        ["$SYS/#", "$SYS/monitor/+", "$SYS/+/Clients"]
    )
    assert keys(tree, "$SYS") == ["$SYS/#"]
    assert keys(tree, "x/monitor/Clients") == sorted(["#", "+/#", "+/monitor/Clients"])


def test_dollar_only_matters_in_the_first_level() -> None:
    tree = tree_with("a/+", "a/#", "#")
    assert keys(tree, "a/$x") == sorted(["a/+", "a/#", "#"])


def test_key_with_two_matching_filters_appears_twice() -> None:
    tree: TopicTree[str, int] = TopicTree()
    tree.subscribe("a/+", "client", 1)
    tree.subscribe("a/#", "client", 2)
    tree.subscribe("a/b", "other", 0)
    assert sorted(tree.match("a/b")) == [("client", 1), ("client", 2), ("other", 0)]


def test_subscribe_replaces_and_reports_new() -> None:
    tree: TopicTree[str, int] = TopicTree()
    assert tree.subscribe("a/b", "c1", 0) is True
    assert tree.match("a/b") == (("c1", 0),)
    assert tree.subscribe("a/b", "c1", 1) is False
    assert len(tree) == 1
    # The replacement shows although "a/b" was cached.
    assert tree.match("a/b") == (("c1", 1),)


def test_shared_group_tuple_keys_and_subscribers() -> None:
    tree: TopicTree[tuple[str, str], str] = TopicTree()
    tree.subscribe("s/+", ("g1", "s/+"), "group")
    assert tree.match("s/x") == ((("g1", "s/+"), "group"),)
    plain: TopicTree[str, int] = TopicTree()
    plain.subscribe("s/#", "c1", 1)
    plain.subscribe("s/#", "c2", 2)
    plain.subscribe("s", "c3", 3)
    got = plain.subscribers("s/#")
    assert got == {"c1": 1, "c2": 2}
    got["c9"] = 9  # a copy: the tree is untouched
    assert plain.subscribers("s/#") == {"c1": 1, "c2": 2}
    assert plain.subscribers("s") == {"c3": 3}
    assert plain.subscribers("s/+") == {}
    assert plain.subscribers("x/y/z") == {}


def test_unsubscribe_reports_and_prunes() -> None:
    tree: TopicTree[str, int] = TopicTree()
    tree.subscribe("a/b/c", "c1", 0)
    tree.subscribe("a/+/c", "c1", 0)
    tree.subscribe("a/#", "c1", 0)
    tree.subscribe("a/b/c", "c2", 0)
    assert len(tree) == 4
    assert tree.unsubscribe("a/b/c", "nobody") is False
    assert tree.unsubscribe("a/b/x", "c1") is False
    assert tree.unsubscribe("a/+", "c1") is False
    assert tree.unsubscribe("x/#", "c1") is False
    assert tree.unsubscribe("a/b/c", "c1") is True
    assert tree.unsubscribe("a/b/c", "c1") is False
    assert keys_of(tree, "a/b/c") == ["c1", "c1", "c2"]
    # Sibling branches survive a prune.
    assert tree.unsubscribe("a/b/c", "c2") is True
    assert keys_of(tree, "a/b/c") == ["c1", "c1"]
    assert tree.unsubscribe("a/+/c", "c1") is True
    assert tree.unsubscribe("a/#", "c1") is True
    assert len(tree) == 0
    assert tree.match("a/b/c") == ()
    assert tree._root.is_empty()


def test_churn_does_not_grow_the_tree() -> None:
    tree: TopicTree[str, int] = TopicTree()
    tree.subscribe("keep/+", "k", 0)
    for i in range(200):
        f = f"dev/{i}/+/x/#"
        tree.subscribe(f, "c", i)
        assert tree.unsubscribe(f, "c")
    root = tree._root
    assert root.child("keep") is not None
    assert root.children is root.child("keep")  # back to one child held inline
    assert root.plus is None


def test_cache_is_invalidated_by_subscribe_and_unsubscribe() -> None:
    tree: TopicTree[str, int] = TopicTree()
    tree.subscribe("a/b", "c1", 0)
    assert tree.match("a/b") == (("c1", 0),)
    assert tree.cache_len == 1
    tree.subscribe("a/#", "c2", 0)
    assert tree.cache_len == 0
    assert sorted(tree.match("a/b")) == [("c1", 0), ("c2", 0)]
    tree.unsubscribe("a/b", "c1")
    assert tree.match("a/b") == (("c2", 0),)
    assert tree.match("a/b") is tree.match("a/b")  # served from the cache


def test_exact_filter_change_drops_only_its_own_cache_entry() -> None:
    tree: TopicTree[str, int] = TopicTree()
    tree.subscribe("a/+", "c1", 0)
    tree.match("a/b")
    tree.match("a/c")
    tree.subscribe("a/c", "c2", 0)
    assert tree.cache_len == 1
    assert sorted(tree.match("a/c")) == [("c1", 0), ("c2", 0)]
    assert tree.match("a/b") == (("c1", 0),)
    tree.unsubscribe("a/c", "c2")
    assert tree.match("a/c") == (("c1", 0),)


def test_cache_is_bounded() -> None:
    tree: TopicTree[str, int] = TopicTree(cache_size=3)
    tree.subscribe("#", "c", 0)
    for i in range(10):
        assert tree.match(f"t/{i}") == (("c", 0),)
        assert tree.cache_len <= 3
    uncached: TopicTree[str, int] = TopicTree(cache_size=0)
    uncached.subscribe("#", "c", 0)
    assert uncached.match("t") == (("c", 0),)
    assert uncached.cache_len == 0


def test_empty_results_are_cached_too() -> None:
    tree: TopicTree[str, int] = TopicTree()
    tree.subscribe("a", "c", 0)
    assert tree.match("b") == ()
    assert tree.cache_len == 1


@pytest.mark.parametrize("bad", ["", "a/#/b", "#/", "a#", "a/b#", "+a", "a/+b", "a/++"])
def test_invalid_filters_are_refused(bad: str) -> None:
    tree: TopicTree[str, int] = TopicTree()
    with pytest.raises(TopicFilterInvalid):
        tree.subscribe(bad, "c", 0)
    with pytest.raises(TopicFilterInvalid):
        tree.unsubscribe(bad, "c")
    assert len(tree) == 0


def test_split_topic_filter_keeps_empty_levels() -> None:
    assert split_topic_filter("/a//#") == ["", "a", "", "#"]


# --- property tests against the reference matcher -------------------------------------

LEVELS = ["$x", "", "a", "b"]
level = st.sampled_from(LEVELS)
topics = st.lists(level, min_size=1, max_size=5).map("/".join).filter(bool)
filters = st.builds(
    lambda levels, tail: "/".join(levels + tail),
    st.lists(st.sampled_from([*LEVELS, "+"]), min_size=0, max_size=4),
    st.sampled_from([[], ["#"]]),
).filter(bool)
client_keys = st.sampled_from(["c1", "c2", "c3"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(filters, client_keys), max_size=25), st.lists(topics, max_size=10))
def test_match_agrees_with_reference(subs: list[tuple[str, str]], probe: list[str]) -> None:
    tree: TopicTree[str, str] = TopicTree()
    model: dict[tuple[str, str], str] = {}
    for f, k in subs:
        tree.subscribe(f, k, f)
        model[(f, k)] = f
    assert len(tree) == len(model)
    for topic in probe:
        expected = Counter((k, v) for (f, k), v in model.items() if reference_match(f, topic))
        assert Counter(tree.match(topic)) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(filters, client_keys), max_size=25), st.lists(topics, max_size=10))
def test_subscribing_with_places_walks_once_per_filter_and_matches_the_same(
    subs: list[tuple[str, str]], probe: list[str]
) -> None:
    # The restore at start-up: 200,000 subscriptions over 1,000 filters, each filter
    # split and walked once (`places`), and the same tree as one walk per subscription.
    walks: Counter[str] = Counter()

    def counting_split(topic_filter: str) -> list[str]:
        walks[topic_filter] += 1
        return split_topic_filter(topic_filter)

    plain: TopicTree[str, str] = TopicTree()
    placed: TopicTree[str, str] = TopicTree()
    places: topic_tree.Places[str, str] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(topic_tree, "split_topic_filter", counting_split)
        for f, k in subs:
            assert placed.subscribe(f, k, f + k, places) is plain.subscribe(f, k, f + k)
        assert walks == Counter(f for f, _ in subs) + Counter(set(f for f, _ in subs))
    assert set(places) == {f for f, _ in subs}
    assert len(placed) == len(plain)
    for topic in probe:
        assert Counter(placed.match(topic)) == Counter(plain.match(topic))
    for f, _ in subs:
        assert placed.subscribers(f) == plain.subscribers(f)


ops = st.one_of(
    st.tuples(st.just("sub"), filters, client_keys),
    st.tuples(st.just("unsub"), filters, client_keys),
    st.tuples(st.just("match"), topics, st.just("")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=40))
def test_interleaved_changes_keep_cache_and_tree_exact(steps: list[tuple[str, str, str]]) -> None:
    tree: TopicTree[str, int] = TopicTree(cache_size=4)
    model: dict[tuple[str, str], int] = {}
    for n, (op, arg, key) in enumerate(steps):
        if op == "sub":
            assert tree.subscribe(arg, key, n) is ((arg, key) not in model)
            model[(arg, key)] = n
        elif op == "unsub":
            assert tree.unsubscribe(arg, key) is ((arg, key) in model)
            model.pop((arg, key), None)
        else:
            expected = Counter((k, v) for (f, k), v in model.items() if reference_match(f, arg))
            assert Counter(tree.match(arg)) == expected
            continue
        assert tree.subscribers(arg) == {k: v for (f, k), v in model.items() if f == arg}
        assert len(tree) == len(model)
    for f, k in list(model):
        assert tree.unsubscribe(f, k)
    assert tree._root.is_empty()
