"""The delivery-plan cache (Broker.publish) is dropped selectively on SUBSCRIBE/UNSUBSCRIBE.

An exact filter can change the plan of one topic, itself; a wildcard filter any plan.
Dashboards that subscribe and unsubscribe exact topics must not throw away every plan.
"""

from __future__ import annotations

from support.core import Harness


def _cached_plans(harness: Harness) -> set[str]:
    return set(harness.broker._plans)


def _two_receivers_each_on_a_and_b(harness: Harness) -> None:
    for name in ("r1", "r2"):
        harness.connected(name).subscribe("a", "b")
    publisher = harness.connected("pub")
    publisher.publish("a")
    publisher.publish("b")


def test_an_exact_subscription_drops_only_the_plan_of_its_own_topic(harness: Harness) -> None:
    _two_receivers_each_on_a_and_b(harness)
    assert _cached_plans(harness) == {"a", "b"}
    other = harness.connected("other")
    other.subscribe("a")
    assert _cached_plans(harness) == {"b"}
    other.unsubscribe("a")
    assert _cached_plans(harness) == {"b"}


def test_a_wildcard_subscription_drops_every_plan(harness: Harness) -> None:
    _two_receivers_each_on_a_and_b(harness)
    harness.connected("other").subscribe("+")
    assert _cached_plans(harness) == set()


def test_a_plan_built_again_after_a_change_delivers_to_the_new_subscriber(
    harness: Harness,
) -> None:
    _two_receivers_each_on_a_and_b(harness)
    other = harness.connected("other")
    other.subscribe("a")
    harness.connected("pub2").publish("a", b"after")
    assert [p.payload for p in other.publishes()] == [b"after"]
