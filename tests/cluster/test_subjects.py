"""MQTT topics and filters as NATS subjects: reversible, and matching exactly as MQTT does."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mqttd.cluster.subjects import (
    filter_to_subjects,
    subject_prefix,
    subject_to_topic,
    topic_matches,
    topic_to_subject,
)

P = subject_prefix("t")

# Any character a topic level may hold, the awkward ones for NATS made likely.
level_chars = st.one_of(
    st.sampled_from([*".*>% \t$%2E", "\x7f", "\x01", "é", "ü"]),
    st.characters(blacklist_categories=["Cs"], blacklist_characters="/+#\x00"),
)
levels = st.lists(st.text(level_chars, max_size=6), min_size=1, max_size=5)
topics = levels.map("/".join).filter(bool)


def nats_match(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` one token, `>` one or more trailing tokens."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def mqtt_match(topic_filter: str, topic: str) -> bool:
    """MQTT matching without the $-topic rule (which the receiving node's tree applies)."""
    f, t = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)


@st.composite
def topic_and_filter(draw: st.DrawFn) -> tuple[str, str]:
    """A topic, and a filter made from it or from another topic (so both outcomes occur)."""
    topic = draw(topics)
    base = draw(st.one_of(st.just(topic), topics)).split("/")
    out = [draw(st.sampled_from([level, level, "+"])) for level in base]
    cut = draw(st.integers(0, len(out)))
    if draw(st.booleans()):
        out = [*out[:cut], "#"]
    return topic, "/".join(out)


@given(topics)
def test_a_topic_goes_there_and_back(topic: str) -> None:
    subject = topic_to_subject(topic, P)
    assert subject is not None
    assert subject_to_topic(subject, P) == topic


@given(topics)
def test_a_subject_is_valid_for_nats(topic: str) -> None:
    subject = topic_to_subject(topic, P)
    assert subject is not None
    tokens = subject.split(".")
    assert all(tokens), subject  # no empty token
    # NATS splits its protocol lines on ASCII white space; other bytes are opaque to it.
    assert not any(ord(c) <= 0x20 or ord(c) == 0x7F for c in subject)
    assert "*" not in tokens and ">" not in tokens  # never a wildcard in a published subject


@given(topic_and_filter())
def test_subjects_match_exactly_what_the_filter_matches(pair: tuple[str, str]) -> None:
    topic, topic_filter = pair
    subject = topic_to_subject(topic, P)
    assert subject is not None
    subjects = filter_to_subjects(topic_filter, P)
    assert any(nats_match(s, subject) for s in subjects) == mqtt_match(topic_filter, topic)


@given(topic_and_filter(), st.integers(12, 40))
def test_a_filter_too_long_for_a_subject_is_widened_never_narrowed(
    pair: tuple[str, str], max_subject: int
) -> None:
    topic, topic_filter = pair
    subject = topic_to_subject(topic, P, max_subject)
    assume(subject is not None)  # a topic too long goes on the cluster's long subject
    assert subject is not None
    subjects = filter_to_subjects(topic_filter, P, max_subject)
    assert all(len(s.encode()) <= max_subject for s in subjects)
    if mqtt_match(topic_filter, topic):
        assert any(nats_match(s, subject) for s in subjects)


@pytest.mark.parametrize(
    ("topic", "subject"),
    [
        ("a/b", f"{P}.a.b"),
        ("/a/", f"{P}.%.a.%"),
        ("a.b/c", f"{P}.a%2Eb.c"),
        ("$SYS/x", f"{P}.$SYS.x"),
        ("*/>/%", f"{P}.%2A.%3E.%25"),
        ("with space", f"{P}.with%20space"),
    ],
)
def test_topic_subjects_as_documented(topic: str, subject: str) -> None:
    assert topic_to_subject(topic, P) == subject


@pytest.mark.parametrize(
    ("topic_filter", "subjects"),
    [
        ("#", (f"{P}.>",)),
        ("a/#", (f"{P}.a", f"{P}.a.>")),
        ("+/b/+", (f"{P}.*.b.*",)),
        ("a//#", (f"{P}.a.%", f"{P}.a.%.>")),
    ],
)
def test_filter_subjects_as_documented(topic_filter: str, subjects: tuple[str, ...]) -> None:
    assert filter_to_subjects(topic_filter, P) == subjects


def test_a_topic_too_long_for_a_subject_has_none() -> None:
    assert topic_to_subject("x" * 5000, P) is None
    assert filter_to_subjects("x" * 5000 + "/#", P) == (f"{P}.>",)
    assert filter_to_subjects("a/" + "x" * 5000, P) == (f"{P}.a.>",)


@given(topic_and_filter())
def test_topic_matches_is_mqtt_matching(pair: tuple[str, str]) -> None:
    topic, topic_filter = pair
    dollar = topic.startswith("$") and topic_filter[:1] in ("+", "#")
    assert topic_matches(topic_filter, topic) == (mqtt_match(topic_filter, topic) and not dollar)
