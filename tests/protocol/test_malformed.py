"""Negative vectors: bytes that break one rule each, and the exact error they must raise.

Written by hand like test_vectors.py and named by the statement or section they break
([MQTT-x.y.z-n] normative statements, or the section number where the spec states the
rule without one). `level` is the reader's protocol level; None is a server-side reader
before CONNECT. Each vector is also fed one byte at a time: the error must not depend
on how the bytes arrive.
"""

from __future__ import annotations

import pytest

from mqttd.protocol import (
    MalformedPacket,
    MQTTError,
    PacketReader,
    ProtocolError,
    ReasonCode,
    UnsupportedProtocolVersion,
)

M = MalformedPacket
P = ProtocolError
U = UnsupportedProtocolVersion

REASON = {
    MalformedPacket: ReasonCode.MALFORMED_PACKET,
    ProtocolError: ReasonCode.PROTOCOL_ERROR,
    UnsupportedProtocolVersion: ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
}

# The prefix of a CONNECT variable header: protocol name "MQTT".
MQTT = "00 04 4D 51 54 54"

NEGATIVE: list[tuple[str, int | None, str, type[MQTTError]]] = [
    # ---- fixed header (3.1.1 2.2.2, 5.0 2.1.3) ------------------------------------------
    ("3.1.1 [MQTT-2.2.2-2] PUBREL flags 0000", 4, "60 02 00 01", M),
    ("5.0 2.1.3 SUBSCRIBE flags 0000", 5, "80 09 00 01 00 00 03 61 2F 62 00", M),
    ("3.1.1 [MQTT-2.2.2-2] UNSUBSCRIBE flags 1010", 4, "AA 07 00 01 00 03 61 2F 62", M),
    ("3.1.1 [MQTT-2.2.2-2] PUBACK flags 0001", 4, "41 02 00 01", M),
    ("5.0 2.1.3 PINGREQ flags 0010", 5, "C2 00", M),
    ("5.0 2.1.3 DISCONNECT flags 0001", 5, "E1 00", M),
    ("5.0 2.1.3 AUTH flags 0001", 5, "F1 00", M),
    (
        "3.1.1 [MQTT-2.2.2-2] CONNECT flags 0001",
        None,
        f"11 0F {MQTT} 04 02 00 3C 00 03 61 62 63",
        M,
    ),
    ("2.1.2 packet type 0 is reserved", 4, "00 00", M),
    ("3.1.1 2.2.1 packet type 15 is reserved before MQTT 5", 4, "F0 00", M),
    ("1.5.5 Remaining Length of five bytes", 4, "30 FF FF FF FF 7F", M),
    # ---- PUBLISH -------------------------------------------------------------------------
    ("3.1.1 [MQTT-3.3.1-4] PUBLISH QoS 3", 4, "36 07 00 03 61 2F 62 00 01", M),
    ("5.0 [MQTT-3.3.1-4] PUBLISH QoS 3", 5, "36 08 00 03 61 2F 62 00 01 00", M),
    ("[MQTT-3.3.1-2] PUBLISH DUP at QoS 0", 4, "38 05 00 03 61 2F 62", M),
    ("3.1.1 [MQTT-2.3.1-1] PUBLISH QoS 1 packet id 0", 4, "32 07 00 03 61 2F 62 00 00", P),
    ("5.0 [MQTT-2.2.1-3] PUBLISH QoS 2 packet id 0", 5, "34 08 00 03 61 2F 62 00 00 00", P),
    ("3.3.2.2 PUBLISH QoS 1 ends inside the packet id", 4, "32 06 00 03 61 2F 62 00", M),
    ("3.3.2.1 PUBLISH topic length past the end", 4, "30 04 00 05 61 62", M),
    ("3.3.2.1 PUBLISH Remaining Length 1", 4, "30 01 00", M),
    ("5.0 3.3.2.3.1 PUBLISH without Property Length", 5, "30 05 00 03 61 2F 62", M),
    ("[MQTT-1.5.4-2] topic with U+0000", 4, "30 05 00 03 61 00 62", M),
    ("[MQTT-1.5.4-1] topic with byte FF", 4, "30 05 00 03 61 FF 62", M),
    ("[MQTT-1.5.4-1] topic with surrogate U+D800 (ED A0 80)", 4, "30 05 00 03 ED A0 80", M),
    ("[MQTT-1.5.4-1] topic with overlong '/' (C0 AF)", 4, "30 04 00 02 C0 AF", M),
    ("[MQTT-1.5.4-1] topic cut inside a character (E2 82)", 5, "30 05 00 02 E2 82 00", M),
    (
        "5.0 2.2.2.2 PUBLISH with Session Expiry Interval",
        5,
        "30 0B 00 01 74 05 11 00 00 00 01 78 79",
        M,
    ),
    ("5.0 2.2.2.2 PUBLISH with unknown property 0x7F", 5, "30 06 00 01 74 02 7F 00", M),
    ("5.0 3.3.2.3.4 Topic Alias twice", 5, "30 0A 00 01 74 06 23 00 01 23 00 02", P),
    ("5.0 3.3.2.3.2 Payload Format Indicator 2", 5, "30 06 00 01 74 02 01 02", P),
    (
        "5.0 3.3.2.3.3 Message Expiry Interval twice",
        5,
        "30 0E 00 01 74 0A 02 00 00 00 01 02 00 00 00 02",
        P,
    ),
    ("5.0 3.3.2.3.8 Subscription Identifier 0", 5, "30 06 00 01 74 02 0B 00", P),
    (
        "5.0 1.5.5 Subscription Identifier of five bytes",
        5,
        "30 0A 00 01 74 06 0B FF FF FF FF 01",
        M,
    ),
    ("5.0 1.5.6 Correlation Data longer than its block", 5, "30 07 00 01 74 03 09 00 05", M),
    ("5.0 [MQTT-1.5.4-2] Content Type with U+0000", 5, "30 08 00 01 74 04 03 00 01 00", M),
    (
        "5.0 [MQTT-1.5.4-1] User Property name with byte FF",
        5,
        "30 0C 00 01 74 08 26 00 01 FF 00 02 61 62",
        M,
    ),
    ("5.0 2.2.2 Property Length past the end of the packet", 5, "30 06 00 01 74 09 01 01", M),
    # ---- CONNECT (server-side reader: level unknown) --------------------------------------
    (
        "[MQTT-3.1.2-1] protocol name MQTX",
        None,
        "10 0F 00 04 4D 51 54 58 04 02 00 3C 00 03 61 62 63",
        U,
    ),
    ("[MQTT-3.1.2-2] MQTT protocol level 6", None, f"10 0F {MQTT} 06 02 00 3C 00 03 61 62 63", U),
    ("[MQTT-3.1.2-2] MQTT protocol level 3", None, f"10 0F {MQTT} 03 02 00 3C 00 03 61 62 63", U),
    (
        "3.1 MQIsdp with level 4",
        None,
        "10 11 00 06 4D 51 49 73 64 70 04 02 00 3C 00 03 61 62 63",
        U,
    ),
    ("[MQTT-3.1.2-3] CONNECT reserved flag", None, f"10 0F {MQTT} 04 03 00 3C 00 03 61 62 63", M),
    (
        "3.1.1 [MQTT-3.1.2-14] Will QoS 3",
        None,
        f"10 15 {MQTT} 04 1E 00 3C 00 03 61 62 63 00 01 77 00 01 78",
        M,
    ),
    (
        "5.0 [MQTT-3.1.2-12] Will QoS 3",
        None,
        f"10 17 {MQTT} 05 1E 00 3C 00 00 03 61 62 63 00 00 01 77 00 01 78",
        M,
    ),
    (
        "[MQTT-3.1.2-13] Will QoS 1 without Will Flag",
        None,
        f"10 0F {MQTT} 04 0A 00 3C 00 03 61 62 63",
        M,
    ),
    (
        "[MQTT-3.1.2-15] Will Retain without Will Flag",
        None,
        f"10 0F {MQTT} 04 22 00 3C 00 03 61 62 63",
        M,
    ),
    (
        "5.0 [MQTT-3.1.2-11] Will QoS 2 without Will Flag",
        None,
        f"10 10 {MQTT} 05 12 00 3C 00 00 03 61 62 63",
        M,
    ),
    (
        "3.1.1 [MQTT-3.1.2-22] password without user name",
        None,
        f"10 13 {MQTT} 04 42 00 3C 00 03 61 62 63 00 02 70 77",
        M,
    ),
    (
        "3.1 [MQTT-3.1.2-22] password without user name",
        None,
        "10 15 00 06 4D 51 49 73 64 70 03 42 00 3C 00 03 61 62 63 00 02 70 77",
        M,
    ),
    (
        "3.1 CONNECT a byte longer than its fields",
        None,
        f"10 10 {MQTT} 04 02 00 3C 00 03 61 62 63 00",
        M,
    ),
    ("3.1.3.1 CONNECT ends inside the client id", None, f"10 0E {MQTT} 04 02 00 3C 00 03 61 62", M),
    (
        "3.1.3.5 user name flag without a user name",
        None,
        f"10 0F {MQTT} 04 82 00 3C 00 03 61 62 63",
        M,
    ),
    ("[MQTT-1.5.4-2] client id with U+0000", None, f"10 0F {MQTT} 04 02 00 3C 00 03 61 00 63", M),
    (
        "5.0 2.2.2.2 CONNECT with Topic Alias",
        None,
        f"10 13 {MQTT} 05 02 00 3C 03 23 00 01 00 03 61 62 63",
        M,
    ),
    (
        "5.0 3.1.3.2 Will Properties with Session Expiry Interval",
        None,
        f"10 1C {MQTT} 05 06 00 3C 00 00 03 61 62 63 05 11 00 00 00 01 00 01 77 00 01 78",
        M,
    ),
    (
        "5.0 3.1.2.11.2 Session Expiry Interval twice",
        None,
        f"10 1A {MQTT} 05 02 00 3C 0A 11 00 00 00 01 11 00 00 00 02 00 03 61 62 63",
        P,
    ),
    (
        "5.0 3.1.2.11.3 Receive Maximum 0",
        None,
        f"10 13 {MQTT} 05 02 00 3C 03 21 00 00 00 03 61 62 63",
        P,
    ),
    (
        "5.0 3.1.2.11.4 Maximum Packet Size 0",
        None,
        f"10 15 {MQTT} 05 02 00 3C 05 27 00 00 00 00 00 03 61 62 63",
        P,
    ),
    (
        "5.0 3.1.2.11.7 Request Problem Information 2",
        None,
        f"10 12 {MQTT} 05 02 00 3C 02 17 02 00 03 61 62 63",
        P,
    ),
    (
        "5.0 3.1.2.11.6 Request Response Information 2",
        None,
        f"10 12 {MQTT} 05 02 00 3C 02 19 02 00 03 61 62 63",
        P,
    ),
    (
        "5.0 3.1.2.11.10 Authentication Data without Method",
        None,
        f"10 14 {MQTT} 05 02 00 3C 04 16 00 01 78 00 03 61 62 63",
        P,
    ),
    (
        "5.0 2.2.2.2 unknown property identifier 0x7F",
        None,
        f"10 12 {MQTT} 05 02 00 3C 02 7F 00 00 03 61 62 63",
        M,
    ),
    ("5.0 2.2.2 Property Length past the end", None, f"10 0C {MQTT} 05 02 00 3C 20 00", M),
    (
        "5.0 1.5.3 Session Expiry Interval cut short",
        None,
        f"10 13 {MQTT} 05 02 00 3C 03 11 00 00 00 03 61 62 63",
        M,
    ),
    (
        "5.0 1.5.7 User Property without its value",
        None,
        f"10 14 {MQTT} 05 02 00 3C 04 26 00 01 6B 00 03 61 62 63",
        M,
    ),
    # ---- CONNACK -------------------------------------------------------------------------
    ("3.1.1 [MQTT-3.2.2-1] reserved acknowledge flags", 4, "20 02 02 00", M),
    ("3.1.1 3.2.2.3 return code 6", 4, "20 02 00 06", P),
    ("3.1.1 [MQTT-3.2.2-4] session present with a refusal", 4, "20 02 01 05", P),
    ("3.1.1 3.2 CONNACK a byte too long", 4, "20 03 00 00 00", M),
    ("5.0 3.2.2.2 CONNACK reason 0x01", 5, "20 03 00 01 00", P),
    ("5.0 3.2.2.3.1 CONNACK without Property Length", 5, "20 02 00 00", M),
    ("5.0 3.2.2.3.4 Maximum QoS 2", 5, "20 05 00 00 02 24 02", P),
    ("5.0 3.2.2.3.5 Retain Available 2", 5, "20 05 00 00 02 25 02", P),
    ("5.0 3.2.2.3.11 Wildcard Subscription Available 2", 5, "20 05 00 00 02 28 02", P),
    ("5.0 [MQTT-3.2.2-6] session present with a refusal", 5, "20 03 01 80 00", P),
    # ---- PUBACK, PUBREC, PUBREL, PUBCOMP -------------------------------------------------
    ("3.1.1 [MQTT-2.3.1-1] PUBACK packet id 0", 4, "40 02 00 00", P),
    ("3.1.1 3.4.1 PUBACK Remaining Length 3", 4, "40 03 00 01 00", M),
    ("5.0 3.4.2 PUBACK Remaining Length 1", 5, "40 01 00", M),
    ("5.0 3.4.2.1 PUBACK reason 0x05", 5, "40 03 00 01 05", P),
    ("5.0 3.6.2.1 PUBREL reason 0x10", 5, "62 03 00 01 10", P),
    ("5.0 3.7.2.1 PUBCOMP reason 0x80", 5, "70 03 00 01 80", P),
    ("5.0 2.2.2.2 PUBACK with Topic Alias", 5, "40 07 00 01 00 03 23 00 01", M),
    ("5.0 3.5.2.2.2 PUBREC Reason String twice", 5, "50 0A 00 01 00 06 1F 00 00 1F 00 00", P),
    ("5.0 3.4.2 PUBACK a byte after the properties", 5, "40 05 00 01 00 00 00", M),
    # ---- SUBSCRIBE -----------------------------------------------------------------------
    ("3.1.1 [MQTT-3.8.3-3] SUBSCRIBE without a filter", 4, "82 02 00 01", P),
    ("5.0 [MQTT-3.8.3-2] SUBSCRIBE without a filter", 5, "82 03 00 01 00", P),
    ("3.1.1 [MQTT-3-8.3-4] requested QoS byte 04", 4, "82 08 00 01 00 03 61 2F 62 04", M),
    ("3.1.1 [MQTT-3-8.3-4] requested QoS 3", 4, "82 08 00 01 00 03 61 2F 62 03", M),
    (
        "5.0 [MQTT-3.8.3-5] subscription options reserved bits",
        5,
        "82 09 00 01 00 00 03 61 2F 62 40",
        M,
    ),
    ("5.0 3.8.3.1 Maximum QoS 3", 5, "82 09 00 01 00 00 03 61 2F 62 03", P),
    ("5.0 3.8.3.1 Retain Handling 3", 5, "82 09 00 01 00 00 03 61 2F 62 30", P),
    (
        "5.0 [MQTT-3.8.3-4] No Local on a Shared Subscription",
        5,
        "82 10 00 01 00 00 0A 24 73 68 61 72 65 2F 67 2F 78 04",
        P,
    ),
    ("5.0 3.8.2.1.2 Subscription Identifier 0", 5, "82 0B 00 01 02 0B 00 00 03 61 2F 62 00", P),
    (
        "5.0 3.8.2.1.2 two Subscription Identifiers",
        5,
        "82 0D 00 01 04 0B 01 0B 02 00 03 61 2F 62 00",
        P,
    ),
    ("3.1.1 [MQTT-2.3.1-1] SUBSCRIBE packet id 0", 4, "82 08 00 00 00 03 61 2F 62 00", P),
    ("3.1.1 3.8.3 filter without its options byte", 4, "82 07 00 01 00 03 61 2F 62", M),
    # ---- SUBACK, UNSUBSCRIBE, UNSUBACK ---------------------------------------------------
    ("3.1.1 3.9.3 SUBACK return code 3", 4, "90 03 00 01 03", P),
    ("5.0 3.9.3 SUBACK reason 0x11", 5, "90 04 00 01 00 11", P),
    ("3.1.1 3.9.3 SUBACK without return codes", 4, "90 02 00 01", P),
    ("3.1.1 [MQTT-3.10.3-2] UNSUBSCRIBE without a filter", 4, "A2 02 00 01", P),
    ("5.0 [MQTT-3.10.3-2] UNSUBSCRIBE without a filter", 5, "A2 03 00 01 00", P),
    ("3.1.1 3.11 UNSUBACK with a payload", 4, "B0 03 00 01 00", M),
    ("5.0 3.11.3 UNSUBACK reason 0x10", 5, "B0 04 00 01 00 10", P),
    ("5.0 3.11.3 UNSUBACK without reason codes", 5, "B0 03 00 01 00", P),
    # ---- PINGREQ, PINGRESP, DISCONNECT, AUTH ----------------------------------------------
    ("3.12 PINGREQ with a body", 4, "C0 01 00", M),
    ("3.13 PINGRESP with a body", 5, "D0 01 00", M),
    ("3.1.1 3.14 DISCONNECT with a body", 4, "E0 01 00", M),
    ("5.0 3.14.2.1 DISCONNECT reason 0x01", 5, "E0 01 01", P),
    ("5.0 2.2.2.2 DISCONNECT with Will Delay Interval", 5, "E0 07 00 05 18 00 00 00 01", M),
    ("5.0 3.15.2.1 AUTH reason 0x01", 5, "F0 01 01", P),
]

IDS = [vector[0] for vector in NEGATIVE]


@pytest.mark.parametrize(("name", "level", "hex_bytes", "error"), NEGATIVE, ids=IDS)
def test_negative_vector_raises_the_exact_error(
    name: str, level: int | None, hex_bytes: str, error: type[MQTTError]
) -> None:
    with pytest.raises(MQTTError) as caught:
        PacketReader(protocol_level=level).feed(bytes.fromhex(hex_bytes))
    assert type(caught.value) is error, caught.value
    assert caught.value.reason_code == REASON[error]


@pytest.mark.parametrize(("name", "level", "hex_bytes", "error"), NEGATIVE, ids=IDS)
def test_negative_vector_fed_byte_by_byte_raises_the_same_error(
    name: str, level: int | None, hex_bytes: str, error: type[MQTTError]
) -> None:
    reader = PacketReader(protocol_level=level)
    data = bytes.fromhex(hex_bytes)
    with pytest.raises(MQTTError) as caught:
        for index in range(len(data)):
            assert reader.feed(data[index : index + 1]) == []
    assert type(caught.value) is error


@pytest.mark.parametrize(
    ("hex_bytes", "level_seen"),
    [
        ("10 0F 00 04 4D 51 54 58 04 02 00 3C 00 03 61 62 63", 4),  # bad name
        (f"10 0F {MQTT} 06 02 00 3C 00 03 61 62 63", 6),  # bad level
        (f"10 0F {MQTT} 03 02 00 3C 00 03 61 62 63", 3),  # 3.1 level under the 3.1.1 name
        ("10 06 00 04 4D 51 54 58", None),  # bad name, packet ends before the level
    ],
)
def test_unsupported_protocol_version_carries_the_level_seen(
    hex_bytes: str, level_seen: int | None
) -> None:
    with pytest.raises(UnsupportedProtocolVersion) as caught:
        PacketReader().feed(bytes.fromhex(hex_bytes))
    assert caught.value.protocol_level == level_seen


def test_level_3_reader_tolerates_flags_that_3_1_left_unchecked() -> None:
    """MQTT 3.1 did not make receivers check these bits (Mosquitto does not either):
    a SUBSCRIBE with DUP set, as some 3.1 clients send on a retry, still decodes."""
    reader = PacketReader(protocol_level=3)
    [subscribe] = reader.feed(bytes.fromhex("8A 08 00 01 00 03 61 2F 62 01"))
    assert subscribe.packet_id == 1  # type: ignore[union-attr]
    with pytest.raises(MalformedPacket):
        PacketReader(protocol_level=4).feed(bytes.fromhex("8A 08 00 01 00 03 61 2F 62 01"))
