"""Keep Alive: 1.5 x the interval of silence ends a connection; PINGREQ/PINGRESP."""

from __future__ import annotations

import pytest
from support.core import Harness

from mqttd.protocol import Disconnect, Packet, PingReq, PingResp, Publish, ReasonCode, Will


def test_silent_3x_client_is_closed_after_one_and_a_half_keepalive(harness: Harness) -> None:
    client = harness.connected("c", keep_alive=10)
    harness.advance(14.9)
    assert not client.closed
    harness.advance(0.2)
    assert client.closed
    assert client.packets() == []
    assert harness.broker.stats.keepalive_timeouts == 1


def test_5_keepalive_timeout_sends_disconnect_0x8d(harness: Harness) -> None:
    client = harness.connected("c", level=5, keep_alive=10)
    harness.advance(15.1)
    disconnect = client.expect(Disconnect)
    assert disconnect.reason_code == ReasonCode.KEEP_ALIVE_TIMEOUT
    assert disconnect.properties is not None
    assert disconnect.properties.reason_string == "nothing received for 1.5 times the keep alive"
    assert client.closed


@pytest.mark.parametrize("packet", [PingReq(), Publish("t", b"alive", 0)], ids=["ping", "publish"])
def test_every_packet_postpones_the_keepalive_deadline(harness: Harness, packet: Packet) -> None:
    # [MQTT-3.1.2-23]: any control packet counts, not only PINGREQ (a QoS 0 PUBLISH gets
    # no answer at all, and still keeps the connection alive).
    client = harness.connected("c", keep_alive=10)
    for _ in range(5):
        harness.advance(10)
        client.send(packet)
        assert client.packets() == ([PingResp()] if isinstance(packet, PingReq) else [])
    assert not client.closed
    harness.advance(15.1)
    assert client.closed


def test_keepalive_zero_never_times_out(harness: Harness) -> None:
    client = harness.connected("c", keep_alive=0)
    harness.advance(1_000_000)
    assert not client.closed


def test_keepalive_timeout_publishes_the_will(harness: Harness) -> None:
    watcher = harness.connected("w")
    watcher.subscribe("will")
    harness.connected("c", keep_alive=5, will=Will("will", b"timeout"))
    harness.advance(8)
    assert [p.payload for p in watcher.publishes()] == [b"timeout"]
