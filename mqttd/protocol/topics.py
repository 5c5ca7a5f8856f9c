"""Topic Name and Topic Filter syntax (spec 4.7) and Shared Subscriptions (5.0 4.8.2).

The reader decodes topics as plain UTF-8 strings and leaves these rules to the broker,
because MQTT 5 answers a bad filter with a SUBACK reason code (0x8F), not by closing
the connection, and a PUBLISH may carry an empty topic when it uses a Topic Alias.
"""

from __future__ import annotations

from .errors import TopicFilterInvalid, TopicNameInvalid

MAX_TOPIC_BYTES = 65_535
SHARED_PREFIX = "$share/"


def _utf8_length(text: str) -> int | None:
    """Length in UTF-8 bytes, or None for a string with a lone surrogate."""
    if text.isascii():  # O(1) in CPython: the common case costs nothing more
        return len(text)
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        return None


def is_topic_name(topic: str) -> bool:
    """True for a non-empty topic name without wildcards (4.7.1, 4.7.3): the quick test
    for names the reader already checked for UTF-8 and U+0000 (a Response Topic)."""
    return bool(topic) and "+" not in topic and "#" not in topic


def is_utf8(payload: bytes) -> bool:
    """True when `payload` is well-formed UTF-8 (RFC 3629; surrogates are not): what a
    Payload Format Indicator of 1 promises (3.3.2.3.2)."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def validate_topic_name(topic: str) -> None:
    """Raise `TopicNameInvalid` unless `topic` may be published to.

    A Topic Name is at least one character [MQTT-4.7.3-1], has no wildcard
    [MQTT-3.3.2-2] [MQTT-4.7.1-1], no U+0000 [MQTT-4.7.3-2] and at most 65535 bytes
    [MQTT-4.7.3-3].
    """
    if not topic:
        raise TopicNameInvalid("topic name is empty [MQTT-4.7.3-1]")
    if "+" in topic or "#" in topic:
        raise TopicNameInvalid(f"topic name {topic!r} contains a wildcard [MQTT-3.3.2-2]")
    if "\x00" in topic:
        raise TopicNameInvalid("topic name contains U+0000 [MQTT-4.7.3-2]")
    length = _utf8_length(topic)
    if length is None:
        raise TopicNameInvalid("topic name is not valid UTF-8 [MQTT-1.5.4-1]")
    if length > MAX_TOPIC_BYTES:
        raise TopicNameInvalid("topic name is longer than 65535 bytes [MQTT-4.7.3-3]")


def validate_topic_filter(topic_filter: str) -> None:
    """Raise `TopicFilterInvalid` unless `topic_filter` is a well-formed filter.

    '+' must fill a whole level [MQTT-4.7.1-3]; '#' must fill a whole level and be
    the last one [MQTT-4.7.1-2]; the filter is not empty and obeys the string rules.
    """
    if not topic_filter:
        raise TopicFilterInvalid("topic filter is empty [MQTT-4.7.3-1]")
    if "\x00" in topic_filter:
        raise TopicFilterInvalid("topic filter contains U+0000 [MQTT-4.7.3-2]")
    length = _utf8_length(topic_filter)
    if length is None:
        raise TopicFilterInvalid("topic filter is not valid UTF-8 [MQTT-1.5.4-1]")
    if length > MAX_TOPIC_BYTES:
        raise TopicFilterInvalid("topic filter is longer than 65535 bytes [MQTT-4.7.3-3]")
    if "+" not in topic_filter and "#" not in topic_filter:
        return
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "+" in level and level != "+":
            raise TopicFilterInvalid(
                f"'+' must occupy a whole level in {topic_filter!r} [MQTT-4.7.1-3]"
            )
        if "#" in level and (level != "#" or index != last):
            raise TopicFilterInvalid(
                f"'#' must be a whole, last level in {topic_filter!r} [MQTT-4.7.1-2]"
            )


def is_shared(topic_filter: str) -> bool:
    """True when `topic_filter` names a Shared Subscription ("$share/...")."""
    return topic_filter.startswith(SHARED_PREFIX)


def parse_shared_subscription(topic_filter: str) -> tuple[str | None, str]:
    """Split "$share/{ShareName}/{filter}" into (ShareName, filter).

    An ordinary filter comes back as (None, topic_filter), unvalidated. For a shared
    one the ShareName must be non-empty without '/', '+' or '#', and a valid filter
    must follow its '/' [MQTT-4.8.2-1] [MQTT-4.8.2-2]; otherwise `TopicFilterInvalid`.
    """
    if not topic_filter.startswith(SHARED_PREFIX):
        return None, topic_filter
    share_name, slash, inner = topic_filter[len(SHARED_PREFIX) :].partition("/")
    if not share_name:
        raise TopicFilterInvalid(f"empty ShareName in {topic_filter!r} [MQTT-4.8.2-1]")
    if "+" in share_name or "#" in share_name:
        raise TopicFilterInvalid(
            f"ShareName in {topic_filter!r} contains a wildcard [MQTT-4.8.2-2]"
        )
    if not slash or not inner:
        raise TopicFilterInvalid(
            f"no topic filter after the ShareName in {topic_filter!r} [MQTT-4.8.2-2]"
        )
    validate_topic_filter(inner)
    return share_name, inner
