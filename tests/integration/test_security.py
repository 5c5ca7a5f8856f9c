"""Issue 14 as a client on the wire sees it: raw sockets and paho against the mqttd process.

- a client sending more QoS 2 publishes than Receive Maximum reads DISCONNECT 0x93: the
  broker closes lingeringly, so the reason is not lost to a TCP reset;
- an acknowledgement of the wrong type for an inflight packet id ends the connection;
- $SYS is not writable, whatever the ACL;
- the 256 MB CONNECT streams of the issue are cut off after a few hundred kilobytes.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

import pytest
from mqtt_raw import (
    PUBLISH,
    RawClient,
    gen_connect,
    gen_pubcomp,
    gen_publish,
    gen_pubrec,
    gen_subscribe,
)
from paho.mqtt.enums import MQTTProtocolVersion

from .paho_client import V5, V311, PahoClient

if TYPE_CHECKING:
    from conftest import MqttdFactory

CONFIG = """
[persistence]
enabled = false

[limits]
receive_maximum = 2
"""


def _read_until_eof(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data + b"<RST>"
        if not chunk:
            return data
        data += chunk


def _packets(data: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data) and not data[pos:].startswith(b"<RST>"):
        first, length, mult, i = data[pos], 0, 1, pos + 1
        while True:
            length += (data[i] & 0x7F) * mult
            mult *= 128
            i += 1
            if not data[i - 1] & 0x80:
                break
        out.append((first, data[i : i + length]))
        pos = i + length
    return out


def test_receive_maximum_exceeded_reads_disconnect_0x93(mqttd_factory: MqttdFactory) -> None:
    server = mqttd_factory(config=CONFIG)
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(gen_connect("flood", proto_ver=5))
        assert sock.recv(4096)[:1] == b"\x20"
        # 64 QoS 2 publishes of 64 KiB, as fast as the socket takes them: the third is over
        # Receive Maximum 2, so most of these bytes are unread when the broker closes.
        payload = b"x" * 65536
        flood = b"".join(
            gen_publish("t/flood", qos=2, mid=i, payload=payload, proto_ver=5) for i in range(1, 65)
        )
        try:
            sock.sendall(flood)
        except OSError as exc:  # the broker reset the connection under our feet
            pytest.fail(f"sending failed with {exc!r}: the broker did not close lingeringly")
        answer = _read_until_eof(sock)
    assert not answer.endswith(b"<RST>"), "connection reset before the reason code was read"
    disconnects = [body for first, body in _packets(answer) if first == 0xE0]
    assert disconnects and disconnects[0][0] == 0x93


@pytest.mark.parametrize("level", [4, 5])
def test_pubrec_for_a_qos_1_delivery_closes_the_connection(
    mqttd_factory: MqttdFactory, level: int
) -> None:
    server = mqttd_factory(config=CONFIG)
    with RawClient(server.host, server.port) as sub, RawClient(server.host, server.port) as pub:
        sub.connect("wrong-ack", proto_ver=level)
        sub.send(gen_subscribe(1, "t/ack", 1, proto_ver=level))
        sub.expect_type(9)
        pub.connect("pub", proto_ver=level)
        pub.send(gen_publish("t/ack", qos=1, mid=1, payload=b"m", proto_ver=level))
        delivered = sub.expect_type(PUBLISH)
        assert delivered.flags & 0x06 == 0x02  # QoS 1: the subscriber holds its id
        mid = delivered.publish(level).mid
        sub.send(gen_pubrec(mid, proto_ver=level) + b"\xc0\x00")  # + PINGREQ
        if level == 5:
            sub.expect_disconnect(0x82)
        else:
            assert sub.expect_closed() == []
        # PUBCOMP for an id nothing waits on is not an error.
        pub.send(gen_pubcomp(9, proto_ver=level) + b"\xc0\x00")
        while (packet := pub.read_packet()) is not None and packet.type != 0xD:
            pass  # the PUBACK of the publish above comes first
        assert packet is not None and packet.type == 0xD  # PINGRESP


@pytest.mark.parametrize("version", [V311, V5])
def test_clients_cannot_spoof_sys(
    mqttd_factory: MqttdFactory, version: MQTTProtocolVersion
) -> None:
    server = mqttd_factory(config=CONFIG)
    spy = PahoClient(server.host, server.port, "spy", protocol=version)
    spy.connect()
    spoofer = PahoClient(server.host, server.port, "spoofer", protocol=version)
    spoofer.connect()
    try:
        spoofer.publish("$SYS/broker/version", b"mqttd 6.6.6", qos=1, retain=True)
        time.sleep(0.2)
        spy.subscribe("$SYS/broker/version", 1)
        message = spy.expect_message(timeout=5)  # the broker's own, retained
        assert message.payload != b"mqttd 6.6.6"
    finally:
        spy.close()
        spoofer.close()


def test_streamed_huge_connects_are_cut_off_early(mqttd_factory: MqttdFactory) -> None:
    server = mqttd_factory(config=CONFIG)
    sent = 0
    with socket.create_connection((server.host, server.port)) as sock:
        # CONNECT, Remaining Length 250,000,000.
        sock.sendall(b"\x10\x80\xe5\x9a\x77\x00\x04MQTT\x04\x02\x00\x3c")
        sock.settimeout(10)
        with pytest.raises(OSError):
            while sent < 120_000_000:
                sock.sendall(b"\x00" * 65536)
                sent += 65536
    assert sent < 20_000_000  # the socket buffers, not the broker, took the rest
    with RawClient(server.host, server.port) as client:
        client.connect("after", proto_ver=4)
