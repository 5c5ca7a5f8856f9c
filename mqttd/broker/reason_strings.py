"""Reason Strings the server adds to its 5.0 error answers (5.0 3.4.2.2.2 and friends).

A Reason String is for people (logs, a developer reading a trace), never for a client's
logic. The server puts one on every acknowledgement with a reason code of 0x80 or more
and on its DISCONNECT and refusing CONNACK, with two limits from the spec:

- Request Problem Information = 0 in CONNECT: no Reason String (nor User Property) on
  any packet but PUBLISH, CONNACK and DISCONNECT [MQTT-3.1.2-29].
- never when it would make the packet larger than the client's Maximum Packet Size
  [MQTT-3.2.2-19], [MQTT-3.4.2-2] and the like: the packet goes without it.
"""

from __future__ import annotations

from ..protocol.properties import Properties
from ..protocol.reason_codes import ReasonCode

__all__ = ["REASON_TEXT", "reason_properties"]

REASON_TEXT: dict[int, str] = {
    ReasonCode.UNSPECIFIED_ERROR: "unspecified error",
    ReasonCode.MALFORMED_PACKET: "malformed packet",
    ReasonCode.PROTOCOL_ERROR: "protocol error",
    ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR: "refused by the server",
    ReasonCode.NOT_AUTHORIZED: "not authorized",
    ReasonCode.SERVER_BUSY: "server busy: too many clients",
    ReasonCode.SERVER_SHUTTING_DOWN: "server shutting down",
    ReasonCode.KEEP_ALIVE_TIMEOUT: "nothing received for 1.5 times the keep alive",
    ReasonCode.SESSION_TAKEN_OVER: "another connection took over the session",
    ReasonCode.TOPIC_FILTER_INVALID: "topic filter invalid",
    ReasonCode.TOPIC_NAME_INVALID: "topic name invalid",
    ReasonCode.PACKET_IDENTIFIER_IN_USE: "packet identifier in use by an unfinished QoS 2 flow",
    ReasonCode.PACKET_IDENTIFIER_NOT_FOUND: "packet identifier not found",
    ReasonCode.RECEIVE_MAXIMUM_EXCEEDED: "more unacknowledged QoS 1/2 publishes than allowed",
    ReasonCode.TOPIC_ALIAS_INVALID: "topic alias 0 or above the Topic Alias Maximum",
    ReasonCode.PACKET_TOO_LARGE: "packet larger than the Maximum Packet Size",
    ReasonCode.QUOTA_EXCEEDED: "quota exceeded",
    ReasonCode.PAYLOAD_FORMAT_INVALID: "payload is not valid UTF-8 (Payload Format Indicator 1)",
    ReasonCode.RETAIN_NOT_SUPPORTED: "retained messages are not available",
    ReasonCode.QOS_NOT_SUPPORTED: "QoS above the Maximum QoS",
    ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: "shared subscriptions are not available",
    ReasonCode.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: "subscription identifiers are not available",
    ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: "wildcard subscriptions are not available",
    ReasonCode.BAD_AUTHENTICATION_METHOD: "authentication method not supported",
    ReasonCode.BAD_USER_NAME_OR_PASSWORD: "bad user name or password",
}


def reason_properties(reason_code: int, reason: str | None = None) -> Properties | None:
    """Properties holding the Reason String of an error code, None for a success code.

    `reason` replaces the generic text of the code when given.
    """
    if reason_code < 0x80:
        return None
    text = reason or REASON_TEXT.get(reason_code)
    if text is None:
        return None
    return Properties(reason_string=text)
