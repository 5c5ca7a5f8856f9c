"""The in-process App: real sockets on one side, the live Broker object on the other."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from mqtt_raw import RawClient, assert_broker_works, gen_publish

from .paho_client import V5, PahoClient

if TYPE_CHECKING:
    from conftest import InProcessBroker, InProcessFactory

pytestmark = pytest.mark.timeout(30)


def _wait_for(predicate: object, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_inprocess_broker_serves_real_clients(broker: InProcessBroker) -> None:
    assert broker.port != 0
    assert_broker_works(broker.host, broker.port)
    assert_broker_works(broker.host, broker.port, proto_ver=5)


def test_stats_count_connections_and_publishes(broker: InProcessBroker, uid: str) -> None:
    with RawClient(broker.host, broker.port) as client:
        client.connect(uid)
        for i in range(3):
            client.send(gen_publish(f"stats/{i}", payload=b"x"))
        client.disconnect()
    _wait_for(lambda: broker.call(lambda: broker.broker.stats.publish_received) == 3)
    stats = broker.call(lambda: broker.broker.stats)
    assert stats.clients_total >= 1


def test_persistent_session_is_kept_and_clean_one_is_not(broker: InProcessBroker, uid: str) -> None:
    with RawClient(broker.host, broker.port) as client:
        client.connect(f"{uid}-clean", clean_session=True)
        client.disconnect()
    with RawClient(broker.host, broker.port) as client:
        client.connect(f"{uid}-kept", clean_session=False)
        client.subscribe(1, "kept/#", 1)
        client.disconnect()
    sessions = broker.call(lambda: set(broker.broker.sessions))
    assert f"{uid}-kept" in sessions
    assert f"{uid}-clean" not in sessions


def test_message_published_by_the_broker_itself_reaches_subscribers(
    broker: InProcessBroker, uid: str
) -> None:
    from mqttd.broker.message import Message  # the routing entry of bridges and $SYS

    subscriber = PahoClient(broker.host, broker.port, uid, protocol=V5)
    try:
        subscriber.connect()
        subscriber.subscribe("internal/#", 1)
        broker.call(lambda: broker.broker.publish(Message("internal/x", b"from inside", 1)))
        message = subscriber.expect_message()
        assert (message.topic, message.payload, message.qos) == ("internal/x", b"from inside", 1)
    finally:
        subscriber.close()


def test_configured_connect_timeout_applies(broker_factory: InProcessFactory) -> None:
    def configure(config: object) -> None:
        config.limits.connect_timeout = 0.5  # type: ignore[attr-defined]

    instance = broker_factory(configure)
    with RawClient(instance.host, instance.port) as silent:
        start = time.monotonic()
        assert silent.expect_closed(3) == []
        assert 0.3 <= time.monotonic() - start <= 2.0
