"""MQTT topics and filters as NATS subjects, both ways (sans-IO).

Theory of operation. NATS routes on subjects whose tokens are separated by `.`, with `*`
for one token and `>` for one or more trailing tokens: MQTT's `/`, `+` and `#` once
each level is a token, as nats-server's own MQTT mapping does. Every subject of a
cluster sits under `PREFIX` = "mqttd.<cluster name>.t", so no MQTT topic can reach
NATS's own subjects (`$JS.API...`, `$KV...`, `_INBOX...`) and two clusters can share one
NATS. Each topic level becomes one token, escaped so that the mapping is total and
reversible for every valid MQTT topic:

- `%XX` (hex, upper case) stands for a character a NATS token cannot hold or would read
  as a wildcard: `.`, `*`, `>`, `%` itself, and space, controls and DEL (NATS splits
  its protocol lines on white space). nats-server's MQTT mapping writes `.` as `//`
  and refuses spaces; ours needs neither exception.
- an empty level (`a//b`, a leading or trailing `/`) is the token `%` alone, which no
  escaped level can be (a `%` in a level is `%25`).
- `$` needs nothing: `$SYS/x` is `PREFIX.$SYS.x`. The rule that `#` and `+` at the first
  level do not match `$`-topics [MQTT-4.7.2-1] is applied by the receiving node's topic
  tree, which gets every message before any session does.

A filter maps to one subject, or two when it ends in `#`: MQTT's `a/#` also matches
`a` itself [MQTT-4.7.1-2], NATS's `a.>` does not, so `a/#` is `PREFIX.a` and
`PREFIX.a.>`.

NATS refuses protocol lines longer than its max_control_line (4096 bytes by default).
A topic whose subject would be longer than `max_subject` is published on the one
subject `PREFIX_LONG` (`long_subject`), which every node listens to; a filter too long
for a subject is widened to the longest prefix of its levels that fits, followed by
`>` (a superset: the receiving node's tree keeps only what really matches).
"""

from __future__ import annotations

__all__ = [
    "MAX_SUBJECT",
    "filter_to_subjects",
    "long_subject",
    "message_prefix",
    "subject_prefix",
    "subject_to_topic",
    "topic_matches",
    "topic_to_subject",
]

#: Longest subject used as is; NATS's default max_control_line is 4096 bytes for the
#: whole "PUB <subject> <reply> <size>" / "MSG <subject> <sid> <size>" line.
MAX_SUBJECT = 3072

_EMPTY_LEVEL = "%"
# Characters escaped inside a level: NATS separators, wildcards, white space, controls.
_ESCAPED = frozenset(".*>%\x7f" + "".join(chr(c) for c in range(0x21)))
_ESCAPE_TABLE = {ord(c): f"%{ord(c):02X}" for c in _ESCAPED}


def subject_prefix(cluster: str) -> str:
    """The subject prefix of cluster `cluster`'s topics (no trailing dot)."""
    return f"mqttd.{cluster}.t"


def message_prefix(cluster: str) -> str:
    """The subject prefix of cluster `cluster`'s stream of QoS 1/2 messages (durable.py)."""
    return f"mqttd.{cluster}.m"


def long_subject(cluster: str) -> str:
    """The one subject that carries topics too long for a subject of their own."""
    return f"mqttd.{cluster}.long"


def _level_token(level: str) -> str:
    if not level:
        return _EMPTY_LEVEL
    return level.translate(_ESCAPE_TABLE)


def _token_level(token: str) -> str:
    if token == _EMPTY_LEVEL:
        return ""
    if "%" not in token:
        return token
    parts = token.split("%")
    out = [parts[0]]
    for part in parts[1:]:
        if len(part) < 2:
            raise ValueError(f"bad escape in subject token {token!r}")
        out.append(chr(int(part[:2], 16)))
        out.append(part[2:])
    return "".join(out)


def topic_to_subject(topic: str, prefix: str, max_subject: int = MAX_SUBJECT) -> str | None:
    """The subject of topic name `topic`, or None when it is longer than `max_subject`
    (the message then goes on the cluster's `long_subject`)."""
    subject = prefix + "." + ".".join(_level_token(level) for level in topic.split("/"))
    if len(subject.encode()) > max_subject:
        return None
    return subject


def subject_to_topic(subject: str, prefix: str) -> str:
    """The topic name of a subject made by `topic_to_subject`; ValueError otherwise."""
    if not subject.startswith(prefix + "."):
        raise ValueError(f"subject {subject!r} is not under {prefix!r}")
    tokens = subject[len(prefix) + 1 :].split(".")
    return "/".join(_token_level(token) for token in tokens)


def _filter_token(level: str) -> str:
    if level == "+":
        return "*"
    return _level_token(level)


def filter_to_subjects(
    topic_filter: str, prefix: str, max_subject: int = MAX_SUBJECT
) -> tuple[str, ...]:
    """The subjects a node subscribes to for the (non-shared) MQTT filter `topic_filter`.

    Together they match the subject of every topic the filter matches (and, for a
    widened long filter, more).
    """
    levels = topic_filter.split("/")
    multi = levels[-1] == "#"
    if multi:
        levels = levels[:-1]
    tokens = [_filter_token(level) for level in levels]
    if multi:
        if not tokens:  # "#": every topic has at least one level
            subjects: tuple[str, ...] = (prefix + ".>",)
        else:
            base = prefix + "." + ".".join(tokens)
            subjects = (base, base + ".>")
    else:
        subjects = (prefix + "." + ".".join(tokens),)
    if all(len(s.encode()) <= max_subject for s in subjects):
        return subjects
    # Too long: the longest prefix of levels that fits, then ">" (a superset).
    subject = prefix
    for token in tokens:
        longer = subject + "." + token
        if len(longer.encode()) + 2 > max_subject:
            break
        subject = longer
    return (subject + ".>",)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True when MQTT filter `topic_filter` matches topic name `topic` (4.7), including
    the rule that a first-level wildcard does not match a `$`-topic [MQTT-4.7.2-1]."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    levels = topic.split("/")
    filter_levels = topic_filter.split("/")
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True
        if i >= len(levels) or (level != "+" and level != levels[i]):
            return False
    return len(filter_levels) == len(levels)
