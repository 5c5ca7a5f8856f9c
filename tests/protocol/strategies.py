"""Hypothesis strategies for valid MQTT packets at a given protocol level.

Every packet drawn here is one a sender may legally put on the wire at that level, so
`decode(encode(p)) == p` must hold for it. Fields MQTT 3.x lacks keep their defaults
at levels 3 and 4; properties come from the spec's table of where each may appear.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from mqttd.protocol import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from mqttd.protocol.properties import (
    NONZERO_PROPERTIES,
    PROPERTY_SPECS,
    PropertyContext,
    PropertyId,
    PropertyType,
)
from mqttd.protocol.reason_codes import (
    AUTH_REASON_CODES,
    CONNACK_REASON_CODES,
    DISCONNECT_REASON_CODES,
    PUBACK_REASON_CODES,
    PUBCOMP_REASON_CODES,
    PUBREC_REASON_CODES,
    PUBREL_REASON_CODES,
    SUBACK_REASON_CODES,
    SUBACK_RETURN_CODES_V3,
    UNSUBACK_REASON_CODES,
)
from mqttd.protocol.topics import is_shared

# Any code point MQTT strings may carry: no U+0000 [MQTT-1.5.4-2], no surrogates.
text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12)
binary = st.binary(max_size=24)
packet_ids = st.integers(1, 0xFFFF)
_level_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00/+#"), max_size=6
)

topic_names = st.lists(_level_text, min_size=1, max_size=4).map("/".join).filter(bool)


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    """A well-formed topic filter: '+' fills a level, '#' is a whole last level."""
    levels = draw(st.lists(st.one_of(_level_text, st.just("+")), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    topic_filter = "/".join(levels)
    if not topic_filter:
        return "#"
    if draw(st.integers(0, 4)) == 0:
        share = draw(_level_text.filter(bool))
        topic_filter = f"$share/{share}/{topic_filter}"
    return topic_filter


def _value(pid: PropertyId, ptype: PropertyType) -> st.SearchStrategy[Any]:
    low = 1 if pid in NONZERO_PROPERTIES or pid == PropertyId.TOPIC_ALIAS else 0
    if ptype == PropertyType.BYTE:
        return st.integers(0, 1)  # every byte property is a 0-or-1 flag
    if ptype == PropertyType.TWO_BYTE_INTEGER:
        return st.integers(low, 0xFFFF)
    if ptype == PropertyType.FOUR_BYTE_INTEGER:
        return st.integers(low, 0xFFFF_FFFF)
    if ptype == PropertyType.VARIABLE_BYTE_INTEGER:
        return st.integers(low, 268_435_455)
    if ptype == PropertyType.UTF8_STRING:
        return text
    if ptype == PropertyType.BINARY_DATA:
        return binary
    return st.tuples(text, text)


@st.composite
def properties(draw: st.DrawFn, context: PropertyContext) -> Properties | None:
    """None, or a non-empty Properties with a random subset of those allowed here."""
    allowed = [spec for spec in PROPERTY_SPECS.values() if context in spec.contexts]
    chosen = draw(st.lists(st.sampled_from(allowed), unique=True, max_size=len(allowed)))
    if not chosen:
        return None
    values: dict[str, Any] = {}
    for spec in chosen:
        strategy = _value(spec.id, spec.type)
        if spec.id == PropertyId.USER_PROPERTY:
            values[spec.name] = tuple(draw(st.lists(strategy, min_size=1, max_size=3)))
        elif spec.id == PropertyId.SUBSCRIPTION_IDENTIFIER:
            most = 3 if context in spec.repeatable_in else 1
            values[spec.name] = tuple(draw(st.lists(strategy, min_size=1, max_size=most)))
        else:
            values[spec.name] = draw(strategy)
    if "authentication_data" in values and "authentication_method" not in values:
        values["authentication_method"] = draw(text)  # [3.1.2.11.10]
    return Properties(**values)


def _props(level: int, context: PropertyContext) -> st.SearchStrategy[Properties | None]:
    return properties(context) if level == 5 else st.none()


@st.composite
def connects(draw: st.DrawFn, level: int) -> Connect:
    will = None
    if draw(st.booleans()):
        will = Will(
            draw(topic_names),
            draw(binary),
            draw(st.integers(0, 2)),
            draw(st.booleans()),
            draw(_props(level, PropertyContext.WILL)),
        )
    username = draw(st.none() | text)
    password = draw(st.none() | binary)
    if level < 5 and username is None:
        password = None  # [MQTT-3.1.2-22]
    return Connect(
        draw(text),
        level,
        draw(st.booleans()),
        draw(st.integers(0, 0xFFFF)),
        username,
        password,
        will,
        draw(_props(level, PropertyContext.CONNECT)),
        "MQIsdp" if level == 3 else "MQTT",
    )


@st.composite
def connacks(draw: st.DrawFn, level: int) -> Connack:
    codes = sorted(CONNACK_REASON_CODES) if level == 5 else list(range(6))
    code = draw(st.sampled_from(codes))
    session_present = draw(st.booleans()) and code == 0 and level != 3
    return Connack(session_present, code, draw(_props(level, PropertyContext.CONNACK)))


@st.composite
def publishes(draw: st.DrawFn, level: int) -> Publish:
    qos = draw(st.integers(0, 2))
    props = draw(_props(level, PropertyContext.PUBLISH))
    topic = draw(topic_names)
    if props is not None and props.topic_alias is not None and draw(st.booleans()):
        topic = ""  # 5.0: the alias stands for the topic (3.3.2.3.4)
    return Publish(
        topic,
        draw(st.binary(max_size=300)),
        qos,
        draw(st.booleans()),
        qos > 0 and draw(st.booleans()),
        draw(packet_ids) if qos else None,
        props,
    )


def _acks(
    cls: type[PubAck | PubRec | PubRel | PubComp],
    codes: frozenset[int],
    context: PropertyContext,
    level: int,
) -> st.SearchStrategy[Packet]:
    if level != 5:
        return st.builds(cls, packet_ids)
    return st.builds(cls, packet_ids, st.sampled_from(sorted(codes)), properties(context))


@st.composite
def subscriptions(draw: st.DrawFn, level: int) -> Subscription:
    topic_filter = draw(topic_filters())
    qos = draw(st.integers(0, 2))
    if level != 5:
        return Subscription(topic_filter, qos)
    return Subscription(
        topic_filter,
        qos,
        draw(st.booleans()) and not is_shared(topic_filter),  # [MQTT-3.8.3-4]
        draw(st.booleans()),
        draw(st.integers(0, 2)),
    )


def packet_strategies(level: int) -> dict[str, st.SearchStrategy[Packet]]:
    """One strategy per packet type valid at `level` (4 or 5; 3 gives CONNECT only)."""
    if level == 3:
        return {"CONNECT": connects(3)}
    sub_codes = sorted(SUBACK_REASON_CODES if level == 5 else SUBACK_RETURN_CODES_V3)
    strategies: dict[str, st.SearchStrategy[Packet]] = {
        "CONNECT": connects(level),
        "CONNACK": connacks(level),
        "PUBLISH": publishes(level),
        "PUBACK": _acks(PubAck, PUBACK_REASON_CODES, PropertyContext.PUBACK, level),
        "PUBREC": _acks(PubRec, PUBREC_REASON_CODES, PropertyContext.PUBREC, level),
        "PUBREL": _acks(PubRel, PUBREL_REASON_CODES, PropertyContext.PUBREL, level),
        "PUBCOMP": _acks(PubComp, PUBCOMP_REASON_CODES, PropertyContext.PUBCOMP, level),
        "SUBSCRIBE": st.builds(
            Subscribe,
            packet_ids,
            st.lists(subscriptions(level), min_size=1, max_size=4),
            _props(level, PropertyContext.SUBSCRIBE),
        ),
        "SUBACK": st.builds(
            SubAck,
            packet_ids,
            st.lists(st.sampled_from(sub_codes), min_size=1, max_size=4),
            _props(level, PropertyContext.SUBACK),
        ),
        "UNSUBSCRIBE": st.builds(
            Unsubscribe,
            packet_ids,
            st.lists(topic_filters(), min_size=1, max_size=4),
            _props(level, PropertyContext.UNSUBSCRIBE),
        ),
        "UNSUBACK": st.builds(UnsubAck, packet_ids),
        "PINGREQ": st.just(PingReq()),
        "PINGRESP": st.just(PingResp()),
        "DISCONNECT": st.just(Disconnect()),
    }
    if level == 5:
        strategies["UNSUBACK"] = st.builds(
            UnsubAck,
            packet_ids,
            st.lists(st.sampled_from(sorted(UNSUBACK_REASON_CODES)), min_size=1, max_size=4),
            properties(PropertyContext.UNSUBACK),
        )
        strategies["DISCONNECT"] = st.builds(
            Disconnect,
            st.sampled_from(sorted(DISCONNECT_REASON_CODES)),
            properties(PropertyContext.DISCONNECT),
        )
        strategies["AUTH"] = st.builds(
            Auth,
            st.sampled_from(sorted(AUTH_REASON_CODES)),
            properties(PropertyContext.AUTH),
        )
    return strategies


def packets(level: int) -> st.SearchStrategy[Packet]:
    """Any packet valid at `level`."""
    return st.one_of(list(packet_strategies(level).values()))
