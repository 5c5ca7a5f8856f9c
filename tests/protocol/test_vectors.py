"""Byte-exact vectors for every packet type, written out by hand from the specifications.

Each vector was composed byte by byte from the packet layouts of MQTT 3.1.1 (OASIS
standard, chapter 3) and MQTT 5.0 (chapter 3), not produced by our encoder. Both
directions are checked: the bytes decode to the packet, and the packet encodes to the
bytes. Vectors marked decode-only are legal encodings that our encoder does not choose
(the long form of an acknowledgement, properties in another order).
Properties are listed in identifier order, which is the order our encoder writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mqttd.protocol import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketReader,
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
    decode_packet,
    encode,
)


@dataclass(frozen=True)
class Vector:
    name: str
    level: int
    hex: str
    packet: Packet
    encodes: bool = True  # False: a legal form our encoder does not produce

    @property
    def data(self) -> bytes:
        return bytes.fromhex(self.hex)


KV = (("k", "v"),)

VECTORS = [
    # ---- MQTT 3.1 (level 3) ------------------------------------------------------------
    Vector(
        "3.1 CONNECT: protocol name MQIsdp, level 3",
        3,
        "10 11  00 06 4D 51 49 73 64 70  03  02  00 3C  00 03 61 62 63",
        Connect("abc", 3, True, 60, protocol_name="MQIsdp"),
    ),
    Vector(
        "3.1 CONNECT client id of 30 characters: over 3.1's 23, accepted as Mosquitto does",
        3,
        "10 2C  00 06 4D 51 49 73 64 70  03  02  00 3C  00 1E"
        "  61 62 63 64 65 66 67 68 69 6A 6B 6C 6D 6E 6F 70 71 72 73 74 75 76 77 78 79 7A"
        "  30 31 32 33",
        Connect("abcdefghijklmnopqrstuvwxyz0123", 3, True, 60, protocol_name="MQIsdp"),
    ),
    Vector(
        "3.1 CONNECT with user name and password (a string in 3.1, binary here)",
        3,
        "10 18  00 06 4D 51 49 73 64 70  03  C2  00 0A  00 01 63  00 03 62 6F 62  00 02 70 77",
        Connect("c", 3, True, 10, "bob", b"pw", protocol_name="MQIsdp"),
    ),
    # ---- MQTT 3.1.1 (level 4) ----------------------------------------------------------
    Vector(
        "3.1.1 3.1 CONNECT minimal, clean session, keep alive 60",
        4,
        "10 0F  00 04 4D 51 54 54  04  02  00 3C  00 03 61 62 63",
        Connect("abc", 4, True, 60),
    ),
    Vector(
        "3.1.1 3.1 CONNECT empty client id, clean session 0 [MQTT-3.1.3-6]",
        4,
        "10 0C  00 04 4D 51 54 54  04  00  00 00  00 00",
        Connect("", 4, False, 0),
    ),
    Vector(
        "3.1.1 3.1.2.3 CONNECT flags EE: user, password, will retain, will QoS 1, will, clean",
        4,
        "10 1F  00 04 4D 51 54 54  04  EE  00 0A  00 02 63 31  00 03 77 2F 74  00 03 62 79 65"
        "  00 01 75  00 02 70 77",
        Connect("c1", 4, True, 10, "u", b"pw", Will("w/t", b"bye", 1, True)),
    ),
    Vector("3.1.1 3.2 CONNACK accepted", 4, "20 02 00 00", Connack(False, 0)),
    Vector("3.1.1 3.2.2.2 CONNACK session present", 4, "20 02 01 00", Connack(True, 0)),
    Vector("3.1.1 3.2.2.3 CONNACK not authorized (5)", 4, "20 02 00 05", Connack(False, 5)),
    Vector(
        "3.1.1 3.3 PUBLISH QoS 0",
        4,
        "30 07  00 03 61 2F 62  68 69",
        Publish("a/b", b"hi"),
    ),
    Vector(
        "3.1.1 3.3.1 PUBLISH DUP, QoS 1, RETAIN, packet id 10",
        4,
        "3B 09  00 03 61 2F 62  00 0A  68 69",
        Publish("a/b", b"hi", 1, True, True, 10),
    ),
    Vector(
        "3.1.1 3.3 PUBLISH QoS 2, empty payload",
        4,
        "34 07  00 03 61 2F 62  12 34",
        Publish("a/b", b"", 2, packet_id=0x1234),
    ),
    Vector(
        "3.1.1 2.2.3 PUBLISH Remaining Length 205 in two bytes (CD 01)",
        4,
        "30 CD 01  00 03 61 2F 62" + " 5A" * 200,
        Publish("a/b", b"Z" * 200),
    ),
    Vector(
        "3.1.1 3.3.2.1 PUBLISH multi-byte UTF-8 topic",
        4,
        "30 08  00 06 C3 A9 2F E2 82 AC",
        Publish("é/€"),
    ),
    Vector("3.1.1 3.4 PUBACK", 4, "40 02 00 0A", PubAck(10)),
    Vector("3.1.1 3.5 PUBREC", 4, "50 02 00 0A", PubRec(10)),
    Vector("3.1.1 3.6 PUBREL flags 0010 [MQTT-3.6.1-1]", 4, "62 02 00 0A", PubRel(10)),
    Vector("3.1.1 3.7 PUBCOMP", 4, "70 02 FF FF", PubComp(0xFFFF)),
    Vector(
        "3.1.1 3.8 SUBSCRIBE flags 0010, two filters [MQTT-3.8.1-1]",
        4,
        "82 0C  00 0A  00 03 61 2F 62 01  00 01 23 02",
        Subscribe(10, [Subscription("a/b", 1), Subscription("#", 2)]),
    ),
    Vector(
        "3.1.1 3.9 SUBACK granted QoS 1 and failure 0x80",
        4,
        "90 04  00 0A  01 80",
        SubAck(10, [1, 0x80]),
    ),
    Vector(
        "3.1.1 3.10 UNSUBSCRIBE flags 0010 [MQTT-3.10.1-1]",
        4,
        "A2 0A  00 0B  00 03 61 2F 62  00 01 23",
        Unsubscribe(11, ["a/b", "#"]),
    ),
    Vector("3.1.1 3.11 UNSUBACK", 4, "B0 02 00 0B", UnsubAck(11)),
    Vector("3.1.1 3.12 PINGREQ", 4, "C0 00", PingReq()),
    Vector("3.1.1 3.13 PINGRESP", 4, "D0 00", PingResp()),
    Vector("3.1.1 3.14 DISCONNECT", 4, "E0 00", Disconnect()),
    # ---- MQTT 5.0 (level 5) ------------------------------------------------------------
    Vector(
        "5.0 3.1 CONNECT minimal, empty properties",
        5,
        "10 10  00 04 4D 51 54 54  05  02  00 3C  00  00 03 61 62 63",
        Connect("abc", 5, True, 60),
    ),
    Vector(
        "5.0 3.1.2.9 CONNECT password without user name is allowed",
        5,
        "10 14  00 04 4D 51 54 54  05  42  00 3C  00  00 03 61 62 63  00 02 70 77",
        Connect("abc", 5, True, 60, None, b"pw"),
    ),
    Vector(
        "5.0 3.1.2.11 CONNECT every CONNECT property, and 3.1.3.2 every Will property",
        5,
        "10 67  00 04 4D 51 54 54  05  D6  00 1E"
        "  27  11 00 00 00 78  15 00 04 54 45 53 54  16 00 02 01 02  17 00  19 01"
        "  21 00 14  22 00 0A  26 00 01 6B 00 01 76  27 00 00 04 00"
        "  00 02 63 31"
        "  23  01 01  02 00 00 00 3C  03 00 04 74 65 78 74  08 00 01 72  09 00 02 AB CD"
        "  18 00 00 00 05  26 00 01 61 00 01 62"
        "  00 01 77  00 01 78  00 01 75  00 02 70 77",
        Connect(
            "c1",
            5,
            True,
            30,
            "u",
            b"pw",
            Will(
                "w",
                b"x",
                2,
                False,
                Properties(
                    payload_format_indicator=1,
                    message_expiry_interval=60,
                    content_type="text",
                    response_topic="r",
                    correlation_data=b"\xab\xcd",
                    will_delay_interval=5,
                    user_property=(("a", "b"),),
                ),
            ),
            Properties(
                session_expiry_interval=120,
                authentication_method="TEST",
                authentication_data=b"\x01\x02",
                request_problem_information=0,
                request_response_information=1,
                receive_maximum=20,
                topic_alias_maximum=10,
                user_property=KV,
                maximum_packet_size=1024,
            ),
        ),
    ),
    Vector(
        "5.0 2.2.2 CONNECT properties in another order decode the same",
        5,
        "10 1D  00 04 4D 51 54 54  05  02  00 3C"
        "  0D  27 00 00 04 00  21 00 14  11 00 00 00 78  00 03 61 62 63",
        Connect(
            "abc",
            5,
            True,
            60,
            properties=Properties(
                session_expiry_interval=120, receive_maximum=20, maximum_packet_size=1024
            ),
        ),
        encodes=False,
    ),
    Vector("5.0 3.2 CONNACK success, no properties", 5, "20 03 00 00 00", Connack(False, 0)),
    Vector("5.0 3.2.2.2 CONNACK Not authorized (0x87)", 5, "20 03 00 87 00", Connack(False, 0x87)),
    Vector(
        "5.0 3.2.2.3 CONNACK session present with every server property",
        5,
        "20 2E  01  00  2B  12 00 03 61 62 63  13 00 3C  1A 00 01 69  1C 00 01 73"
        "  1F 00 02 6F 6B  21 00 0A  22 00 05  24 01  25 00  27 00 00 10 00  28 01  29 00"
        "  2A 01",
        Connack(
            True,
            0,
            Properties(
                assigned_client_identifier="abc",
                server_keep_alive=60,
                response_information="i",
                server_reference="s",
                reason_string="ok",
                receive_maximum=10,
                topic_alias_maximum=5,
                maximum_qos=1,
                retain_available=0,
                maximum_packet_size=4096,
                wildcard_subscription_available=1,
                subscription_identifier_available=0,
                shared_subscription_available=1,
            ),
        ),
    ),
    Vector(
        "5.0 3.2.2.3 CONNACK session expiry and authentication",
        5,
        "20 10  00  00  0D  11 00 00 00 0A  15 00 01 58  16 00 01 7A",
        Connack(
            False,
            0,
            Properties(
                session_expiry_interval=10,
                authentication_method="X",
                authentication_data=b"z",
            ),
        ),
    ),
    Vector(
        "5.0 3.3 PUBLISH QoS 0, empty properties",
        5,
        "30 08  00 03 61 2F 62  00  68 69",
        Publish("a/b", b"hi"),
    ),
    Vector(
        "5.0 3.3.2.3 PUBLISH QoS 1 with every PUBLISH property, two Subscription Identifiers",
        5,
        "32 2C  00 03 61 2F 62  00 0A"
        "  22  01 01  02 00 00 00 3C  03 00 01 74  08 00 01 72  09 00 01 63  0B 05  0B 80 01"
        "  23 00 02  26 00 01 6B 00 01 76"
        "  68 69",
        Publish(
            "a/b",
            b"hi",
            1,
            False,
            False,
            10,
            Properties(
                payload_format_indicator=1,
                message_expiry_interval=60,
                content_type="t",
                response_topic="r",
                correlation_data=b"c",
                subscription_identifier=(5, 128),
                topic_alias=2,
                user_property=KV,
            ),
        ),
    ),
    Vector(
        "5.0 3.3.2.3.4 PUBLISH empty topic with a Topic Alias",
        5,
        "30 08  00 00  03 23 00 01  68 69",
        Publish("", b"hi", properties=Properties(topic_alias=1)),
    ),
    Vector(
        "5.0 3.3.2.3.4 PUBLISH Topic Alias 0 decodes (the broker answers 0x94)",
        5,
        "30 0B  00 03 61 2F 62  03 23 00 00  68 69",
        Publish("a/b", b"hi", properties=Properties(topic_alias=0)),
        encodes=False,
    ),
    Vector(
        "5.0 2.2.2.2 PUBLISH two User Properties with the same name keep their order",
        5,
        "30 14  00 01 74  0E  26 00 01 6B 00 01 31  26 00 01 6B 00 01 30  78 79",
        Publish("t", b"xy", properties=Properties(user_property=(("k", "1"), ("k", "0")))),
    ),
    Vector("5.0 3.4.2.1 PUBACK success, short form", 5, "40 02 00 0A", PubAck(10)),
    Vector(
        "5.0 3.4.2.2.1 PUBACK reason code without Property Length",
        5,
        "40 03 00 0A 10",
        PubAck(10, 0x10),
    ),
    Vector(
        "5.0 3.4.2.2 PUBACK with a Reason String",
        5,
        "40 08  00 0A  80  04  1F 00 01 78",
        PubAck(10, 0x80, Properties(reason_string="x")),
    ),
    Vector(
        "5.0 3.4.2 PUBACK long form of success decodes as the short one",
        5,
        "40 04 00 0A 00 00",
        PubAck(10),
        encodes=False,
    ),
    Vector("5.0 3.5 PUBREC no matching subscribers", 5, "50 03 00 0A 10", PubRec(10, 0x10)),
    Vector("5.0 3.5 PUBREC success", 5, "50 02 00 0A", PubRec(10)),
    Vector("5.0 3.6 PUBREL packet identifier not found", 5, "62 03 00 0A 92", PubRel(10, 0x92)),
    Vector(
        "5.0 3.6.2.2 PUBREL success with a User Property",
        5,
        "62 0B  00 0A  00  07  26 00 01 6B 00 01 76",
        PubRel(10, 0, Properties(user_property=KV)),
    ),
    Vector("5.0 3.7 PUBCOMP success", 5, "70 02 00 0A", PubComp(10)),
    Vector("5.0 3.7 PUBCOMP not found", 5, "70 03 00 0A 92", PubComp(10, 0x92)),
    Vector(
        "5.0 3.8.3.1 SUBSCRIBE options: No Local, Retain As Published, Retain Handling",
        5,
        "82 1F  00 0A  09  0B 07  26 00 01 6B 00 01 76"
        "  00 03 61 2F 62  2D"
        "  00 0A 24 73 68 61 72 65 2F 67 2F 78  12",
        Subscribe(
            10,
            [
                Subscription("a/b", 1, True, True, 2),
                Subscription("$share/g/x", 2, False, False, 1),
            ],
            Properties(subscription_identifier=(7,), user_property=KV),
        ),
    ),
    Vector(
        "5.0 3.9 SUBACK granted QoS 0, 1, 2 and unspecified error",
        5,
        "90 07  00 0A  00  00 01 02 80",
        SubAck(10, [0, 1, 2, 0x80]),
    ),
    Vector(
        "5.0 3.9.2.1 SUBACK with a Reason String",
        5,
        "90 08  00 0A  04  1F 00 01 78  A2",
        SubAck(10, [0xA2], Properties(reason_string="x")),
    ),
    Vector(
        "5.0 3.10 UNSUBSCRIBE",
        5,
        "A2 0B  00 0B  00  00 03 61 2F 62  00 01 23",
        Unsubscribe(11, ["a/b", "#"]),
    ),
    Vector(
        "5.0 3.10.2.1 UNSUBSCRIBE with a User Property",
        5,
        "A2 0D  00 0B  07  26 00 01 6B 00 01 76  00 01 23",
        Unsubscribe(11, ["#"], Properties(user_property=KV)),
    ),
    Vector(
        "5.0 3.11 UNSUBACK success and no subscription existed",
        5,
        "B0 05  00 0B  00  00 11",
        UnsubAck(11, [0, 0x11]),
    ),
    Vector("5.0 3.12 PINGREQ", 5, "C0 00", PingReq()),
    Vector("5.0 3.13 PINGRESP", 5, "D0 00", PingResp()),
    Vector("5.0 3.14.2.1 DISCONNECT Remaining Length 0", 5, "E0 00", Disconnect()),
    Vector(
        "5.0 3.14.2.2.1 DISCONNECT reason without Property Length",
        5,
        "E0 01 04",
        Disconnect(4),
    ),
    Vector(
        "5.0 3.14.2.2 DISCONNECT with Session Expiry Interval",
        5,
        "E0 07  00  05  11 00 00 00 3C",
        Disconnect(0, Properties(session_expiry_interval=60)),
    ),
    Vector(
        "5.0 3.14.2.2 DISCONNECT Use another server with Server Reference",
        5,
        "E0 06  9C  04  1C 00 01 73",
        Disconnect(0x9C, Properties(server_reference="s")),
    ),
    Vector(
        "5.0 3.14 DISCONNECT long form of success decodes as the short one",
        5,
        "E0 02 00 00",
        Disconnect(),
        encodes=False,
    ),
    Vector("5.0 3.15.2.1 AUTH Remaining Length 0", 5, "F0 00", Auth()),
    Vector(
        "5.0 3.15.2.2 AUTH continue with method and data",
        5,
        "F0 0A  18  08  15 00 01 58  16 00 01 79",
        Auth(0x18, Properties(authentication_method="X", authentication_data=b"y")),
    ),
    Vector("5.0 3.15 AUTH re-authenticate, no properties", 5, "F0 02 19 00", Auth(0x19)),
    Vector(
        "5.0 3.15 AUTH reason code without Property Length is accepted",
        5,
        "F0 01 19",
        Auth(0x19),
        encodes=False,
    ),
]

IDS = [vector.name for vector in VECTORS]


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_vector_decodes_to_the_packet(vector: Vector) -> None:
    assert decode_packet(vector.data, vector.level) == vector.packet


ENCODED_VECTORS = [v for v in VECTORS if v.encodes]


@pytest.mark.parametrize("vector", ENCODED_VECTORS, ids=[v.name for v in ENCODED_VECTORS])
def test_packet_encodes_to_the_vector(vector: Vector) -> None:
    assert encode(vector.packet, vector.level).hex(" ") == vector.data.hex(" ")


CONNECT_VECTORS = [v for v in VECTORS if isinstance(v.packet, Connect)]


@pytest.mark.parametrize("vector", CONNECT_VECTORS, ids=[v.name for v in CONNECT_VECTORS])
def test_connect_decodes_at_its_own_level_in_a_fresh_server_reader(vector: Vector) -> None:
    """A server-side reader (level unknown) decodes CONNECT at the level it announces."""
    reader = PacketReader()
    assert reader.feed(vector.data) == [vector.packet]
    assert reader.protocol_level == vector.level


def test_every_packet_type_has_a_vector_at_levels_4_and_5() -> None:
    for level in (4, 5):
        covered = {type(v.packet) for v in VECTORS if v.level == level and v.encodes}
        expected: set[type] = {Connect, Connack, Publish, PubAck, PubRec, PubRel, PubComp}
        expected |= {Subscribe, SubAck, Unsubscribe, UnsubAck, PingReq, PingResp, Disconnect}
        if level == 5:
            expected.add(Auth)
        assert covered == expected
