"""Access control lists in Mosquitto's `acl_file` format, with Mosquitto 2.x semantics.

The file::

    # anonymous clients (rules before any "user" line)
    topic read $SYS/#

    user alice
    topic readwrite sensors/#
    topic deny sensors/secret/#

    pattern write devices/%c/state      # every client, %c = its client id
    pattern readwrite users/%u/#        # every client with a user name, %u = that name

`topic [read|write|readwrite|deny] FILTER` adds a rule for the user named by the last
`user NAME` line (for anonymous clients before the first one); `pattern ...` adds a
rule for every client, with `%c` and `%u` substituted. The access word may be left out
(readwrite) unless the filter holds a space. Lines starting with '#' are comments.

How a check is decided (Mosquitto 2.0 security_default.c, `mosquitto_acl_check_default`):

1. the client's own rules (its user's, or the anonymous ones), "deny" rules first,
   then the others in file order: the first rule whose filter matches decides if it is
   a deny (refused) or grants the access asked (allowed); a rule granting only the
   other access (read for a write) is passed over;
2. if none decided: refused outright when the user name or client id holds '+' or '#'
   (CVE-2017-7650: a client could otherwise widen a pattern); else the patterns, in the
   same way (denies first); patterns using %u are skipped for clients without a name;
3. nothing decided: refused.

A filter matches a topic as in a subscription, except that a topic starting with '$'
is matched only by a filter that starts with '$' too, so "#" never grants $SYS.
%c and %u are substituted level by level, so a name holding '/' matches no pattern
level at all (it cannot reach into another client's subtree).

Subscribing is checked with the read right, on the whole filter: a subscription is
granted when a read rule covers every topic the filter can match ("sensors/#" covers
"sensors/+/temp"; it does not cover "#"), and refused when a deny rule covers it all.
A filter that is only partly readable ("#" next to "topic deny secret/#") is granted,
and what it may not read is held back at delivery, where every topic is checked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..protocol.errors import TopicFilterInvalid
from ..protocol.topics import validate_topic_filter

__all__ = [
    "READ",
    "WRITE",
    "Acl",
    "AclError",
    "AclRule",
    "Action",
    "filter_covers",
    "topic_matches",
]

Action = Literal["read", "write", "subscribe"]

_Matcher = Callable[[Sequence[str], str], bool]

READ = 1
WRITE = 2
DENY = 0
_ACCESS = {"read": READ, "write": WRITE, "readwrite": READ | WRITE, "deny": DENY}


class AclError(Exception):
    """An ACL file that cannot be used; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class AclRule:
    """One `topic` or `pattern` line: the filter (split in levels) and its access bits."""

    topic_filter: str
    access: int  # READ | WRITE bits; 0 = deny
    levels: tuple[str, ...] = field(init=False, compare=False)
    uses_client_id: bool = field(init=False, compare=False)
    uses_username: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.topic_filter.split("/")))
        object.__setattr__(self, "uses_client_id", "%c" in self.topic_filter)
        object.__setattr__(self, "uses_username", "%u" in self.topic_filter)


def topic_matches(levels: Sequence[str], topic: str) -> bool:
    """True if the filter split in `levels` matches topic name `topic` (4.7)."""
    if topic.startswith("$") and not levels[0].startswith("$"):
        return False  # Mosquitto: a '$' topic needs a '$' rule [MQTT-4.7.2-1]
    parts = topic.split("/")
    n = len(parts)
    for i, level in enumerate(levels):
        if level == "#":
            return True  # also matches the parent level: "a/#" matches "a"
        if i >= n:
            return False
        if level != "+" and level != parts[i]:
            return False
    return len(levels) == n


def filter_covers(levels: Sequence[str], topic_filter: str) -> bool:
    """True if every topic `topic_filter` can match is matched by the filter in `levels`."""
    if topic_filter.startswith("$") and not levels[0].startswith("$"):
        return False
    parts = topic_filter.split("/")
    n = len(parts)
    for i, level in enumerate(levels):
        if level == "#":
            return True
        if i >= n:
            return False
        part = parts[i]
        if part == "#":
            return False  # only "#" covers "#"
        if level == "+":
            continue  # covers one level, "+" included
        if part == "+" or level != part:
            return False
    return len(levels) == n


@dataclass(slots=True)
class Acl:
    """A parsed ACL file: rules per user (None = anonymous) and the patterns."""

    users: dict[str | None, list[AclRule]] = field(default_factory=dict)
    patterns: list[AclRule] = field(default_factory=list)
    path: str = "<text>"

    @classmethod
    def load(cls, path: str | Path) -> Acl:
        """Read and parse `path`; raise `AclError` naming the line of the first problem."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise AclError(f"acl file {str(path)!r}: cannot read: {reason}") from exc
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, path: str = "<text>") -> Acl:
        """Parse the text of an ACL file."""
        acl = cls(path=path)
        user: str | None = None
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.rstrip()
            stripped = line.lstrip()
            if not stripped or stripped.startswith("#"):
                continue
            keyword, _, rest = stripped.partition(" ")
            rest = rest.strip()
            where = f"acl file {path!r} line {number}"
            if keyword == "user":
                if not rest:
                    raise AclError(f"{where}: 'user' needs a user name")
                user = rest
            elif keyword in ("topic", "pattern"):
                rule = _parse_rule(rest, where)
                if keyword == "pattern":
                    _add(acl.patterns, rule)
                else:
                    _add(acl.users.setdefault(user, []), rule)
            else:
                raise AclError(
                    f"{where}: unknown keyword {keyword!r} (allowed: user, topic, pattern)"
                )
        return acl

    def check(self, client_id: str, username: str | None, action: Action, topic: str) -> bool:
        """May the client read, write or subscribe to `topic` (a filter for subscribe)?"""
        match: _Matcher = topic_matches
        access = WRITE if action == "write" else READ
        if action == "subscribe":
            match = filter_covers
        decided = _first_decision(self.users.get(username, ()), topic, access, match)
        if decided is not None:
            return decided
        if not self.patterns:
            return False
        if (
            "+" in client_id
            or "#" in client_id
            or (username is not None and ("+" in username or "#" in username))
        ):
            return False  # CVE-2017-7650: a wildcard in a name must not widen a pattern
        for rule in self.patterns:
            if rule.uses_username and username is None:
                continue
            levels: Sequence[str] = rule.levels
            if rule.uses_client_id or rule.uses_username:
                levels = [_substitute(level, client_id, username) for level in rule.levels]
            if match(levels, topic):
                if rule.access == DENY:
                    return False
                if rule.access & access:
                    return True
        return False


def _parse_rule(rest: str, where: str) -> AclRule:
    first, _, remainder = rest.partition(" ")
    if not first:
        raise AclError(f"{where}: the topic filter is missing")
    remainder = remainder.strip()
    if remainder:
        if first not in _ACCESS:
            raise AclError(
                f"{where}: unknown access {first!r} (allowed: read, write, readwrite, deny)"
            )
        access, topic_filter = _ACCESS[first], remainder
    else:
        # One word: the filter itself, readwrite (Mosquitto: "topic foo").
        access, topic_filter = READ | WRITE, first
    try:
        validate_topic_filter(topic_filter)
    except TopicFilterInvalid as exc:
        raise AclError(f"{where}: invalid topic filter {topic_filter!r}: {exc}") from None
    return AclRule(topic_filter, access)


def _add(rules: list[AclRule], rule: AclRule) -> None:
    # Mosquitto puts "deny" rules at the front of their list: they are tried first.
    if rule.access == DENY:
        index = next((i for i, r in enumerate(rules) if r.access != DENY), len(rules))
        rules.insert(index, rule)
    else:
        rules.append(rule)


def _first_decision(
    rules: Sequence[AclRule], topic: str, access: int, match: _Matcher
) -> bool | None:
    for rule in rules:
        if match(rule.levels, topic):
            if rule.access == DENY:
                return False
            if rule.access & access:
                return True
    return None


def _substitute(level: str, client_id: str, username: str | None) -> str:
    level = level.replace("%c", client_id)
    if username is not None:
        level = level.replace("%u", username)
    return level
