"""A subscription on one node takes effect cluster-wide by its SUBACK, as on one broker.

Two real nodes on a real nats-server. A client on node b subscribes to a topic nobody
held before, and as soon as its SUBACK arrives a client on node a publishes on it: the
message must arrive, every time. Node b's SUBACK waits until nats-server has b's new
subscription (cluster/interest.py). Once with both nodes next to nats-server, once with
node b's traffic to nats-server delayed by a slow link, which loses messages if the
SUBACK goes out at once. With NATS away, the SUBACK waits no longer than
`request_timeout`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from integration.paho_client import V5, PahoClient

from .conftest import NatsLink, NatsServer, PahoFactory, node_toml

if TYPE_CHECKING:
    from conftest import MqttdFactory

pytestmark = pytest.mark.timeout(120)

ROUNDS = 50


def subscribe_then_publish(sub: PahoClient, pub: PahoClient, prefix: str) -> None:
    """`ROUNDS` fresh topics: subscribe on one node, publish on the other right after the
    SUBACK; every message arrives."""
    for i in range(ROUNDS):
        topic = f"{prefix}/{i}"
        sub.subscribe(topic, 1)
        # Alternately QoS 0 (core NATS only) and QoS 1 (also the messages stream).
        pub.publish(topic, f"m{i}".encode(), qos=i % 2)
    want = {(f"{prefix}/{i}", f"m{i}".encode()) for i in range(ROUNDS)}
    got: set[tuple[str, bytes]] = set()
    deadline = time.monotonic() + 5
    while got != want and time.monotonic() < deadline:
        try:
            message = sub.expect_message(0.2)
        except AssertionError:
            continue
        got.add((message.topic, message.payload))
    missing = sorted(want - got)
    assert not missing, f"{len(missing)} of {ROUNDS} published right after SUBACK lost"
    sub.expect_no_message(0.2)  # and none twice


def test_a_message_published_right_after_suback_on_another_node_arrives(
    nats_server: NatsServer, mqttd_factory: MqttdFactory, paho_factory: PahoFactory
) -> None:
    a = mqttd_factory(config=node_toml(nats_server.url, "a"))
    b = mqttd_factory(config=node_toml(nats_server.url, "b"))
    sub = paho_factory(b.port, "sub-on-b", protocol=V5)
    pub = paho_factory(a.port, "pub-on-a")
    subscribe_then_publish(sub, pub, "fresh")


def test_the_suback_waits_for_a_slow_link_to_nats(
    nats_server: NatsServer,
    nats_link: Callable[..., NatsLink],
    mqttd_factory: MqttdFactory,
    paho_factory: PahoFactory,
) -> None:
    link = nats_link(delay=0.05)  # what node b sends reaches nats-server 50 ms late
    a = mqttd_factory(config=node_toml(nats_server.url, "a"))
    b = mqttd_factory(config=node_toml(link.url, "b"))
    sub = paho_factory(b.port, "sub-on-b")
    pub = paho_factory(a.port, "pub-on-a")
    started = time.monotonic()
    subscribe_then_publish(sub, pub, "slow")
    # Each SUBACK waited for the round trip through the slow link.
    assert time.monotonic() - started >= ROUNDS * 0.05


def test_with_nats_away_the_suback_goes_after_request_timeout(
    nats_server: NatsServer,
    nats_link: Callable[..., NatsLink],
    mqttd_factory: MqttdFactory,
    paho_factory: PahoFactory,
) -> None:
    link = nats_link()
    a = mqttd_factory(config=node_toml(nats_server.url, "a"))
    b = mqttd_factory(config=node_toml(link.url, "b", "request_timeout = 0.5"))
    sub = paho_factory(b.port, "sub-on-b")
    link.cut()  # node b loses NATS (it fences itself only after 3.75 s)
    started = time.monotonic()
    assert sub.subscribe("away/#", 1) == [1]
    waited = time.monotonic() - started
    assert 0.4 <= waited < 2.0, waited  # held, but not longer than request_timeout
    link.heal()
    # Once b is back on NATS its subscription is there (nats-py subscribes again).
    pub = paho_factory(a.port, "pub-on-a")
    deadline = time.monotonic() + 10
    while True:
        pub.publish("away/x", b"back", qos=1)
        try:
            assert sub.expect_message(0.3).payload == b"back"
            break
        except AssertionError:
            assert time.monotonic() < deadline, "b never got its subscription back"
    assert "SUBACK sent without it" in b.stderr
