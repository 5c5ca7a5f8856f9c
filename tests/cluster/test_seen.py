"""The ids of messages a node routed (mqttd/cluster/seen.py): each id routed once, a
window per sending process in bounded memory."""

from __future__ import annotations

import random

from mqttd.cluster.seen import MAX_SENDERS, SPAN, SeenIds


def test_each_id_is_first_once_in_any_order() -> None:
    seen = SeenIds()
    ids = [(boot, seq) for boot in (1, 2, 3) for seq in range(1, 3000, 3)]
    shuffled = ids[:]
    random.Random(7).shuffle(shuffled)
    assert all(seen.first(boot, seq) for boot, seq in shuffled)
    assert not any(seen.first(boot, seq) for boot, seq in ids)
    # The gaps (seqs of topics this node does not hold) were never seen.
    assert seen.first(1, 2) and seen.first(2, 3000 + 2)


def test_a_replay_after_a_long_run_still_knows_what_was_routed() -> None:
    seen = SeenIds()
    # Sparse seqs, as a node sees of another's traffic, over most of the window.
    routed = list(range(1, SPAN - 1000, 97))
    for seq in routed:
        assert seen.first(9, seq)
    replay = routed[-5000:]
    assert not any(seen.first(9, seq) for seq in replay)
    assert seen.first(9, routed[-1] + 1)


def test_the_window_moves_on_and_reuses_its_bits() -> None:
    seen = SeenIds()
    assert seen.first(5, 10)
    assert seen.first(5, 10 + SPAN)  # the same ring slot, one window later
    assert not seen.first(5, 10 + SPAN)
    # Older than the window: counted as seen (a copy that old is never delivered twice).
    assert not seen.first(5, 10)
    # Everything between was cleared when the window moved: new ids are first.
    assert seen.first(5, 11 + SPAN - 8) and seen.first(5, 9 + SPAN)
    assert seen.first(5, 3 * SPAN + 5)  # a jump of more than a window


def test_at_most_max_senders_are_remembered_the_least_recent_goes() -> None:
    seen = SeenIds()
    for boot in range(MAX_SENDERS):
        assert seen.first(boot, 1)
    assert seen.first(0, 2)  # boot 0 heard from again: boot 1 is now the oldest
    assert seen.first(100, 1)
    assert len(seen) == MAX_SENDERS
    assert not seen.first(0, 1)  # kept
    assert seen.first(1, 1)  # forgotten: a new window
