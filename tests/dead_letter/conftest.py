"""Fixtures of the dead-letter tests: a live broker built from a config dict, paho clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mqttd.config import config_from_dict

from .live import LiveBroker, Paho

LiveFactory = Callable[..., LiveBroker]
PahoFactory = Callable[..., Paho]


@pytest.fixture
def live() -> Iterator[LiveFactory]:
    """live(raw_config) -> a started broker on 127.0.0.1, a free port, no persistence."""
    started: list[LiveBroker] = []

    def factory(raw: dict[str, Any] | None = None) -> LiveBroker:
        document: dict[str, Any] = {
            "listeners": [{"host": "127.0.0.1", "port": 0}],
            "persistence": {"enabled": False},
            "sys": {"interval": 0},
        }
        for section, values in (raw or {}).items():
            document.setdefault(section, {}).update(values)
        broker = LiveBroker(config_from_dict(document)).start()
        started.append(broker)
        return broker

    yield factory
    for broker in started:
        broker.stop()


@pytest.fixture
def paho() -> Iterator[PahoFactory]:
    """paho(broker, client_id, **options) -> a connected client, closed at teardown."""
    clients: list[Paho] = []

    def factory(broker: LiveBroker, client_id: str, **options: Any) -> Paho:
        client = Paho(broker.port, client_id, **options)
        clients.append(client)
        return client.connect()

    yield factory
    for client in clients:
        client.close()
