"""Enhanced authentication (5.0 4.12) with SCRAM-SHA-256, over a real socket.

paho cannot drive AUTH exchanges, so the client is hand-made packets (`mqtt_raw`) plus the
client side of SCRAM written in `support.v5.ScramClient` from RFC 5802.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from mqtt_raw import (
    AUTH,
    AUTHENTICATION_METHOD,
    CONNACK,
    RawClient,
    gen_connect,
    gen_publish,
    gen_subscribe,
    prop_str,
)
from support.scram import (
    AUTHENTICATION_DATA,
    auth_props,
    gen_auth,
    reauthenticate,
    scram_connect,
    scram_login,
)
from support.v5 import ScramClient

from mqttd.app import App, ephemeral_config
from mqttd.auth.enhanced import AuthContext, AuthMethods, AuthStep
from mqttd.auth.scram import (
    METHOD,
    ScramCredentials,
    ScramSha256Authenticator,
    ScramUsers,
    saslprep,
)
from mqttd.config import Config, ConfigError

if TYPE_CHECKING:
    from conftest import InProcessBroker, InProcessFactory

REASON_STRING = 0x1F


def scram_broker(factory: InProcessFactory, users: ScramUsers, **limits: object) -> InProcessBroker:
    def configure(config: object) -> None:
        for key, value in limits.items():
            setattr(config.limits, key, value)  # type: ignore[attr-defined]

    instance = factory(configure)
    instance.call(
        lambda: instance.broker.auth_methods.register(METHOD, users.authenticator_factory())
    )
    return instance


@pytest.fixture
def users() -> ScramUsers:
    store = ScramUsers()
    store.add("alice", "wonderland")
    store.add("bob", "builder")
    return store


def test_scram_connect_succeeds_and_the_server_proves_itself(
    broker_factory: InProcessFactory, users: ScramUsers, uid: str
) -> None:
    broker = scram_broker(broker_factory, users)
    with RawClient(broker.host, broker.port) as client:
        scram = ScramClient("alice", "wonderland")
        server_first = scram_connect(client, uid, scram)
        client.send(gen_auth(0x18, METHOD, scram.client_final(server_first)))
        connack = client.expect_type(CONNACK)
        assert connack.reason_code() == 0
        props = connack.properties()
        assert props[AUTHENTICATION_METHOD] == [METHOD]
        (server_final,) = props[AUTHENTICATION_DATA]
        assert isinstance(server_final, bytes) and scram.verify_server_final(server_final)
        # The connection works, as the user SCRAM authenticated (the ACL's user name).
        client.send(gen_subscribe(1, f"{uid}/t", 1, proto_ver=5))
        client.expect_type(9)
        client.send(gen_publish(f"{uid}/t", qos=0, payload=b"hi", proto_ver=5))
        assert client.read_packet().publish(5).payload == b"hi"  # type: ignore[union-attr]
    usernames = broker.call(lambda: [c.username for c in broker.broker.connections])
    assert usernames in ([], ["alice"])  # the socket may already be gone


def test_scram_users_come_from_the_configured_scram_file(
    broker_factory: InProcessFactory, users: ScramUsers, uid: str, tmp_path: Path
) -> None:
    path = tmp_path / "scram-users"
    path.write_text(users.dump())

    def configure(config: Config) -> None:
        config.auth.scram_file = str(path)

    broker = broker_factory(configure)
    with RawClient(broker.host, broker.port) as client:
        assert scram_login(client, uid, ScramClient("bob", "builder")) == 0


async def test_an_unreadable_scram_file_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "scram-users").write_text("alice:not-a-verifier\n")
    config = ephemeral_config()
    config.auth.scram_file = str(tmp_path / "scram-users")
    with pytest.raises(ConfigError, match=r"auth\.scram_file"):
        await App(config).start()


def test_scram_re_authentication_ends_with_auth_success(
    broker_factory: InProcessFactory, users: ScramUsers, uid: str
) -> None:
    broker = scram_broker(broker_factory, users)
    with RawClient(broker.host, broker.port) as client:
        assert scram_login(client, uid, ScramClient("alice", "wonderland")) == 0
        again = ScramClient("alice", "wonderland")
        server_first = reauthenticate(client, again)
        # Other packets keep flowing during re-authentication (4.12.1).
        client.send(bytes((0xC0, 0)))
        assert client.read_packet().type == 13  # type: ignore[union-attr]
        client.send(gen_auth(0x18, METHOD, again.client_final(server_first)))
        done = client.expect_type(AUTH)
        assert done.body[0] == 0x00
        props = auth_props(done.body, 1)
        assert props[AUTHENTICATION_METHOD] == [METHOD]
        (server_final,) = props[AUTHENTICATION_DATA]
        assert isinstance(server_final, bytes) and again.verify_server_final(server_final)
        assert client.is_open()


def test_scram_wrong_password_gets_connack_0x86(
    broker_factory: InProcessFactory, users: ScramUsers, uid: str
) -> None:
    broker = scram_broker(broker_factory, users)
    with RawClient(broker.host, broker.port) as client:
        scram = ScramClient("alice", "not the password")
        client.send(gen_auth(0x18, METHOD, scram.client_final(scram_connect(client, uid, scram))))
        connack = client.expect_type(CONNACK)
        assert connack.reason_code() == 0x86  # Bad User Name or Password [MQTT-4.12.0-4]
        assert AUTHENTICATION_DATA not in connack.properties()
        client.expect_closed()


def test_scram_unknown_user_looks_like_a_wrong_password(
    broker_factory: InProcessFactory, users: ScramUsers, uid: str
) -> None:
    broker = scram_broker(broker_factory, users)
    salts = []
    for _ in range(2):
        with RawClient(broker.host, broker.port) as client:
            scram = ScramClient("mallory", "guess")
            server_first = scram_connect(client, uid, scram)
            salts.append(dict(i.split("=", 1) for i in server_first.decode().split(","))["s"])
            client.send(gen_auth(0x18, METHOD, scram.client_final(server_first)))
            assert client.expect_type(CONNACK).reason_code() == 0x86
            client.expect_closed()
    # The made-up salt stays the same, as a real user's would.
    assert salts[0] == salts[1]


def test_unsupported_authentication_method_gets_connack_0x8c(
    v5broker: InProcessBroker, uid: str
) -> None:
    with RawClient(v5broker.host, v5broker.port) as client:
        client.send(
            gen_connect(uid, proto_ver=5, properties=prop_str(AUTHENTICATION_METHOD, "KERBEROS"))
        )
        assert client.expect_type(CONNACK).reason_code() == 0x8C  # [MQTT-4.12.0-1]
        client.expect_closed()


def test_publish_before_connack_during_authentication_is_a_protocol_error(
    broker_factory: InProcessFactory, users: ScramUsers, uid: str
) -> None:
    broker = scram_broker(broker_factory, users)
    with RawClient(broker.host, broker.port) as client:
        scram_connect(client, uid, ScramClient("alice", "wonderland"))
        client.send(gen_publish("t", payload=b"early", proto_ver=5))  # [MQTT-3.1.2-30]
        assert client.expect_type(CONNACK).reason_code() == 0x82
        client.expect_closed()


def test_auth_with_another_method_is_a_protocol_error(
    broker_factory: InProcessFactory, users: ScramUsers, uid: str
) -> None:
    broker = scram_broker(broker_factory, users)
    with RawClient(broker.host, broker.port) as client:
        scram_connect(client, uid, ScramClient("alice", "wonderland"))
        client.send(gen_auth(0x18, "SCRAM-SHA-1", b"c=biws"))  # [MQTT-4.12.0-5]
        assert client.expect_type(CONNACK).reason_code() == 0x82
        client.expect_closed()


@pytest.mark.parametrize(
    ("user", "password", "reason"),
    [
        ("alice", "forgotten", None),  # [MQTT-4.12.1-2]
        ("bob", "builder", "re-authenticated as another user"),
    ],
    ids=["wrong-password", "another-user"],
)
def test_a_failed_re_authentication_gets_disconnect_0x87(
    broker_factory: InProcessFactory,
    users: ScramUsers,
    uid: str,
    user: str,
    password: str,
    reason: str | None,
) -> None:
    broker = scram_broker(broker_factory, users)
    with RawClient(broker.host, broker.port) as client:
        assert scram_login(client, uid, ScramClient("alice", "wonderland")) == 0
        again = ScramClient(user, password)
        client.send(gen_auth(0x18, METHOD, again.client_final(reauthenticate(client, again))))
        disconnect = client.expect_disconnect(0x87)
        if reason is not None:
            assert disconnect.properties()[REASON_STRING] == [reason]


def test_auth_without_a_method_in_connect_is_a_protocol_error(
    v5broker: InProcessBroker, uid: str
) -> None:
    with RawClient(v5broker.host, v5broker.port) as client:
        client.connect(uid, proto_ver=5)
        client.send(gen_auth(0x19, METHOD, b"n,,n=alice,r=abc"))  # [MQTT-4.12.0-7]
        client.expect_disconnect(0x82)


def test_auth_continue_with_no_exchange_running_is_a_protocol_error(
    broker_factory: InProcessFactory, users: ScramUsers, uid: str
) -> None:
    broker = scram_broker(broker_factory, users)
    with RawClient(broker.host, broker.port) as client:
        first = ScramClient("alice", "wonderland")
        client.send(gen_auth(0x18, METHOD, first.client_final(scram_connect(client, uid, first))))
        assert client.expect_type(CONNACK).reason_code() == 0
        client.send(gen_auth(0x18, METHOD, b"c=biws"))
        client.expect_disconnect(0x82)


def test_re_authenticate_before_connack_is_a_protocol_error(
    broker_factory: InProcessFactory, users: ScramUsers, uid: str
) -> None:
    broker = scram_broker(broker_factory, users)
    with RawClient(broker.host, broker.port) as client:
        scram_connect(client, uid, ScramClient("alice", "wonderland"))
        client.send(gen_auth(0x19, METHOD, b"n,,n=alice,r=abc"))
        assert client.expect_type(CONNACK).reason_code() == 0x82
        client.expect_closed()


def test_a_silent_client_in_the_middle_of_authentication_is_closed(
    broker_factory: InProcessFactory, users: ScramUsers, uid: str
) -> None:
    broker = scram_broker(broker_factory, users, connect_timeout=0.3)
    with RawClient(broker.host, broker.port) as client:
        scram_connect(client, uid, ScramClient("alice", "wonderland"))
        client.expect_closed(timeout=3.0)


def test_disconnect_during_authentication_closes_without_a_session(
    broker_factory: InProcessFactory, users: ScramUsers, uid: str
) -> None:
    broker = scram_broker(broker_factory, users)
    with RawClient(broker.host, broker.port) as client:
        scram_connect(client, uid, ScramClient("alice", "wonderland"))
        client.send(bytes((0xE0, 0)))
        client.expect_closed()
    assert broker.call(lambda: uid not in broker.broker.sessions)


# -- the SCRAM module on its own -------------------------------------------------------------

RFC7677_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"


def test_server_side_matches_the_rfc_7677_example() -> None:
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    credentials = ScramCredentials.from_password("pencil", salt, 4096)
    server = ScramSha256Authenticator(
        lambda user: credentials if user == "user" else None,
        lambda user: credentials,
        lambda: RFC7677_SERVER_NONCE,
    )
    first = server.start(METHOD, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert first.data == (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    final = server.continue_(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert final == AuthStep.success(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", "user")


def test_the_test_client_matches_the_rfc_7677_example() -> None:
    client = ScramClient("user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    final = client.client_final(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert final == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert client.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"p=tls-unique,,n=user,r=abc",  # channel binding is not offered
        b"x,,n=user,r=abc",
        b"n,,r=abc",
        b"n,,n=user",
        b"n,,n=us=er,r=abc",  # "=" must be escaped in a saslname
        b"n,,n=user,r=a,bc",
        b"n,a=other,n=user,r=abc",  # authzid of somebody else
        b"n,,m=ext,n=user,r=abc",
        b"\xff\xfe",
    ],
)
def test_malformed_client_first_messages_fail(message: bytes) -> None:
    users = ScramUsers()
    users.add("user", "pencil")
    step = users.authenticator_factory()(AuthContext("c", None, "p", "l")).start(METHOD, message)
    assert step.status.name == "FAIL" and step.reason_code == 0x87


def test_client_final_with_another_nonce_or_channel_binding_fails() -> None:
    users = ScramUsers()
    users.add("user", "pencil")
    make = users.authenticator_factory()
    for final in (b"c=biws,r=forged,p=AAAA", b"c=eSws,r={nonce},p=AAAA", b"c=biws,r={nonce}"):
        server = make(AuthContext("c", None, "p", "l"))
        first = server.start(METHOD, b"n,,n=user,r=abc")
        assert first.data is not None
        nonce = first.data.decode().split(",")[0][2:]
        step = server.continue_(final.replace(b"{nonce}", nonce.encode()))
        assert step.status.name == "FAIL"


def test_a_verifier_round_trips_and_checks_plain_passwords() -> None:
    credentials = ScramCredentials.from_password("s3cret", iterations=4096)
    assert ScramCredentials.decode(credentials.encode()) == credentials
    assert credentials.verify_password("s3cret")
    assert not credentials.verify_password("s3cret ")
    with pytest.raises(ValueError, match="SCRAM-SHA-256"):
        ScramCredentials.decode("$7$101$abc$def")


def test_user_file_loads_and_names_the_bad_line(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    users = ScramUsers()
    users.add("alice", "wonderland")
    good = folder / "scram"
    good.write_text("# SCRAM users\n\n" + users.dump())
    loaded = ScramUsers.load(good)
    alice = loaded.get("alice")
    assert alice is not None and alice.verify_password("wonderland")
    bad = folder / "bad"
    bad.write_text(users.dump() + "bob:SCRAM-SHA-256$x\n")
    with pytest.raises(ValueError, match=r"bad:2: malformed SCRAM verifier"):
        ScramUsers.load(bad)


def test_saslprep_maps_and_prohibits() -> None:
    assert saslprep("I\u00adX") == "IX"  # soft hyphen mapped to nothing (RFC 4013 3.)
    assert saslprep("user") == "user"
    assert saslprep("\u2168") == "IX"  # NFKC
    assert saslprep("a\u00a0b") == "a b"  # non-ASCII space to SPACE
    with pytest.raises(ValueError):
        saslprep("\u0007")
    with pytest.raises(ValueError):
        saslprep("\u0627\u0031")  # RandALCat must end the string too


def test_registry_looks_methods_up_by_exact_name() -> None:
    methods = AuthMethods()
    users = ScramUsers()
    methods.register(METHOD, users.authenticator_factory())
    assert METHOD in methods and "scram-sha-256" not in methods
    assert list(methods) == [METHOD] and len(methods) == 1
    methods.unregister(METHOD)
    assert methods.get(METHOD) is None
    with pytest.raises(ValueError):
        methods.register("", users.authenticator_factory())
