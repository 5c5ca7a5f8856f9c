"""Keep alive: PINGREQ/PINGRESP, and a silent client is dropped after 1.5 x keep alive.

End-to-end smoke tests in real time; the rules (every packet postpones the deadline,
0 means off, 1.5 x, the will) are proven on the FakeClock in tests/broker/test_keepalive.py.
"""

from __future__ import annotations

import time

import pytest
from mqtt_raw import DISCONNECT, gen_pingreq, gen_pingresp

from .conftest import PahoFactory, RawFactory
from .paho_client import V5, V311

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("proto_ver", [4, 5], ids=["v311", "v5"])
def test_pingreq_gets_pingresp(raw: RawFactory, uid: str, proto_ver: int) -> None:
    client = raw()
    client.connect(uid, proto_ver=proto_ver)
    for _ in range(3):
        client.send(gen_pingreq())
        client.expect_packet(gen_pingresp(), "PINGRESP")


@pytest.mark.parametrize("proto_ver", [4, 5], ids=["v311", "v5"])
def test_silent_client_is_disconnected_after_one_and_a_half_keepalive_and_its_will_sent(
    paho: PahoFactory, raw: RawFactory, uid: str, topic: str, proto_ver: int
) -> None:
    watcher = paho(f"{uid}-watch", protocol=V5 if proto_ver == 5 else V311)
    watcher.subscribe(f"{topic}/will", 1)
    client = raw(timeout=5)
    client.connect(
        uid, proto_ver=proto_ver, keepalive=1, will_topic=f"{topic}/will", will_payload=b"timed out"
    )
    start = time.monotonic()
    packets = client.expect_closed(4, allow=[DISCONNECT])
    elapsed = time.monotonic() - start
    # [MQTT-3.1.2-24]: within one and a half times the keep alive (plus timer slack).
    assert 1.0 <= elapsed <= 2.6, f"closed after {elapsed:.2f}s"
    if packets:  # 5.0 may say why first: 0x8D Keep Alive timeout
        assert proto_ver == 5 and packets[0].reason_code() == 0x8D, packets[0].raw.hex(" ")
    assert watcher.expect_message(2).payload == b"timed out"


def test_paho_client_pinging_on_keepalive_1_is_not_dropped(paho: PahoFactory, uid: str) -> None:
    client = paho(uid, protocol=V5, keepalive=1)
    time.sleep(2.0)
    assert not client.disconnected.is_set()
