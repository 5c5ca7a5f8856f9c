"""A user name is an identity only once proven: `[auth] scram_file` as the only authentication.

The attacks of issue 14, item 1, as a client on the wire makes them (raw sockets, paho): a
SCRAM user's persistent session taken by an anonymous client that reuses its client id,
and a bare user name getting that user's ACL rights without any SCRAM exchange.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from mqtt_raw import (
    CONNACK,
    SUBACK,
    RawClient,
    gen_connect,
    gen_subscribe,
    prop_u32,
)
from support.scram import scram_login
from support.v5 import ScramClient

from mqttd.auth.scram import ScramUsers

if TYPE_CHECKING:
    from conftest import InProcessBroker, InProcessFactory

SESSION_EXPIRY_INTERVAL = 0x11
ACL = """\
user bob
topic readwrite secret/#
"""


@pytest.fixture
def scram_only(broker_factory: InProcessFactory, tmp_path: Path) -> Any:
    """Start a broker with scram_file (bob) and the ACL above: no password file."""
    users = ScramUsers()
    users.add("bob", "builder")
    (tmp_path / "scram").write_text(users.dump())
    (tmp_path / "acl").write_text(ACL)

    def start(allow_anonymous: bool | None = None) -> InProcessBroker:
        def configure(config: Any) -> None:
            config.auth.scram_file = str(tmp_path / "scram")
            config.auth.acl_file = str(tmp_path / "acl")
            config.auth.allow_anonymous = allow_anonymous

        return broker_factory(configure)

    return start


def _scram_login(client: RawClient, client_id: str, properties: bytes = b"") -> int:
    """bob's SCRAM login asking to keep the session; the CONNACK's reason code."""
    return scram_login(client, client_id, ScramClient("bob", "builder"), properties, False)


@pytest.mark.parametrize("allow_anonymous", [None, True])
def test_an_anonymous_client_never_gets_a_scram_users_session(
    scram_only: Any, uid: str, allow_anonymous: bool | None
) -> None:
    broker = scram_only(allow_anonymous)
    with RawClient(broker.host, broker.port) as bob:
        assert _scram_login(bob, uid, prop_u32(SESSION_EXPIRY_INTERVAL, 3600)) == 0
        bob.send(gen_subscribe(1, "secret/#", 1, proto_ver=5))
        assert bob.expect_type(SUBACK).body[-1] == 1
    # bob is gone; his session waits. An anonymous client asks for it by client id.
    with RawClient(broker.host, broker.port) as thief:
        thief.send(gen_connect(uid, proto_ver=5, clean_session=False))
        connack = thief.expect_type(CONNACK)
        assert connack.reason_code() == 0x87
        assert connack.body[0] == 0  # session present = 0
        thief.expect_closed()
    with RawClient(broker.host, broker.port) as thief:
        thief.send(gen_connect(uid, proto_ver=4, clean_session=False))
        connack = thief.expect_type(CONNACK)
        assert connack.body == b"\x00\x05"  # not authorised, no session
    # The session is still bob's.
    with RawClient(broker.host, broker.port) as bob:
        assert _scram_login(bob, uid, prop_u32(SESSION_EXPIRY_INTERVAL, 3600)) == 0


@pytest.mark.parametrize("allow_anonymous", [None, True])
@pytest.mark.parametrize(("level", "refusal"), [(5, b"\x00\x86"), (4, b"\x00\x04")])
def test_a_bare_user_name_gets_no_rights(
    scram_only: Any, uid: str, allow_anonymous: bool | None, level: int, refusal: bytes
) -> None:
    broker = scram_only(allow_anonymous)
    with RawClient(broker.host, broker.port) as client:
        client.send(gen_connect(uid, proto_ver=level, username="bob"))
        connack = client.expect_type(CONNACK)
        assert connack.body[:2] == refusal  # 5.0: 0x86, 3.1.1: 4 (bad user name or password)
        client.expect_closed()


def test_a_plain_password_checks_against_the_scram_verifier(scram_only: Any, uid: str) -> None:
    broker = scram_only()
    with RawClient(broker.host, broker.port) as client:
        client.send(gen_connect(uid, proto_ver=4, username="bob", password=b"nope"))
        assert client.expect_type(CONNACK).body == b"\x00\x04"
    with RawClient(broker.host, broker.port) as client:
        client.send(gen_connect(uid, proto_ver=4, username="bob", password=b"builder"))
        assert client.expect_type(CONNACK).body == b"\x00\x00"
        client.send(gen_subscribe(1, "secret/#", 1))
        assert client.expect_type(SUBACK).body[-1] == 1  # bob's ACL rights, proven
