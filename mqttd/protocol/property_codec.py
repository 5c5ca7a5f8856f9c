"""Wire format of MQTT 5.0 property blocks (spec 2.2.2): Property Length, then properties.

Both directions follow `PROPERTY_SPECS`, the spec's table of which packet may carry
which property. Receiving a property that is unknown or not allowed where it sits is a
Malformed Packet (2.2.2.2); a second copy of a property that may not repeat, and the
value rules the spec calls Protocol Errors, raise `ProtocolError`. Sending any of these
is a programmer error and raises `ValueError`.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

from .datatypes import (
    MAX_VARIABLE_BYTE_INTEGER,
    Cursor,
    encode_binary_data,
    encode_utf8_string,
    encode_variable_byte_integer,
)
from .errors import LimitExceeded, MalformedPacket, ProtocolError
from .properties import (
    NONZERO_PROPERTIES,
    PROPERTY_SPECS,
    ZERO_OR_ONE_PROPERTIES,
    Properties,
    PropertyContext,
    PropertyId,
    PropertyType,
)

# The tables below use plain ints, not the enums: on CPython 3.11 an enum member
# lookup or an IntEnum dict key costs several times a plain int's, per property.
_BYTE = int(PropertyType.BYTE)
_TWO_BYTE_INTEGER = int(PropertyType.TWO_BYTE_INTEGER)
_FOUR_BYTE_INTEGER = int(PropertyType.FOUR_BYTE_INTEGER)
_VARIABLE_BYTE_INTEGER = int(PropertyType.VARIABLE_BYTE_INTEGER)
_UTF8_STRING = int(PropertyType.UTF8_STRING)  # this and the two after it are all
_BINARY_DATA = int(PropertyType.BINARY_DATA)  # length-prefixed: decode_properties
_UTF8_STRING_PAIR = int(PropertyType.UTF8_STRING_PAIR)  # tests `ptype >= _UTF8_STRING`
_SUBSCRIPTION_IDENTIFIER = int(PropertyId.SUBSCRIPTION_IDENTIFIER)
_TOPIC_ALIAS = int(PropertyId.TOPIC_ALIAS)
_ZERO_OR_ONE = frozenset(int(pid) for pid in ZERO_OR_ONE_PROPERTIES)
_NONZERO = frozenset(int(pid) for pid in NONZERO_PROPERTIES)
_EMPTY_BLOCK = b"\x00"
_RANGE_CHECKED = _ZERO_OR_ONE | _NONZERO | {_TOPIC_ALIAS}
_INTEGER_SIZES = {_BYTE: 1, _TWO_BYTE_INTEGER: 2, _FOUR_BYTE_INTEGER: 4}


#: User Properties one packet may carry. The spec sets no limit, but each costs a few
#: bytes on the wire and a hundred or so as Python objects: without a bound one 40 MB
#: packet of 2-byte pairs became a gigabyte (issue 14). Beyond it: 0x83.
MAX_USER_PROPERTIES = 1024


def _decode_table(context: PropertyContext) -> dict[int, tuple[str, int, bool]]:
    """identifier -> (attribute, type, may repeat) for the properties allowed here."""
    return {
        int(pid): (spec.name, int(spec.type), context in spec.repeatable_in)
        for pid, spec in PROPERTY_SPECS.items()
        if context in spec.contexts
    }


_DECODE_TABLES: dict[int, dict[int, tuple[str, int, bool]]] = {
    int(context): _decode_table(context) for context in PropertyContext
}

# One property to encode: attribute, identifier, type, encoded identifier, may repeat.
_EncodeSpec = tuple[str, int, int, bytes, bool]


class _EncodePlan:
    """For one context: how to read the allowed properties and check the others."""

    __slots__ = ("allowed", "forbidden", "forbidden_empty", "get_allowed", "get_forbidden")

    def __init__(self, context: PropertyContext) -> None:
        ordered = sorted(PROPERTY_SPECS.values(), key=lambda spec: spec.id)
        self.allowed: tuple[_EncodeSpec, ...] = tuple(
            (
                spec.name,
                int(spec.id),
                int(spec.type),
                encode_variable_byte_integer(spec.id),
                context in spec.repeatable_in,
            )
            for spec in ordered
            if context in spec.contexts
        )
        self.forbidden = tuple(spec.name for spec in ordered if context not in spec.contexts)
        # attrgetter fetches many attributes in one C call; comparing the forbidden ones
        # to their defaults in one tuple comparison checks them all at once.
        self.get_allowed = _tuple_getter(tuple(name for name, *_ in self.allowed))
        self.get_forbidden = _tuple_getter(self.forbidden)
        self.forbidden_empty = self.get_forbidden(Properties())


def _tuple_getter(names: tuple[str, ...]) -> Callable[[Properties], tuple[Any, ...]]:
    """Like attrgetter(*names), but always returning a tuple, whatever len(names)."""
    if len(names) >= 2:
        return attrgetter(*names)
    return lambda properties: tuple(getattr(properties, name) for name in names)


_ENCODE_PLANS: dict[int, _EncodePlan] = {
    int(context): _EncodePlan(context) for context in PropertyContext
}


def value_problem(pid: int, value: int) -> str | None:
    """Why an integer property value is a Protocol Error, or None when it is fine."""
    if pid in _ZERO_OR_ONE and value > 1:
        return f"{PropertyId(pid).name} must be 0 or 1, not {value}"
    if pid in _NONZERO and value == 0:
        return f"{PropertyId(pid).name} must not be 0"
    return None


def decode_properties(cursor: Cursor, context: int) -> Properties | None:
    """Read a Property Length and the properties after it; None when there are none.

    `context` is a `PropertyContext` value (pass it as a plain int on hot paths).
    Reads are inlined rather than going through Cursor: a property block sits in many
    PUBLISH packets, and a method call per field doubled the cost.
    """
    data = cursor.data
    pos = cursor.pos
    if pos < cursor.end and data[pos] < 0x80:
        length = data[pos]
        pos += 1
    else:
        length = cursor.variable_byte_integer()
        pos = cursor.pos
    end = pos + length
    if end > cursor.end:
        raise MalformedPacket("Property Length runs past the end of the packet")
    cursor.pos = end
    if not length:
        return None
    table = _DECODE_TABLES[context]
    values: dict[str, Any] = {}
    user_properties: list[tuple[str, str]] = []
    subscription_identifiers: list[int] = []
    value: Any
    while pos < end:
        # Every identifier defined is one byte; a longer Variable Byte Integer is no
        # known property (2.2.2.2) and fails the lookup like any unknown one.
        pid = data[pos]
        entry = table.get(pid)
        if entry is None:
            raise _not_allowed(pid, context)
        name, ptype, repeatable = entry
        pos += 1
        if ptype >= _UTF8_STRING:
            # UTF-8 string, binary data or string pair: length-prefixed fields (1.5.4+).
            if pos + 2 > end:
                raise _ends_early(pid)
            stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
            if stop > end:
                raise _ends_early(pid)
            value = data[pos + 2 : stop]
            pos = stop
            if ptype != _BINARY_DATA:
                value = _text(value)
                if ptype == _UTF8_STRING_PAIR:
                    if pos + 2 > end:
                        raise _ends_early(pid)
                    stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
                    if stop > end:
                        raise _ends_early(pid)
                    if len(user_properties) >= MAX_USER_PROPERTIES:
                        raise LimitExceeded(
                            f"more than {MAX_USER_PROPERTIES} User Properties in one packet"
                        )
                    user_properties.append((value, _text(data[pos + 2 : stop])))
                    pos = stop
                    continue
        else:
            if ptype == _BYTE:
                if pos >= end:
                    raise _ends_early(pid)
                value = data[pos]
                pos += 1
                if value > 1 and pid in _ZERO_OR_ONE:
                    raise ProtocolError(f"{name.upper()} must be 0 or 1, not {value}")
            elif ptype == _TWO_BYTE_INTEGER:
                if pos + 2 > end:
                    raise _ends_early(pid)
                value = (data[pos] << 8) | data[pos + 1]
                pos += 2
            elif ptype == _FOUR_BYTE_INTEGER:
                if pos + 4 > end:
                    raise _ends_early(pid)
                value = int.from_bytes(data[pos : pos + 4], "big")
                pos += 4
            else:
                inner = Cursor(data, pos, end)
                value = inner.variable_byte_integer()
                pos = inner.pos
            if not value and pid in _NONZERO:
                raise ProtocolError(f"{name.upper()} must not be 0")
            if pid == _SUBSCRIPTION_IDENTIFIER:
                if subscription_identifiers and not repeatable:
                    raise ProtocolError("SUBSCRIPTION_IDENTIFIER included more than once")
                subscription_identifiers.append(value)
                continue
        if name in values:
            raise ProtocolError(f"{name.upper()} included more than once [2.2.2.2]")
        values[name] = value
    properties = Properties(**values)
    if user_properties:
        properties.user_property = tuple(user_properties)
    if subscription_identifiers:
        properties.subscription_identifier = tuple(subscription_identifiers)
    return properties


def _text(raw: bytes) -> str:
    """A property's UTF-8 string: well-formed [MQTT-1.5.4-1], no U+0000 [MQTT-1.5.4-2]."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise MalformedPacket("string is not well-formed UTF-8 [MQTT-1.5.4-1]") from exc
    if "\x00" in text:
        raise MalformedPacket("string contains U+0000 [MQTT-1.5.4-2]")
    return text


def _not_allowed(pid: int, context: int) -> MalformedPacket:
    where = PropertyContext(context).name
    if pid in PROPERTY_SPECS:
        return MalformedPacket(
            f"property {PROPERTY_SPECS[pid].id.name} is not allowed in {where} [2.2.2.2]"
        )
    return MalformedPacket(f"unknown property identifier 0x{pid:02X} in {where} [2.2.2.2]")


def _ends_early(pid: int) -> MalformedPacket:
    return MalformedPacket(f"property block ends inside {PropertyId(pid).name}")


def encode_properties(properties: Properties | None, context: int) -> bytes:
    """Encode a property block (Property Length first); `None` encodes as zero length.

    `context` is a `PropertyContext` value.
    """
    if properties is None:
        return _EMPTY_BLOCK
    plan = _ENCODE_PLANS[context]
    if plan.get_forbidden(properties) != plan.forbidden_empty:
        names = [name for name in plan.forbidden if getattr(properties, name) not in (None, ())]
        raise ValueError(
            f"properties {', '.join(names)} are not allowed in {PropertyContext(context).name}"
        )
    parts: list[bytes] = []
    for (name, pid, ptype, ident, repeatable), value in zip(
        plan.allowed, plan.get_allowed(properties), strict=True
    ):
        if value is None:
            continue  # (an empty tuple of User Properties or identifiers loops 0 times)
        if ptype == _UTF8_STRING_PAIR:
            for key, item in value:
                parts.append(ident)
                parts.append(encode_utf8_string(key, name))
                parts.append(encode_utf8_string(item, name))
        elif ptype == _VARIABLE_BYTE_INTEGER:
            # The only one is Subscription Identifier, kept as a tuple.
            if len(value) > 1 and not repeatable:
                raise ValueError(f"{name} may appear only once in {PropertyContext(context).name}")
            for number in value:
                _check_value(pid, number)
                if number > MAX_VARIABLE_BYTE_INTEGER:
                    raise ValueError(f"{name} {number} exceeds {MAX_VARIABLE_BYTE_INTEGER}")
                parts.append(ident)
                parts.append(encode_variable_byte_integer(number))
        else:
            parts.append(ident)
            if ptype == _UTF8_STRING:
                parts.append(encode_utf8_string(value, name))
            elif ptype == _BINARY_DATA:
                parts.append(encode_binary_data(value, name))
            else:
                if pid in _RANGE_CHECKED:
                    # We must never send Topic Alias 0 (3.3.2.3.4), though we accept one.
                    if pid == _TOPIC_ALIAS and value == 0:
                        raise ValueError("topic_alias must not be 0")
                    _check_value(pid, value)
                size = _INTEGER_SIZES[ptype]
                try:
                    parts.append(value.to_bytes(size, "big"))
                except OverflowError:  # negative, or too large for its field
                    raise ValueError(f"{name} {value} does not fit {size} byte(s)") from None
    body = b"".join(parts)
    return encode_variable_byte_integer(len(body)) + body


def _check_value(pid: int, value: int) -> None:
    problem = value_problem(pid, value)
    if problem is not None:
        raise ValueError(problem)
