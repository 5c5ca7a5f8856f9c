"""MQTT data representation (spec 1.5): integers, Variable Byte Integers, strings, binary.

Decoding goes through `Cursor`, a position over an immutable `bytes` object bounded by
the end of the packet being decoded, so a length field can never make a read run into
the next packet. Every read that would leave the packet raises `MalformedPacket`.

Encoding is a set of small functions returning `bytes`; they raise `ValueError` for a
value the wire format cannot carry (a programmer error on our side, never the peer's).
"""

from __future__ import annotations

from .errors import MalformedPacket

MAX_VARIABLE_BYTE_INTEGER = 268_435_455  # 0xFF 0xFF 0xFF 0x7F (1.5.5)
MAX_TWO_BYTE = 0xFFFF

# One-byte Variable Byte Integers, ready-made: lengths below 128 are the common case.
_SMALL_VARINTS = tuple(bytes((n,)) for n in range(128))


class Cursor:
    """A read position in `data`, which must not be read at or beyond `end`."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end

    def remaining(self) -> int:
        """Bytes left before `end`."""
        return self.end - self.pos

    def _ends_early(self, what: str) -> MalformedPacket:
        return MalformedPacket(f"packet ends inside {what}")

    def byte(self) -> int:
        """A one-byte integer."""
        pos = self.pos
        if pos >= self.end:
            raise self._ends_early("a byte field")
        self.pos = pos + 1
        return self.data[pos]

    def two_byte_integer(self) -> int:
        """A big-endian 16-bit integer (1.5.2)."""
        pos = self.pos
        if pos + 2 > self.end:
            raise self._ends_early("a two byte integer")
        self.pos = pos + 2
        data = self.data
        return (data[pos] << 8) | data[pos + 1]

    def variable_byte_integer(self) -> int:
        """A Variable Byte Integer of at most four bytes (1.5.5)."""
        value = 0
        for shift in (0, 7, 14, 21):
            digit = self.byte()
            value |= (digit & 0x7F) << shift
            if digit < 0x80:
                return value
        raise MalformedPacket("Variable Byte Integer longer than four bytes [1.5.5]")

    def utf8_string(self) -> str:
        """A length-prefixed UTF-8 string: well-formed, without U+0000 (1.5.4).

        Python's strict decoder already refuses surrogates (U+D800..U+DFFF) and
        overlong forms [MQTT-1.5.4-1]; U+0000 is ours to check [MQTT-1.5.4-2].
        """
        pos = self.pos
        data = self.data
        if pos + 2 > self.end:
            raise self._ends_early("a string length")
        stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
        if stop > self.end:
            raise self._ends_early("a string")
        self.pos = stop
        try:
            text = data[pos + 2 : stop].decode()
        except UnicodeDecodeError as exc:
            raise MalformedPacket("string is not well-formed UTF-8 [MQTT-1.5.4-1]") from exc
        if "\x00" in text:
            raise MalformedPacket("string contains U+0000 [MQTT-1.5.4-2]")
        return text

    def binary_data(self) -> bytes:
        """Length-prefixed binary data (1.5.6)."""
        pos = self.pos
        data = self.data
        if pos + 2 > self.end:
            raise self._ends_early("a binary data length")
        stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
        if stop > self.end:
            raise self._ends_early("binary data")
        self.pos = stop
        return data[pos + 2 : stop]

    def rest(self) -> bytes:
        """Everything up to `end` (a PUBLISH payload)."""
        pos = self.pos
        self.pos = self.end
        return self.data[pos : self.end]


def encode_variable_byte_integer(value: int) -> bytes:
    """Encode `value` in the fewest bytes (1.5.5) [MQTT-1.5.5-1]."""
    if 0 <= value < 128:
        return _SMALL_VARINTS[value]
    if not 0 <= value <= MAX_VARIABLE_BYTE_INTEGER:
        raise ValueError(f"{value} does not fit a Variable Byte Integer")
    out = bytearray()
    while True:
        digit = value & 0x7F
        value >>= 7
        if value:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def encode_two_byte_integer(value: int, what: str) -> bytes:
    """A big-endian 16-bit integer (1.5.2)."""
    if not 0 <= value <= MAX_TWO_BYTE:
        raise ValueError(f"{what} {value} does not fit two bytes")
    return value.to_bytes(2, "big")


def encode_utf8_string(text: str, what: str) -> bytes:
    """A length-prefixed UTF-8 string; refuses U+0000, surrogates and > 65535 bytes."""
    if "\x00" in text:
        raise ValueError(f"{what} contains U+0000 [MQTT-1.5.4-2]")
    # A lone surrogate raises UnicodeEncodeError, itself a ValueError [MQTT-1.5.4-1].
    encoded = text.encode()
    if len(encoded) > MAX_TWO_BYTE:
        raise ValueError(f"{what} is longer than 65535 bytes")
    return len(encoded).to_bytes(2, "big") + encoded


def encode_binary_data(data: bytes, what: str) -> bytes:
    """Length-prefixed binary data (1.5.6)."""
    if len(data) > MAX_TWO_BYTE:
        raise ValueError(f"{what} is longer than 65535 bytes")
    return len(data).to_bytes(2, "big") + data


def frame(first_byte: int, body: bytes) -> bytes:
    """Prefix `body` with the fixed header: the first byte and the Remaining Length."""
    return bytes((first_byte,)) + encode_variable_byte_integer(len(body)) + body
