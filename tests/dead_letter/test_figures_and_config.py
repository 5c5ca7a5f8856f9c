"""Drops by reason in $SYS and on /metrics, `[dead_letter]` in the config, and its reload."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest

from mqttd.app import App, ephemeral_config
from mqttd.broker.dead_letter import DEFAULT_REASONS, DeadLetterSettings, DropReason
from mqttd.config import ConfigError, DeadLetterConfig, config_from_dict
from mqttd.ops.metrics import collect_broker, render
from mqttd.ops.sys_tree import SYS_PREFIX, SysTree
from mqttd.protocol import Properties

from .sansio import Core

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "mqttd.toml"


async def dropping_core() -> Core:
    """A core that has dropped 2 queue_full, 1 too_large, 1 no_subscribers."""
    core = await Core(max_queued_messages=1).start()
    offline = core.client("offline", properties=Properties(session_expiry_interval=60))
    offline.subscribe("q", 1)
    offline.disconnect()
    tiny = core.client("tiny", properties=Properties(maximum_packet_size=32))
    tiny.subscribe("big", 0)
    pub = core.client("pub")
    for _ in range(3):
        pub.publish("q", b"x", qos=1)
    pub.publish("big", b"b" * 64)
    pub.publish("nobody", b"x", qos=1)
    core.advance()
    return core


async def test_sys_tree_has_the_total_and_each_reason() -> None:
    core = await dropping_core()
    tree = SysTree(core.broker, 10)
    tree.start()
    values = tree.current
    assert values[SYS_PREFIX + "publish/messages/dropped"] == "3"  # no_subscribers left out
    by_reason = {
        reason: values[SYS_PREFIX + f"publish/messages/dropped/{reason}"] for reason in DropReason
    }
    assert by_reason == {
        DropReason.QUEUE_FULL: "2",
        DropReason.EXPIRED: "0",
        DropReason.TOO_LARGE: "1",
        DropReason.NOT_AUTHORISED: "0",
        DropReason.RETAINED_EXPIRED: "0",
        DropReason.SESSION_EXPIRED: "0",
        DropReason.DISCONNECTED: "0",
        DropReason.NO_SUBSCRIBERS: "1",
    }
    assert values[SYS_PREFIX + "dead_letter/published"] == "3"
    assert values[SYS_PREFIX + "dead_letter/suppressed"] == "0"


async def test_metrics_export_every_reason_and_the_dead_letter_counters() -> None:
    core = await dropping_core()
    families = {f.name: f for f in collect_broker(core.broker)}
    dropped = {
        labels["reason"]: value
        for labels, value in families["mqttd_messages_dropped_total"].samples
    }
    assert dropped == {reason.value: 0 for reason in DropReason} | {
        "queue_full": 2,
        "too_large": 1,
        "no_subscribers": 1,
    }
    assert families["mqttd_dead_letters_published_total"].samples == [({}, 3)]
    assert families["mqttd_dead_letters_suppressed_total"].samples == [({}, 0)]
    text = render(families.values())
    assert 'mqttd_messages_dropped_total{reason="not_authorised"} 0' in text


def test_config_defaults_are_off_with_every_reason_but_no_subscribers() -> None:
    section = config_from_dict({}).dead_letter
    assert section == DeadLetterConfig()
    assert section.settings() == DeadLetterSettings()
    assert section.settings().reasons == DEFAULT_REASONS
    assert section.prefix == "$dead" and not section.enabled


def test_config_values_reach_the_settings() -> None:
    section = config_from_dict(
        {
            "dead_letter": {
                "enabled": True,
                "prefix": "audit/dead",
                "reasons": ["expired", "no_subscribers"],
                "max_rate": 2.5,
                "burst": 7,
            }
        }
    ).dead_letter
    assert section.settings() == DeadLetterSettings(
        True, "audit/dead", frozenset({DropReason.EXPIRED, DropReason.NO_SUBSCRIBERS}), 2.5, 7
    )


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        (
            {"reasons": ["expired", "lost"]},
            'config error: dead_letter.reasons[1]: "lost" is not allowed (allowed: "queue_full", '
            '"expired", "too_large", "not_authorised", "retained_expired", "session_expired", '
            '"disconnected", "no_subscribers")',
        ),
        (
            {"max_rate": 0},
            "config error: dead_letter.max_rate: 0 is out of range (allowed: >= 0.001)",
        ),
        ({"burst": 0}, "config error: dead_letter.burst: 0 is out of range (allowed: >= 1)"),
        (
            {"reasons": "expired"},
            'config error: dead_letter.reasons: "expired" is a string, expected an array',
        ),
    ],
)
def test_config_errors_name_the_key(raw: dict[str, object], line: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"dead_letter": raw})
    assert info.value.lines == [line]


@pytest.mark.parametrize("prefix", ["", "/dead", "dead/", "dead/#", "+/x", "$SYS/dead", "$share/g"])
def test_config_refuses_a_prefix_that_is_no_topic_name(prefix: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"dead_letter": {"prefix": prefix}})
    [line] = info.value.lines
    assert line.startswith("config error: dead_letter.prefix: ")


def test_the_example_file_has_the_section_at_its_defaults() -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    assert config_from_dict({"dead_letter": raw["dead_letter"]}).dead_letter == DeadLetterConfig()


async def test_the_app_applies_the_section_and_a_reload_changes_it() -> None:
    config = ephemeral_config()
    config.sys.interval = 0
    config.dead_letter.enabled = True
    config.dead_letter.reasons = ["expired"]
    app = App(config)
    await app.start()
    try:
        dead_letters = app.broker.dead_letters
        assert dead_letters.settings.enabled
        assert dead_letters.settings.reasons == {DropReason.EXPIRED}
        new = copy.deepcopy(app.config)
        new.dead_letter.prefix = "$lost"
        new.dead_letter.max_rate = 5.0
        app.reload(new)
        assert dead_letters.settings.prefix == "$lost"
        assert dead_letters.settings.max_rate == 5.0
    finally:
        await app.stop()
