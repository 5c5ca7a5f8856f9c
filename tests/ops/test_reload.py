"""`App.reload` (what SIGHUP calls): what applies at once, the hooks, what waits for a restart."""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator

import pytest

from mqttd.app import App, ephemeral_config
from mqttd.config import Config


@pytest.fixture
async def app() -> AsyncIterator[App]:
    config = ephemeral_config()
    config.sys.interval = 0
    app = App(config)
    await app.start()
    yield app
    await app.stop()


def edited(app: App) -> Config:
    return copy.deepcopy(app.config)


async def test_log_level_applies_at_once(app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mqttd")
    root = logging.getLogger()
    before = root.level
    try:
        new = edited(app)
        new.log.level = "warning"
        app.reload(new)
        assert root.level == logging.WARNING
        assert app.config.log.level == "warning"
        assert 'reloaded: log.level "info" -> "warning"' in caplog.text
    finally:
        root.setLevel(before)


async def test_sys_interval_starts_stops_and_changes_the_tree(app: App) -> None:
    assert app.sys_tree is None
    new = edited(app)
    new.sys.interval = 7
    app.reload(new)
    assert app.sys_tree is not None and app.sys_tree.running and app.sys_tree.interval == 7
    assert app.broker.retained.match("$SYS/broker/version")  # published at once
    new = edited(app)
    new.sys.interval = 0
    app.reload(new)
    assert not app.sys_tree.running


async def test_hooks_get_the_new_config_and_one_failing_does_not_stop_the_others(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Config] = []

    def broken(config: Config) -> None:
        raise RuntimeError("password file unreadable")

    app.reload_hooks.append(broken)
    app.reload_hooks.append(seen.append)
    new = edited(app)
    app.reload(new)
    assert seen == [new]
    assert "reload hook" in caplog.text and "password file unreadable" in caplog.text


async def test_sections_needing_a_restart_are_named_and_not_half_applied(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mqttd")
    listeners = app.config.listeners
    new = edited(app)
    new.limits.max_inflight_messages = 3
    new.listeners[0].port = 1
    app.reload(new)
    assert (
        "changed, applied at the next start: listeners[0].port 0 -> 1, "
        "limits.max_inflight_messages 20 -> 3"
    ) in caplog.text
    assert "reloaded: nothing changed" in caplog.text
    assert app.config.listeners == listeners  # still what is bound
    assert app.config.limits.max_inflight_messages == app.broker.settings.max_inflight_messages
