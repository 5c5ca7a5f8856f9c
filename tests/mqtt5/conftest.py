"""Fixtures of the MQTT 5.0 feature tests: in-process brokers with 5.0 settings.

Every test here talks to a real mqttd App over a real socket: paho-mqtt (MQTTv5) where a
client can provoke the behaviour, hand-made packets (`mqtt_raw`) where it cannot. The
broker runs on its own loop thread (`InProcessBroker`); its objects are touched only
through `instance.call`. Each test gets brokers of its own (starting one takes a few
milliseconds), so settings and state never leak between tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import InProcessBroker, InProcessFactory

pytestmark = pytest.mark.timeout(60)

Configure = Callable[[Any], None]


def mqtt_settings(**values: Any) -> Configure:
    """A `configure` callback setting `[mqtt]` / `[limits]` keys by name."""

    def configure(config: Any) -> None:
        for key, value in values.items():
            section = config.mqtt if hasattr(config.mqtt, key) else config.limits
            if not hasattr(section, key):
                raise AttributeError(key)
            setattr(section, key, value)

    return configure


@pytest.fixture
def v5broker(broker_factory: InProcessFactory) -> InProcessBroker:
    """A broker with the default settings, for this test."""
    return broker_factory()


@pytest.fixture
def broker_with(broker_factory: InProcessFactory) -> Callable[..., InProcessBroker]:
    """`broker_with(receive_maximum=2, ...)`: a broker of its own with those settings."""

    def make(**values: Any) -> InProcessBroker:
        return broker_factory(mqtt_settings(**values))

    return make
