"""Bridge topic rules: which topics cross a bridge, which way, and how they are renamed.

A rule is Mosquitto's ``topic pattern [[[ out | in | both ] qos-level] local-prefix
remote-prefix]`` (mosquitto.conf(5), "topic"):

- `out` (the default): the bridge subscribes on the LOCAL broker to
  ``local_prefix + pattern``; a message forwarded to the remote loses `local_prefix` and
  gains `remote_prefix`.
- `in`: the bridge subscribes on the REMOTE broker to ``remote_prefix + pattern``; a
  message brought in loses `remote_prefix` and gains `local_prefix`.
- `both`: the two at once.

`qos` is the QoS of those subscriptions, so the highest QoS a message crosses with. An
empty `pattern` remaps one topic: both prefixes are then required and are the whole
topic on each side (``pattern=""``, ``local_prefix="a/b"``, ``remote_prefix="x/y"``:
local "a/b" <-> remote "x/y"). Prefixes are joined as written: "site1/" and "site1"
differ.

When several rules match a topic, the first one in the configuration renames it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from ..config import rule_errors

__all__ = [
    "Direction",
    "TopicRule",
    "TopicRules",
    "rule_errors",
    "topic_matches",
]


class Direction(enum.Enum):
    """Which way messages matching a rule cross the bridge."""

    OUT = "out"  # local -> remote
    IN = "in"  # remote -> local
    BOTH = "both"

    @property
    def outward(self) -> bool:
        """Local messages go to the remote."""
        return self is not Direction.IN

    @property
    def inward(self) -> bool:
        """Remote messages come to the local broker."""
        return self is not Direction.OUT


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True when `topic` matches `topic_filter` (4.7.1), "$" topics included (4.7.2).

    A filter starting with a wildcard never matches a topic starting with "$"
    [MQTT-4.7.2-1]. Both arguments are assumed valid.
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    if topic_filter == topic:
        return True
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for i, level in enumerate(filter_levels):
        if level == "#":
            # "a/#" matches "a" too: the parent level [MQTT-4.7.1-2].
            return True
        if i >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[i]:
            return False
    return len(filter_levels) == len(topic_levels)


@dataclass(frozen=True, slots=True)
class TopicRule:
    """One bridge topic rule (see the module docstring)."""

    pattern: str
    direction: Direction = Direction.OUT
    qos: int = 0
    local_prefix: str = ""
    remote_prefix: str = ""

    @property
    def local_filter(self) -> str:
        """What the bridge subscribes to on the local broker (`out`, `both`)."""
        return self.local_prefix + self.pattern

    @property
    def remote_filter(self) -> str:
        """What the bridge subscribes to on the remote broker (`in`, `both`)."""
        return self.remote_prefix + self.pattern

    def to_remote(self, local_topic: str) -> str | None:
        """The remote name of a local topic this rule matches, else None."""
        return _remap(self.local_filter, self.local_prefix, self.remote_prefix, local_topic)

    def to_local(self, remote_topic: str) -> str | None:
        """The local name of a remote topic this rule matches, else None."""
        return _remap(self.remote_filter, self.remote_prefix, self.local_prefix, remote_topic)


def _remap(topic_filter: str, strip: str, add: str, topic: str) -> str | None:
    # "p/#" also matches "p" itself, which does not start with the prefix "p/": such a
    # topic has no name on the other side. Nor has one that would end up empty.
    if not topic.startswith(strip) or not topic_matches(topic_filter, topic):
        return None
    return (add + topic[len(strip) :]) or None


class TopicRules:
    """The ordered rules of one bridge, split by direction."""

    __slots__ = ("inward", "outward", "rules")

    def __init__(self, rules: Iterable[TopicRule]) -> None:
        self.rules: tuple[TopicRule, ...] = tuple(rules)
        self.outward = tuple(r for r in self.rules if r.direction.outward)
        self.inward = tuple(r for r in self.rules if r.direction.inward)

    def to_remote(self, local_topic: str) -> str | None:
        """The remote topic for a local message, by the first matching out/both rule."""
        for rule in self.outward:
            remote = rule.to_remote(local_topic)
            if remote is not None:
                return remote
        return None

    def to_local(self, remote_topic: str) -> str | None:
        """The local topic for a remote message, by the first matching in/both rule."""
        for rule in self.inward:
            local = rule.to_local(remote_topic)
            if local is not None:
                return local
        return None

    def local_subscriptions(self) -> dict[str, int]:
        """Local filter -> QoS, for the local subscriptions (highest QoS when repeated)."""
        return _merge((r.local_filter, r.qos) for r in self.outward)

    def remote_subscriptions(self) -> dict[str, int]:
        """Remote filter -> QoS, for the remote subscriptions (highest QoS when repeated)."""
        return _merge((r.remote_filter, r.qos) for r in self.inward)


def _merge(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for topic_filter, qos in pairs:
        merged[topic_filter] = max(qos, merged.get(topic_filter, 0))
    return merged
