"""The retained-message tree: exact storage, filter matching, the "$" rule, pruning."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttd.broker.retained import RetainedTree, _child, _child_list, _Node
from mqttd.protocol.errors import TopicFilterInvalid, TopicNameInvalid


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


LEVELS = ["$x", "", "a", "b"]
topics = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=5).map("/".join).filter(bool)
filters = st.builds(
    lambda levels, tail: "/".join(levels + tail),
    st.lists(st.sampled_from([*LEVELS, "+"]), min_size=0, max_size=4),
    st.sampled_from([[], ["#"]]),
).filter(bool)


def retained(*topic_names: str) -> RetainedTree[str]:
    """A tree retaining, for each topic, its own name as the message."""
    tree: RetainedTree[str] = RetainedTree()
    for t in topic_names:
        tree.set(t, t)
    return tree


def matched(tree: RetainedTree[str], topic_filter: str) -> list[str]:
    return sorted(t for t, _ in tree.match(topic_filter))


def test_set_get_replace_delete() -> None:
    tree: RetainedTree[bytes] = RetainedTree()
    assert len(tree) == 0
    tree.set("a/b", b"1")
    assert tree.get("a/b") == b"1"
    assert tree.get("a") is None  # an inner node holds no message
    assert tree.get("a/b/c") is None
    tree.set("a/b", b"2")
    assert len(tree) == 1
    assert tree.get("a/b") == b"2"
    tree.set("a", b"3")
    assert len(tree) == 2
    assert tree.delete("a/b") is True
    assert tree.delete("a/b") is False
    assert tree.delete("nothing/here") is False
    assert tree.get("a/b") is None
    assert tree.get("a") == b"3"
    assert len(tree) == 1


def test_delete_prunes_empty_branches_but_keeps_holders() -> None:
    tree = retained("a/b/c/d", "a/b", "a/x")
    assert tree.delete("a/b/c/d")
    assert tree.get("a/b") == "a/b"
    root_a = _child(tree._root, "a")
    assert isinstance(root_a, _Node)
    holder = _child(root_a, "b")  # nodes are keyed by their own level name
    assert isinstance(holder, _Node) and holder.children is None  # "c/d" pruned below it
    assert holder.topic == "a/b" and holder.level == "b"
    assert tree.delete("a/b")
    assert root_a.children == "a/x"  # one child left, a message's leaf: held inline
    assert tree.delete("a/x")
    assert tree._root.children is None
    # Deleting an inner node that holds no message changes nothing.
    tree = retained("a/b")
    assert tree.delete("a") is False
    assert tree.get("a/b") == "a/b"


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("#", ["/lead", "a", "a/b", "a/b/c", "a/c", "b//x"]),
        ("a/#", ["a", "a/b", "a/b/c", "a/c"]),  # "#" includes the parent level
        ("a/+", ["a/b", "a/c"]),
        ("+/b/+", ["a/b/c"]),
        ("+", ["a"]),
        ("+/+", ["/lead", "a/b", "a/c"]),
        ("b/+/x", ["b//x"]),
        ("/lead", ["/lead"]),
        ("a/b/c/#", ["a/b/c"]),
        ("a/b/c/+", []),
        ("z/#", []),
        ("$SYS/#", ["$SYS/broker/uptime", "$SYS/clients"]),
        ("$SYS/+", ["$SYS/clients"]),
        ("$SYS/broker/uptime", ["$SYS/broker/uptime"]),
        ("+/broker/uptime", []),
        ("+/#", ["/lead", "a", "a/b", "a/b/c", "a/c", "b//x"]),
    ],
)
def test_match_by_filter(topic_filter: str, expected: list[str]) -> None:
    tree = retained(
        "a", "a/b", "a/c", "a/b/c", "b//x", "/lead", "$SYS/broker/uptime", "$SYS/clients"
    )
    assert matched(tree, topic_filter) == expected


def test_dollar_below_the_first_level_is_an_ordinary_level() -> None:
    tree = retained("a/$x", "a/$x/y")
    assert matched(tree, "a/+") == ["a/$x"]
    assert matched(tree, "a/#") == ["a/$x", "a/$x/y"]


def test_iteration_yields_every_pair_and_tolerates_deletes() -> None:
    names = [f"s/{i}/t" for i in range(50)] + ["$SYS/x", "/y"]
    tree = retained(*names)
    assert sorted(tree) == sorted((n, n) for n in names)
    seen: list[str] = []
    doomed: set[str] = set()
    for topic, _ in tree:
        seen.append(topic)
        # An expiry sweep deletes while iterating; messages deleted ahead are not yielded.
        if not doomed:
            doomed = set([n for n in names if n != topic][:10])
            for other in doomed:
                assert tree.delete(other)
        assert tree.delete(topic)
    assert not doomed & set(seen)
    assert sorted(seen + sorted(doomed)) == sorted(names)
    assert len(tree) == 0
    assert tree._root.children is None


@pytest.mark.parametrize("bad", ["", "a/+", "a/#", "+", "a/b#"])
def test_set_refuses_non_topic_names(bad: str) -> None:
    tree: RetainedTree[str] = RetainedTree()
    with pytest.raises(TopicNameInvalid):
        tree.set(bad, "x")
    assert len(tree) == 0


@pytest.mark.parametrize("bad", ["", "a/+", "a/#", "+", "a/b#"])
def test_load_refuses_non_topic_names(bad: str) -> None:
    tree: RetainedTree[str] = RetainedTree()
    with pytest.raises(TopicNameInvalid):
        tree.load([("ok/1", "x"), (bad, "y")])
    assert tree.get("ok/1") == "x" and tree.get(bad) is None


def test_match_refuses_invalid_filters() -> None:
    with pytest.raises(TopicFilterInvalid):
        retained("a").match("a/#/b")


ops = st.one_of(
    st.tuples(st.just("set"), topics),
    st.tuples(st.just("delete"), topics),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=30), st.lists(filters, max_size=8))
def test_match_agrees_with_reference(steps: list[tuple[str, str]], probe: list[str]) -> None:
    tree: RetainedTree[int] = RetainedTree()
    model: dict[str, int] = {}
    for n, (op, topic) in enumerate(steps):
        if op == "set":
            tree.set(topic, n)
            model[topic] = n
        else:
            assert tree.delete(topic) is (topic in model)
            model.pop(topic, None)
        assert len(tree) == len(model)
    assert sorted(tree) == sorted(model.items())
    for topic in model:
        assert tree.get(topic) == model[topic]
    for f in probe:
        expected = sorted((t, v) for t, v in model.items() if reference_match(f, t))
        assert sorted(tree.match(f)) == expected
    for topic in model:
        assert tree.delete(topic)
    assert tree._root.children is None


# -- iter_sorted: the admin API's cursor pages ------------------------------------------------

_LEVEL = st.sampled_from(["a", "b", "a-b", "", "1", "z", "$x"])
_TOPIC = (
    st.lists(_LEVEL, min_size=1, max_size=4)
    .map("/".join)
    .filter(lambda t: t != "" and "$" not in t[1:])
)
_FILTERS = ["#", "+", "a/#", "+/+", "a/+/b", "$x/#", "+/#", "a", "a//#", "b/+/+/#", "$x/+"]


def _matches(topic_filter: str, topic: str) -> bool:
    f, t = topic_filter.split("/"), topic.split("/")
    if topic.startswith("$") and f[0] in ("+", "#"):
        return False
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or level not in ("+", t[i]):
            return False
    return len(f) == len(t)


@settings(max_examples=60, deadline=None)
@given(st.sets(_TOPIC, max_size=60), st.sampled_from(_FILTERS), st.integers(1, 7))
def test_iter_sorted_pages_through_every_match_in_topic_order(
    topics: set[str], topic_filter: str, page: int
) -> None:
    tree: RetainedTree[str] = RetainedTree()
    for topic in topics:
        tree.set(topic, topic)
    expected = sorted((t for t in topics if _matches(topic_filter, t)), key=lambda t: t.split("/"))
    assert [t for t, _ in tree.iter_sorted(topic_filter)] == expected
    seen: list[str] = []
    cursor = None
    while True:
        got = list(itertools.islice(tree.iter_sorted(topic_filter, cursor), page))
        seen += [t for t, _ in got]
        if len(got) < page:
            break
        cursor = got[-1][0]
    assert seen == expected


def test_bulk_load_builds_the_same_tree_as_set() -> None:
    # `load` (start-up) reuses the previous topic's path; any order of topics, empty
    # levels, "$" topics and a topic that is another's parent must give what `set` gives.
    rng = random.Random(5)
    names = ["", "a", "b", "$x", "e", "f"]
    for _ in range(300):
        drawn = ("/".join(rng.choices(names, k=rng.randint(1, 4))) for _ in range(30))
        topics = [t for t in drawn if t]
        by_set: RetainedTree[int] = RetainedTree()
        for i, topic in enumerate(topics):
            by_set.set(topic, i)
        by_load: RetainedTree[int] = RetainedTree()
        by_load.load((topic, i) for i, topic in enumerate(topics))
        assert len(by_load) == len(by_set)
        for topic_filter in ("#", "+/#", "a/#", "+", "+/+", "/#", "$x/#", "a/+/b"):
            assert sorted(by_load.match(topic_filter)) == sorted(by_set.match(topic_filter))
        for topic in set(topics):
            assert by_load.get(topic) == by_set.get(topic)
            assert by_load.delete(topic)
        assert by_load._root.children is None


def _nodes(tree: RetainedTree[object]) -> list[_Node | str]:
    stack = list(_child_list(tree._root))
    seen: list[_Node | str] = []
    while stack:
        node = stack.pop()
        seen.append(node)
        if isinstance(node, _Node):
            stack.extend(_child_list(node))
    return seen


@pytest.mark.parametrize("how", ["set", "load"])
def test_inner_nodes_keep_no_path_and_share_their_level_names(how: str) -> None:
    # Inner nodes are keyed by their own level name, not their whole path, and a level
    # name repeated under many parents is one string; a message's last level has no
    # node, only its topic string (the index's key): what a million retained messages
    # on "fleet/<k>/<m>/state" keep (docs/benchmarks.md, start-up, seventh round).
    # Each topic is a string of its own, as rows from a store or packets bring them.
    topics = [
        "".join(["fleet/", str(k), "/", str(m), "/state"]) for k in range(3) for m in range(40, 50)
    ]
    topics.append("fleet/1")  # a message on an inner node
    tree: RetainedTree[object] = RetainedTree()
    if how == "set":
        for topic in topics:
            tree.set(topic, topic.upper())
    else:
        tree.load((topic, topic.upper()) for topic in topics)
    nodes = _nodes(tree)
    leaves = [n for n in nodes if isinstance(n, str)]
    inner = [n for n in nodes if isinstance(n, _Node)]
    assert sorted(leaves) == sorted(topics[:-1])
    index_keys = {id(t) for t in tree._index}
    assert all(id(leaf) in index_keys for leaf in leaves)  # the index's own strings
    by_level: dict[str, set[int]] = {}
    for node in inner:
        assert "/" not in node.level  # no whole path on any node
        by_level.setdefault(node.level, set()).add(id(node.level))
        assert node.topic is None or (node.topic == "fleet/1" and node.level == "1")
    # "45" under 3 parents is one string, as is every other level name.
    assert all(len(ids) == 1 for ids in by_level.values())
    assert len(inner) == 1 + 3 + 30
    assert tree.get("fleet/1") == "FLEET/1"
    assert sorted(t for t, _ in tree.match("fleet/+/45/#")) == [
        f"fleet/{k}/45/state" for k in range(3)
    ]
    assert [t for t, _ in tree.iter_sorted("fleet/#", after="fleet/1/49/state")] == [
        f"fleet/2/{m}/state" for m in range(40, 50)
    ]
    assert tree.delete("fleet/1") and tree.get("fleet/1/45/state") == "FLEET/1/45/STATE"
    for topic in topics[:-1]:
        assert tree.delete(topic)
    assert tree._root.children is None and len(tree) == 0


def test_a_leaf_that_gets_levels_below_it_becomes_a_node() -> None:
    tree = retained("a/b")
    assert _child(_child(tree._root, "a"), "b") == "a/b"  # type: ignore[arg-type]
    tree.set("a/b/c", "a/b/c")
    grown = _child(_child(tree._root, "a"), "b")  # type: ignore[arg-type]
    assert isinstance(grown, _Node) and grown.topic == "a/b" and grown.children == "a/b/c"
    assert matched(tree, "a/#") == ["a/b", "a/b/c"]
    assert matched(tree, "a/b") == ["a/b"] and matched(tree, "a/+/+") == ["a/b/c"]
    tree.load([("x", "x"), ("x/y", "x/y")])  # the same in a load
    assert matched(tree, "x/#") == ["x", "x/y"]


def test_shared_level_names_stay_bounded() -> None:
    # Level names that never repeat (device ids) do not make the sharing table grow.
    from mqttd.broker import retained as module

    tree: RetainedTree[int] = RetainedTree()
    tree.load((f"dev/{i}/state", i) for i in range(module._SHARED_LEVELS + 100))
    assert len(tree._levels) <= module._SHARED_LEVELS
    assert tree.get(f"dev/{module._SHARED_LEVELS + 99}/state") == module._SHARED_LEVELS + 99
    assert len(tree.match("dev/+/state")) == module._SHARED_LEVELS + 100
