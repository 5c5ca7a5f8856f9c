"""The MQTT wire format, sans-IO: packets, properties, reason codes, topics, codec.

This package imports nothing else from mqttd and no I/O module (no asyncio, no
socket): bytes go in through `PacketReader.feed`, packets come out, and `encode`
turns packets back into bytes. It speaks MQTT 3.1 (level 3), 3.1.1 (4) and 5.0 (5).
"""

from .encoder import (
    encode,
    encode_publish,
    patch_packet_id,
    publish_packet_id_offset,
    with_packet_id,
    with_topic_alias,
)
from .errors import (
    MalformedPacket,
    MQTTError,
    PacketTooLarge,
    ProtocolError,
    TopicFilterInvalid,
    TopicNameInvalid,
    UnsupportedProtocolVersion,
)
from .packets import (
    PACKET_TYPE_OF,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    ProtocolLevel,
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
from .properties import Properties, PropertyContext, PropertyId
from .reader import DEFAULT_MAX_PACKET_SIZE, PacketReader, decode_packet
from .reason_codes import ConnackReturnCode, ReasonCode, connack_code_for_v3
from .topics import (
    is_shared,
    parse_shared_subscription,
    validate_topic_filter,
    validate_topic_name,
)

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "PACKET_TYPE_OF",
    "Auth",
    "Connack",
    "ConnackReturnCode",
    "Connect",
    "Disconnect",
    "MQTTError",
    "MalformedPacket",
    "Packet",
    "PacketReader",
    "PacketTooLarge",
    "PacketType",
    "PingReq",
    "PingResp",
    "Properties",
    "PropertyContext",
    "PropertyId",
    "ProtocolError",
    "ProtocolLevel",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "ReasonCode",
    "SubAck",
    "Subscribe",
    "Subscription",
    "TopicFilterInvalid",
    "TopicNameInvalid",
    "UnsubAck",
    "Unsubscribe",
    "UnsupportedProtocolVersion",
    "Will",
    "connack_code_for_v3",
    "decode_packet",
    "encode",
    "encode_publish",
    "is_shared",
    "parse_shared_subscription",
    "patch_packet_id",
    "publish_packet_id_offset",
    "validate_topic_filter",
    "validate_topic_name",
    "with_packet_id",
    "with_topic_alias",
]
