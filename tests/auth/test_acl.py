"""ACL files: Mosquitto's syntax, and Mosquitto 2.0's rules for deciding a check."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqttd.auth.acl import Acl, AclError, filter_covers, topic_matches

EXAMPLE = """\
# anonymous clients
topic read $SYS/#
topic read public/#

user alice
topic readwrite sensors/#
topic deny sensors/secret/#
topic write  commands/with space

user bob
topic sensors/+/temp

pattern write devices/%c/state
pattern readwrite users/%u/#
"""


@pytest.fixture
def acl() -> Acl:
    return Acl.parse(EXAMPLE)


def split(topic_filter: str) -> tuple[str, ...]:
    return tuple(topic_filter.split("/"))


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),  # "#" includes the parent level [MQTT-4.7.1-2]
        ("a/#", "a/b/c", True),
        ("+/+", "/b", True),  # an empty level is a level
        ("#", "$SYS/x", False),  # '$' topics need a '$' rule
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/broker/uptime", True),
    ],
)
def test_topic_matching(topic_filter: str, topic: str, matches: bool) -> None:
    assert topic_matches(split(topic_filter), topic) is matches


@pytest.mark.parametrize(
    ("rule", "subscription", "covered"),
    [
        ("sensors/#", "sensors/+/temp", True),
        ("sensors/#", "sensors", True),
        ("sensors/#", "#", False),
        ("sensors/+/temp", "sensors/+/temp", True),
        ("sensors/+/temp", "sensors/#", False),
        ("sensors/+/temp", "sensors/a/temp", True),
        ("sensors/a/temp", "sensors/+/temp", False),
        ("#", "#", True),
        ("#", "$SYS/#", False),
        ("$SYS/#", "$SYS/broker/+", True),
    ],
)
def test_a_rule_covers_a_filter_when_it_matches_every_topic_of_it(
    rule: str, subscription: str, covered: bool
) -> None:
    assert filter_covers(split(rule), subscription) is covered


def test_rules_before_any_user_line_are_for_anonymous_clients(acl: Acl) -> None:
    assert acl.check("c", None, "read", "public/news")
    assert not acl.check("c", None, "write", "public/news")
    assert acl.check("c", None, "read", "$SYS/broker/uptime")
    # Named users do not inherit them (Mosquitto: a user's own list, then patterns).
    assert not acl.check("c", "alice", "read", "public/news")


def test_a_user_gets_its_own_rules(acl: Acl) -> None:
    assert acl.check("c", "alice", "write", "sensors/kitchen/temp")
    assert acl.check("c", "alice", "read", "sensors/kitchen/temp")
    assert not acl.check("c", "alice", "read", "other")
    assert not acl.check("c", "carol", "read", "sensors/kitchen/temp")  # no rules: nothing


def test_a_missing_access_word_means_readwrite(acl: Acl) -> None:
    assert acl.check("c", "bob", "read", "sensors/x/temp")
    assert acl.check("c", "bob", "write", "sensors/x/temp")
    assert not acl.check("c", "bob", "read", "sensors/x/humidity")


def test_a_filter_may_hold_spaces_after_the_access_word(acl: Acl) -> None:
    assert acl.check("c", "alice", "write", "commands/with space")


def test_deny_wins_over_a_broader_grant_wherever_it_is_written() -> None:
    acl = Acl.parse(
        "user alice\ntopic readwrite sensors/#\ntopic deny sensors/secret/#\n"
        "user bob\ntopic deny a/b\ntopic read a/#\n"
    )
    assert acl.check("c", "alice", "read", "sensors/open")
    assert not acl.check("c", "alice", "read", "sensors/secret/key")
    assert not acl.check("c", "alice", "write", "sensors/secret/key")
    assert not acl.check("c", "bob", "read", "a/b")  # the deny came first in the file
    assert acl.check("c", "bob", "read", "a/c")


def test_a_rule_that_grants_the_other_access_is_passed_over() -> None:
    acl = Acl.parse("user u\ntopic read t\ntopic write t\n")
    assert acl.check("c", "u", "write", "t") and acl.check("c", "u", "read", "t")


def test_patterns_substitute_client_id_and_user_name(acl: Acl) -> None:
    assert acl.check("dev1", None, "write", "devices/dev1/state")
    assert not acl.check("dev1", None, "write", "devices/dev2/state")
    assert not acl.check("dev1", None, "read", "devices/dev1/state")  # write only
    assert acl.check("c", "carol", "read", "users/carol/inbox")
    assert not acl.check("c", "carol", "read", "users/dave/inbox")
    assert not acl.check("c", None, "read", "users/None/inbox")  # %u needs a user name


def test_wildcards_in_names_never_widen_a_pattern(acl: Acl) -> None:
    # CVE-2017-7650: a client id "#" must not turn devices/%c/state into devices/#/state.
    assert not acl.check("#", None, "write", "devices/x/state")
    assert not acl.check("+", None, "write", "devices/x/state")
    assert not acl.check("c", "+", "read", "users/x/inbox")
    # ...and a name holding '/' cannot reach into someone else's subtree.
    assert not acl.check("c", "carol/evil", "read", "users/carol/evil/inbox")


def test_a_user_rule_grant_is_not_undone_by_a_pattern_deny() -> None:
    # Mosquitto 2.0: the client's own list decides first; patterns only if it did not.
    acl = Acl.parse("user u\ntopic read x/#\npattern deny x/%c\n")
    assert acl.check("c", "u", "read", "x/c")
    assert not acl.check("c", "other", "read", "x/c")


def test_subscribing_needs_a_read_rule_covering_the_whole_filter(acl: Acl) -> None:
    assert acl.check("c", "alice", "subscribe", "sensors/+/temp")
    assert acl.check("c", "alice", "subscribe", "sensors/#")  # partly denied: granted
    assert not acl.check("c", "alice", "subscribe", "sensors/secret/#")  # wholly denied
    assert not acl.check("c", "alice", "subscribe", "#")
    assert not acl.check("c", None, "subscribe", "#")  # "#" never covers $SYS
    assert acl.check("c", None, "subscribe", "$SYS/broker/#")
    assert not acl.check("c", "alice", "subscribe", "$SYS/#")


def test_subscribing_with_a_write_only_rule_is_refused() -> None:
    acl = Acl.parse("user u\ntopic write out/#\n")
    assert not acl.check("c", "u", "subscribe", "out/#")


def test_no_rules_at_all_denies_everything() -> None:
    acl = Acl.parse("# nothing yet\n")
    assert not acl.check("c", None, "read", "a")
    assert not acl.check("c", "u", "write", "a")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user\n", "line 1: 'user' needs a user name"),
        ("topic\n", "line 1: the topic filter is missing"),
        ("topic readonly a/b\n", "line 1: unknown access 'readonly'"),
        ("# ok\ntopic read a/#/b\n", "line 2: invalid topic filter 'a/#/b'"),
        ("topic read a\nallow a\n", "line 2: unknown keyword 'allow'"),
    ],
)
def test_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(AclError, match=message):
        Acl.parse(text)


def test_load_reads_a_file_and_names_it_when_it_cannot(tmp_path: Path) -> None:
    path = tmp_path / "acl"
    path.write_text(EXAMPLE)
    assert Acl.load(path).check("c", "bob", "read", "sensors/a/temp")
    with pytest.raises(AclError, match="cannot read"):
        Acl.load(tmp_path / "missing")


def test_the_example_shipped_with_mosquitto_parses() -> None:
    # /usr/share/doc/mosquitto/examples/aclfile.example, as Debian ships it.
    acl = Acl.parse(
        "# This affects access control for clients with no username.\n"
        "topic read $SYS/#\n\n"
        '# This only affects clients with username "roger".\n'
        "user roger\ntopic foo/bar\n\n"
        "# This affects all clients.\npattern write $SYS/broker/connection/%c/state\n"
    )
    assert acl.check("x", None, "read", "$SYS/broker/load")
    assert acl.check("x", "roger", "write", "foo/bar")
    assert acl.check("bridge1", "roger", "write", "$SYS/broker/connection/bridge1/state")
