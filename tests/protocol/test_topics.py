"""Topic Name and Topic Filter syntax (spec 4.7) and Shared Subscriptions (5.0 4.8.2)."""

from __future__ import annotations

import pytest

from mqttd.protocol import (
    TopicFilterInvalid,
    TopicNameInvalid,
    is_shared,
    parse_shared_subscription,
    validate_topic_filter,
    validate_topic_name,
)
from mqttd.protocol.reason_codes import ReasonCode


@pytest.mark.parametrize(
    "topic",
    ["a", "/", "a/b/c", "/leading", "trailing/", "a//b", "$SYS/broker", "é/€/😀", " ", "x" * 65535],
)
def test_valid_topic_names(topic: str) -> None:
    validate_topic_name(topic)


@pytest.mark.parametrize(
    ("topic", "rule"),
    [
        ("", "[MQTT-4.7.3-1] empty"),
        ("a/+", "[MQTT-4.7.1-1] wildcard"),
        ("#", "[MQTT-4.7.1-1] wildcard"),
        ("a/b#", "[MQTT-4.7.1-1] wildcard inside a level"),
        ("a\x00b", "[MQTT-4.7.3-2] U+0000"),
        ("a\ud800", "[MQTT-1.5.4-1] lone surrogate"),
        ("x" * 65536, "[MQTT-4.7.3-3] over 65535 bytes"),
        ("é" * 32768, "[MQTT-4.7.3-3] over 65535 bytes in UTF-8, not in characters"),
    ],
)
def test_invalid_topic_names(topic: str, rule: str) -> None:
    with pytest.raises(TopicNameInvalid) as caught:
        validate_topic_name(topic)
    assert caught.value.reason_code == ReasonCode.TOPIC_NAME_INVALID


@pytest.mark.parametrize(
    "topic_filter",
    ["#", "+", "a/#", "a/+/b", "+/+", "/+", "+/", "a//#", "$SYS/#", "sport/tennis/+", "x" * 65535],
)
def test_valid_topic_filters(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize(
    ("topic_filter", "rule"),
    [
        ("", "[MQTT-4.7.3-1] empty"),
        ("a+", "[MQTT-4.7.1-3] '+' not a whole level"),
        ("+a/b", "[MQTT-4.7.1-3] '+' not a whole level"),
        ("a/++", "[MQTT-4.7.1-3] '+' not a whole level"),
        ("a#", "[MQTT-4.7.1-2] '#' not a whole level"),
        ("a/#/b", "[MQTT-4.7.1-2] '#' not last"),
        ("#/", "[MQTT-4.7.1-2] '#' not last"),
        ("##", "[MQTT-4.7.1-2] '#' not a whole level"),
        ("a/\x00", "[MQTT-4.7.3-2] U+0000"),
        ("x" * 65536, "[MQTT-4.7.3-3] over 65535 bytes"),
    ],
)
def test_invalid_topic_filters(topic_filter: str, rule: str) -> None:
    with pytest.raises(TopicFilterInvalid) as caught:
        validate_topic_filter(topic_filter)
    assert caught.value.reason_code == ReasonCode.TOPIC_FILTER_INVALID


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("$share/group/a/b", ("group", "a/b")),
        ("$share/g/#", ("g", "#")),
        ("$share/g/+/x", ("g", "+/x")),
        ("$share/g//", ("g", "/")),
        ("a/b", (None, "a/b")),
        ("$share", (None, "$share")),
        ("$sharex/g/a", (None, "$sharex/g/a")),
        ("$SHARE/g/a", (None, "$SHARE/g/a")),
    ],
)
def test_parse_shared_subscription(topic_filter: str, expected: tuple[str | None, str]) -> None:
    assert parse_shared_subscription(topic_filter) == expected
    assert is_shared(topic_filter) == (expected[0] is not None)


@pytest.mark.parametrize(
    ("topic_filter", "rule"),
    [
        ("$share/", "[MQTT-4.8.2-1] empty ShareName"),
        ("$share//a", "[MQTT-4.8.2-1] empty ShareName"),
        ("$share/g", "[MQTT-4.8.2-2] no '/' after the ShareName"),
        ("$share/g/", "[MQTT-4.8.2-2] no filter after the '/'"),
        ("$share/g+/a", "[MQTT-4.8.2-2] '+' in the ShareName"),
        ("$share/#/a", "[MQTT-4.8.2-2] '#' in the ShareName"),
        ("$share/g/a/#/b", "the filter itself is invalid"),
    ],
)
def test_invalid_shared_subscriptions(topic_filter: str, rule: str) -> None:
    with pytest.raises(TopicFilterInvalid):
        parse_shared_subscription(topic_filter)
