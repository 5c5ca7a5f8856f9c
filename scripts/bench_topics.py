#!/usr/bin/env python3
"""Measure the hot-path data structures of the broker core.

- TopicTree with 100,000 subscriptions (exact 8-level filters, "+" at every level, "#"
  below several prefixes): match cost per publish with a cold and a warm cache,
  subscribe/unsubscribe cost, memory of the tree (tracemalloc).
- RetainedTree with 1,000,000 retained messages: build time, memory, a "#" match, a
  selective wildcard match and a "$SYS/#" match.
- Scheduler: re-arming a keepalive with postpone, and call_at + run_due.

Times are CPU time of this process (time.process_time), so a machine shared with other
work inflates them less than wall time would; memory is what tracemalloc saw allocated
while the structure was built (the topic strings passed in are not counted).

Usage: .venv/bin/python scripts/bench_topics.py [--subs N] [--retained N] [--seed S]
"""

from __future__ import annotations

import argparse
import gc
import random
import time
import tracemalloc
from collections.abc import Callable
from functools import partial

from mqttd.broker.clock import FakeClock
from mqttd.broker.retained import RetainedTree
from mqttd.broker.scheduler import Scheduler
from mqttd.broker.topic_tree import DEFAULT_CACHE_SIZE, TopicTree

# Values per level of the 8-level topic space tenant/region/site/building/floor/device/
# sensor/metric: ~10^13 names, so exact filters rarely collide.
LEVEL_SIZES = [10, 20, 50, 10, 10, 1000, 10, 5]
LEVEL_NAMES = ["tenant", "region", "site", "bldg", "floor", "dev", "sensor", "metric"]


def random_levels(rng: random.Random) -> list[str]:
    return [f"{name}{rng.randrange(n)}" for name, n in zip(LEVEL_NAMES, LEVEL_SIZES, strict=True)]


def make_filters(rng: random.Random, count: int) -> list[str]:
    """60% exact, 25% one "+", 10% "#" below a 2-7 level prefix, 5% "+" and "#"."""
    filters = []
    for _ in range(count):
        levels = random_levels(rng)
        kind = rng.random()
        if kind < 0.60:
            pass
        elif kind < 0.85:
            levels[rng.randrange(8)] = "+"
        elif kind < 0.95:
            levels = [*levels[: rng.randint(2, 7)], "#"]
        else:
            levels[rng.randrange(1, 4)] = "+"
            levels = [*levels[: rng.randint(4, 7)], "#"]
        filters.append("/".join(levels))
    return filters


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """The least CPU time of `repeat` runs of `fn`, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def row(label: str, value: str) -> None:
    print(f"  {label:<58} {value:>12}")


def build_tree(filters: list[str], keys: list[str], cache_size: int) -> TopicTree[str, int]:
    tree: TopicTree[str, int] = TopicTree(cache_size=cache_size)
    for f, k in zip(filters, keys, strict=True):
        tree.subscribe(f, k, 1)
    return tree


def match_all(tree: TopicTree[str, int], topics: list[str]) -> None:
    for t in topics:
        tree.match(t)


def bench_topic_tree(subs: int, rng: random.Random) -> None:
    filters = make_filters(rng, subs)
    keys = [f"client-{i}" for i in range(subs)]
    # Publish topics: half are names an exact filter was built from, half are fresh.
    exact = [f for f in filters if "+" not in f and "#" not in f]
    known = [rng.choice(exact) for _ in range(5000)]
    fresh = ["/".join(random_levels(rng)) for _ in range(5000)]
    topics = known + fresh
    rng.shuffle(topics)
    print(f"TopicTree: {subs:,} subscriptions, {len(topics):,} publish topics (8 levels)")

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tree = build_tree(filters, keys, DEFAULT_CACHE_SIZE)
    tree_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del tree
    gc.collect()

    build = timed(lambda: build_tree(filters, keys, DEFAULT_CACHE_SIZE))
    row("subscribe, building the tree (per op)", f"{build / subs * 1e6:.2f} us")
    gc.disable()
    build = timed(lambda: build_tree(filters, keys, DEFAULT_CACHE_SIZE))
    gc.enable()
    row("  the same with the cyclic GC off", f"{build / subs * 1e6:.2f} us")
    row("tree memory (tracemalloc)", f"{tree_bytes / 2**20:.1f} MiB")
    row("  per subscription", f"{tree_bytes / subs:.0f} B")

    tree = build_tree(filters, keys, 0)  # no cache: every match walks the trie
    for label, probe in (
        ("match, cold, topics an exact filter names", known),
        ("match, cold, fresh topics", fresh),
    ):
        found = sum(len(tree.match(t)) for t in probe) / len(probe)
        cost = timed(partial(match_all, tree, probe), repeat=3) / len(probe)
        row(f"{label} ({found:.1f} matches)", f"{cost * 1e6:.2f} us")
    tree = build_tree(filters, keys, DEFAULT_CACHE_SIZE)
    match_all(tree, topics)
    cost = timed(partial(match_all, tree, topics), repeat=5) / len(topics)
    row("match, warm cache (per publish)", f"{cost * 1e6:.3f} us")

    # Churn on the full tree: clients subscribing and leaving again.
    churn = make_filters(rng, 10_000)

    def churn_once() -> None:
        for f in churn:
            tree.subscribe(f, "churner", 0)
            tree.unsubscribe(f, "churner")

    cost = timed(churn_once, repeat=3) / len(churn)
    row("subscribe + unsubscribe on the full tree (per pair)", f"{cost * 1e6:.2f} us")
    # A wildcard subscribe drops the whole match cache (10,000 topics here): the price
    # of the misses that filled it, paid once.
    wild = [f for f in churn if "+" in f or "#" in f][:20]
    total = 0.0
    for f in wild:
        match_all(tree, topics)
        total += timed(partial(tree.subscribe, f, "churner", 0))
        tree.unsubscribe(f, "churner")
    row("wildcard subscribe with 10,000 topics cached", f"{total / len(wild) * 1e6:.0f} us")
    assert len(tree) == subs


def build_retained(topics: list[str], payload: bytes) -> RetainedTree[bytes]:
    tree: RetainedTree[bytes] = RetainedTree()
    for t in topics:
        tree.set(t, payload)
    return tree


def get_all(tree: RetainedTree[bytes], topics: list[str]) -> None:
    for t in topics:
        tree.get(t)


def set_all(tree: RetainedTree[bytes], topics: list[str], payload: bytes) -> None:
    for t in topics:
        tree.set(t, payload)


def bench_retained(count: int, rng: random.Random) -> None:
    print(f"RetainedTree: {count:,} retained messages (6 levels) + 1,000 under $SYS")
    payload = b"21.5"
    names: set[str] = set()
    while len(names) < count:
        names.add("/".join(random_levels(rng)[:6]))
    topics = list(names)

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tree = build_retained(topics, payload)
    mem = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del tree
    gc.collect()

    start = time.process_time()
    tree = build_retained(topics, payload)
    build = time.process_time() - start
    for i in range(1000):
        tree.set(f"$SYS/broker/stat{i}", payload)
    row("set (per message, building)", f"{build / count * 1e6:.2f} us")
    row("tree memory (tracemalloc)", f"{mem / 2**20:.0f} MiB")
    row("  per retained message", f"{mem / count:.0f} B")
    for topic_filter in (
        "#",
        "tenant3/#",
        "tenant3/+/site7/#",
        "+/region1/+/bldg2/floor3/+",
        "$SYS/#",
    ):
        found = len(tree.match(topic_filter))
        cost = timed(partial(tree.match, topic_filter), repeat=3)
        row(f"match {topic_filter!r}: {found:,} found", f"{cost * 1e3:.1f} ms")
    probe = topics[:10_000]
    cost = timed(partial(get_all, tree, probe), repeat=3) / len(probe)
    row("get, exact topic (per call)", f"{cost * 1e6:.2f} us")
    cost = timed(partial(set_all, tree, probe, b"22.0"), repeat=3) / len(probe)
    row("set, replacing a retained message (per call)", f"{cost * 1e6:.2f} us")
    cost = timed(lambda: sum(1 for _ in tree))
    row("iterate all (persistence/expiry sweep)", f"{cost * 1e3:.0f} ms")


def bench_scheduler(connections: int) -> None:
    print(f"Scheduler: {connections:,} keepalive timers")
    clock = FakeClock()
    sched = Scheduler(clock)

    def noop() -> None:
        pass

    start = time.process_time()
    timers = [sched.call_later(60 + i % 60, noop) for i in range(connections)]
    row("call_later (per timer)", f"{(time.process_time() - start) / connections * 1e6:.2f} us")
    packets = 10
    start = time.process_time()
    for n in range(packets):
        deadline = clock.now() + 90 + n
        for t in timers:
            t.postpone(deadline)
    cost = (time.process_time() - start) / (packets * connections)
    row("postpone, i.e. keepalive re-armed per packet (per call)", f"{cost * 1e9:.0f} ns")
    clock.advance(200)
    start = time.process_time()
    ran = sched.run_due()
    cost = time.process_time() - start
    row(f"run_due: {ran:,} due, each re-filed once (per timer)", f"{cost / ran * 1e6:.2f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subs", type=int, default=100_000)
    parser.add_argument("--retained", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    bench_topic_tree(args.subs, rng)
    bench_scheduler(args.subs)
    bench_retained(args.retained, rng)


if __name__ == "__main__":
    main()
