"""Fixtures for the integration tests: the broker under test and client factories."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from mqtt_raw import RawClient

from .paho_client import PahoClient

if TYPE_CHECKING:
    from conftest import MqttdProcess

PahoFactory = Callable[..., PahoClient]
RawFactory = Callable[..., RawClient]


@pytest.fixture
def server(mqttd_server: MqttdProcess) -> MqttdProcess:
    """The broker under test: one real mqttd process per test module."""
    return mqttd_server


@pytest.fixture
def paho(server: MqttdProcess) -> Iterator[PahoFactory]:
    """Make paho clients (connected unless ``connect=False``); all are closed at teardown."""
    clients: list[PahoClient] = []

    def factory(
        client_id: str = "", *, connect: bool = True, target: Any = None, **kw: Any
    ) -> PahoClient:
        where = target or server
        client = PahoClient(where.host, where.port, client_id, **kw)
        clients.append(client)
        if connect:
            client.connect()
        return client

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def raw(server: MqttdProcess) -> Iterator[RawFactory]:
    """Open raw-socket clients to the broker; all are closed at teardown."""
    clients: list[RawClient] = []

    def factory(*, target: Any = None, timeout: float = 5.0) -> RawClient:
        where = target or server
        client = RawClient(where.host, where.port, timeout=timeout)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()
