"""The codec's error tree. Each error carries the MQTT 5 reason code to answer with.

The broker catches `MQTTError` at the edge of a connection and ends it with
`reason_code` (CONNACK before the session starts, DISCONNECT after, or simply a close
for MQTT 3.x). Nothing else may escape the codec: no IndexError, struct.error or
UnicodeDecodeError.
"""

from __future__ import annotations

from .reason_codes import ReasonCode


class MQTTError(Exception):
    """Base of every protocol-level error; `reason_code` is what to tell the peer."""

    reason_code: ReasonCode = ReasonCode.UNSPECIFIED_ERROR

    def __init__(self, message: str, reason_code: ReasonCode | None = None) -> None:
        super().__init__(message)
        if reason_code is not None:
            self.reason_code = reason_code


class MalformedPacket(MQTTError):
    """The bytes cannot be parsed as the packet they claim to be (0x81)."""

    reason_code = ReasonCode.MALFORMED_PACKET


class ProtocolError(MQTTError):
    """A well-formed packet that breaks a rule of the protocol (0x82)."""

    reason_code = ReasonCode.PROTOCOL_ERROR


class PacketTooLarge(MQTTError):
    """A packet above the agreed Maximum Packet Size (0x95)."""

    reason_code = ReasonCode.PACKET_TOO_LARGE


class LimitExceeded(MQTTError):
    """A valid packet beyond one of our own fixed limits, e.g. too many User
    Properties (0x83 Implementation specific error)."""

    reason_code = ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR


class UnsupportedProtocolVersion(MQTTError):
    """CONNECT named a protocol name or level we do not speak (0x84, 3.x: 0x01).

    `protocol_level` is the level byte the CONNECT carried (None when the packet ended
    before it), so the broker can answer in a CONNACK format that client understands
    (3.1.1 and 5.0 both say: answer 0x01/0x84, then close [MQTT-3.1.2-2]).
    """

    reason_code = ReasonCode.UNSUPPORTED_PROTOCOL_VERSION

    def __init__(
        self,
        message: str,
        reason_code: ReasonCode | None = None,
        protocol_level: int | None = None,
    ) -> None:
        super().__init__(message, reason_code)
        self.protocol_level = protocol_level


class TopicNameInvalid(MQTTError):
    """A PUBLISH topic name that breaks the topic rules (0x90)."""

    reason_code = ReasonCode.TOPIC_NAME_INVALID


class TopicFilterInvalid(MQTTError):
    """A subscription filter that breaks the wildcard rules (0x8F)."""

    reason_code = ReasonCode.TOPIC_FILTER_INVALID
