"""Bridge topic rules (Mosquitto's table), `[[bridge]]` validation, reconnect backoff."""

from __future__ import annotations

import random
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from mqttd.bridge.backoff import Backoff
from mqttd.bridge.topics import Direction, TopicRule, TopicRules, rule_errors, topic_matches
from mqttd.bridge.validate import parse_address
from mqttd.config import (
    BridgeConfig,
    BridgeTLSConfig,
    BridgeTopicConfig,
    ConfigError,
    config_from_dict,
)

# -- topic rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "local", "remote", "local_topic", "remote_topic"),
    [
        # The rows of mosquitto.conf(5)'s table, with "topic" as the pattern.
        ("topic", "L/", "R/", "L/topic", "R/topic"),
        ("topic", "L/", "", "L/topic", "topic"),
        ("topic", "", "R/", "topic", "R/topic"),
        ("topic", "", "", "topic", "topic"),
        ("", "local", "remote", "local", "remote"),
        # And a remapped tree: "topic # both 2 local/topic/ remote/topic/".
        ("#", "local/topic/", "remote/topic/", "local/topic/a/b", "remote/topic/a/b"),
    ],
)
def test_mosquitto_remapping_table(
    pattern: str, local: str, remote: str, local_topic: str, remote_topic: str
) -> None:
    rule = TopicRule(pattern, Direction.BOTH, 0, local, remote)
    assert rule.local_filter == local + pattern
    assert rule.remote_filter == remote + pattern
    assert rule.to_remote(local_topic) == remote_topic
    assert rule.to_local(remote_topic) == local_topic


@pytest.mark.parametrize(
    ("pattern", "local", "remote", "key"),
    [
        ("", "local", "", "pattern"),
        ("", "", "remote", "pattern"),
        ("", "", "", "pattern"),
        ("a/#/b", "", "", "pattern"),
        ("#", "x/+/", "", "local_prefix"),
        ("#", "", "y#", "remote_prefix"),
        ("#", "", "y", "remote_prefix"),  # "y#" is not a filter: prefixes end with "/"
    ],
)
def test_invalid_rules_name_the_key(pattern: str, local: str, remote: str, key: str) -> None:
    errors = rule_errors(pattern, local, remote)
    assert errors and errors[0][0] == key


def test_a_topic_outside_the_prefix_has_no_name_on_the_other_side() -> None:
    rule = TopicRule("#", Direction.OUT, 0, "site/", "")
    assert rule.to_remote("site") is None  # "site/#" matches "site", but no prefix to strip
    assert rule.to_remote("other/x") is None
    assert rule.to_remote("site/x") == "x"


def test_the_first_matching_rule_renames() -> None:
    rules = TopicRules(
        [
            TopicRule("a/#", Direction.OUT, 1, "", "first/"),
            TopicRule("#", Direction.BOTH, 0, "", "second/"),
            TopicRule("cmd/#", Direction.IN, 2, "in/", "r/"),
        ]
    )
    assert rules.to_remote("a/x") == "first/a/x"
    assert rules.to_remote("b/x") == "second/b/x"
    assert rules.to_local("second/z") == "z"
    assert rules.to_local("r/cmd/go") == "in/cmd/go"
    assert rules.local_subscriptions() == {"a/#": 1, "#": 0}
    assert rules.remote_subscriptions() == {"second/#": 0, "r/cmd/#": 2}


def test_repeated_filters_are_subscribed_once_at_the_highest_qos() -> None:
    rules = TopicRules([TopicRule("x/#", Direction.OUT, 0), TopicRule("x/#", Direction.BOTH, 2)])
    assert rules.local_subscriptions() == {"x/#": 2}


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("#", "a/b", True),
        ("a/#", "a", True),  # the parent level [MQTT-4.7.1-2]
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("+/+", "/x", True),
        ("#", "$SYS/x", False),  # [MQTT-4.7.2-1]
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
    ],
)
def test_topic_matching(topic_filter: str, topic: str, matches: bool) -> None:
    assert topic_matches(topic_filter, topic) is matches


# -- [[bridge]] validation -------------------------------------------------------------------


def bridge(**keys: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"name": "cloud", "addresses": ["h:1883"], "topics": [{"pattern": "#"}]}
    table.update(keys)
    return table


def errors_of(*bridges: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"bridge": list(bridges)})
    return info.value.lines


def test_a_minimal_bridge_gets_the_documented_defaults() -> None:
    [config] = config_from_dict({"bridge": [bridge()]}).bridge
    assert config.protocol_version == 4
    assert config.try_private is True
    assert config.clean_start is False
    assert config.keepalive == 60
    assert config.session_expiry == 0xFFFFFFFF
    assert (config.reconnect_delay_min, config.reconnect_delay_max) == (1.0, 30.0)
    assert (config.max_queued_messages, config.queue_overflow) == (10_000, "drop_new")
    assert config.tls is None
    [rule] = config.topics
    assert (rule.direction, rule.qos, rule.local_prefix, rule.remote_prefix) == ("out", 0, "", "")


def test_no_bridge_by_default() -> None:
    assert config_from_dict({}).bridge == []


@pytest.mark.parametrize(
    ("keys", "line"),
    [
        ({"name": ""}, "bridge[0].name: missing (every bridge needs a name)"),
        ({"name": "a/b"}, 'bridge[0].name: "a/b" is not allowed'),
        ({"addresses": []}, 'bridge[0].addresses: empty (at least one "host:port" is required)'),
        ({"addresses": ["h:0"]}, 'bridge[0].addresses[0]: "h:0" is not host:port'),
        ({"addresses": ["::1"]}, 'bridge[0].addresses[0]: "::1" is not host:port'),
        ({"topics": []}, "bridge[0].topics: empty (at least one topic rule is required)"),
        ({"topics": [{"pattern": "#", "direction": "up"}]}, "bridge[0].topics[0].direction:"),
        ({"topics": [{"pattern": "#", "qos": 3}]}, "bridge[0].topics[0].qos: 3 is not allowed"),
        (
            {"topics": [{"pattern": "#", "qoss": 1}]},
            "bridge[0].topics[0].qoss: unknown key (did you mean bridge[0].topics[0].qos?)",
        ),
        ({"topics": [{"pattern": "a/#/b"}]}, "bridge[0].topics[0].pattern:"),
        ({"protocol_version": 3}, "bridge[0].protocol_version: 3 is not allowed"),
        ({"password": "p"}, "bridge[0].password: needs bridge[0].username"),
        ({"keepalive": 0}, "bridge[0].keepalive: 0 is out of range"),
        ({"queue_overflow": "drop_all"}, 'bridge[0].queue_overflow: "drop_all" is not allowed'),
        (
            {"reconnect_delay_min": 60.0},
            "bridge[0].reconnect_delay_min: 60.0 is above bridge[0].reconnect_delay_max",
        ),
        ({"tls": {"keyfile": "k.pem"}}, "bridge[0].tls.keyfile: needs bridge[0].tls.certfile"),
        ({"tls": {"verfy": False}}, "bridge[0].tls.verfy: unknown key"),
    ],
)
def test_one_line_per_error_naming_the_key(keys: dict[str, Any], line: str) -> None:
    [error] = errors_of(bridge(**keys))
    assert error.startswith(f"config error: {line}"), error


def test_names_must_be_unique() -> None:
    [error] = errors_of(bridge(), bridge())
    assert error == (
        'config error: bridge[1].name: "cloud" is already the name of bridge[0] '
        "(names must be unique)"
    )


def test_a_5_0_bridge_may_send_a_password_without_a_user_name() -> None:
    [config] = config_from_dict({"bridge": [bridge(password="p", protocol_version=5)]}).bridge
    assert config.password == "p"


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("broker.example.com:8883", ("broker.example.com", 8883)),
        ("10.0.0.1", ("10.0.0.1", 1883)),
        ("[::1]:1884", ("::1", 1884)),
        ("[::1]", ("::1", 1883)),
    ],
)
def test_addresses(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


# -- backoff -------------------------------------------------------------------------------


def test_backoff_grows_with_jitter_within_its_bounds_and_resets() -> None:
    backoff = Backoff(1.0, 30.0, random.Random(7))
    delays = [backoff.next() for _ in range(40)]
    assert all(1.0 <= d <= 30.0 for d in delays)
    assert max(delays) == 30.0  # reaches the cap
    assert len(set(delays)) > 20  # jittered, not a fixed ladder
    backoff.reset()
    assert backoff.next() <= 3.0  # back near the minimum


def test_backoff_refuses_bounds_in_the_wrong_order() -> None:
    with pytest.raises(ValueError):
        Backoff(5.0, 1.0)


# -- the example in config/mqttd.toml --------------------------------------------------------


def test_the_commented_bridge_example_loads_as_shown() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "mqttd.toml"
    lines = example.read_text().splitlines()
    block = []
    for line in lines[lines.index("# [[bridge]]") :]:
        if not line.startswith("# "):
            break
        if not line.startswith("# #"):  # a comment inside the commented-out block
            block.append(line[2:])
    [config] = config_from_dict(tomllib.loads("\n".join(block))).bridge
    assert config.name == "cloud"
    assert config.tls is not None and config.tls.verify
    assert [(t.pattern, t.direction) for t in config.topics] == [
        ("sensors/#", "out"),
        ("commands/#", "in"),
    ]
    # Every key of a bridge, its TLS table and its rules is shown.
    shown = {line.split(" = ")[0] for line in block if " = " in line}
    for cls in (BridgeConfig, BridgeTLSConfig, BridgeTopicConfig):
        for f in fields(cls):
            if f.name not in ("tls", "topics"):
                assert f.name in shown, f"{cls.__name__}.{f.name} is not in the example"
