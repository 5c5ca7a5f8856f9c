"""`Security` in the core: who may connect, what each client may do, whose session it is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from support.auth import MakeConfig, SecureHarness

from mqttd.auth.hooks import ConnectInfo
from mqttd.auth.limits import is_loopback_host
from mqttd.broker.message import Message
from mqttd.config import ConfigError, ListenerConfig
from mqttd.protocol import PubAck, Publish, PubRec
from mqttd.protocol.reason_codes import ReasonCode
from mqttd.security import Security
from mqttd.store.memory import MemoryStore

ACL = """\
topic read public/#

user alice
topic readwrite alice/#
topic read shared/#
topic read retained/#
topic deny retained/secret

user bob
topic readwrite bob/#
topic write shared/#
topic write retained/#
"""


@pytest.fixture
def secure(make_config: MakeConfig) -> SecureHarness:
    """alice and bob with passwords, the ACL above, anonymous clients allowed."""
    return SecureHarness(
        make_config(passwords={"alice": "a-pw", "bob": "b-pw"}, acl=ACL, allow_anonymous=True)
    )


# -- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.10", False),
        ("broker.example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_by_default_anonymous_clients_connect_on_loopback_only(make_config: MakeConfig) -> None:
    lan = ListenerConfig(name="lan", host="0.0.0.0", port=0)
    config = make_config(listeners=[ListenerConfig(name="mqtt", port=0), lan], allow_anonymous=None)
    security = Security(config)
    assert security.check() != []  # an exposed listener without auth: no start
    security._loaded = True
    info = ConnectInfo("c", None, None, 4, "10.0.0.5:1000", "lan")
    assert security.authenticate(info).reason_code == ReasonCode.NOT_AUTHORIZED
    info.listener = "mqtt"
    assert security.authenticate(info).accepted


def test_an_exposed_listener_without_auth_refuses_to_start(make_config: MakeConfig) -> None:
    config = make_config(listeners=[ListenerConfig(name="mqtt", host="0.0.0.0", port=0)])
    with pytest.raises(ConfigError) as info:
        Security(config).load()
    (line,) = info.value.lines
    assert line.startswith('config error: listeners[0].host: "0.0.0.0" is not a loopback')
    assert "auth.allow_anonymous = true" in line and "auth.password_file" in line


@pytest.mark.parametrize(
    "auth",
    [
        {"allow_anonymous": True},
        {"passwords": {"u": "p"}},
        {"plugin": "mqttd.auth.examples:static_users"},
    ],
)
def test_an_exposed_listener_starts_with_auth_or_explicit_anonymous(
    make_config: MakeConfig, auth: dict[str, object]
) -> None:
    config = make_config(listeners=[ListenerConfig(name="lan", host="0.0.0.0", port=0)], **auth)
    Security(config).load()


def test_an_exposed_listener_with_certificate_identity_starts(
    make_config: MakeConfig, tls_listener: Callable[..., ListenerConfig]
) -> None:
    Security(make_config(listeners=[tls_listener()])).load()
    with pytest.raises(ConfigError):
        Security(make_config(listeners=[tls_listener(identity=False)])).load()


def test_allow_anonymous_false_is_refused_on_an_exposed_listener_without_auth(
    make_config: MakeConfig,
) -> None:
    config = make_config(
        listeners=[ListenerConfig(name="lan", host="::", port=0)], allow_anonymous=False
    )
    with pytest.raises(ConfigError, match="allow_anonymous = false and no authentication"):
        Security(config).load()


def test_passwords_are_checked(secure: SecureHarness) -> None:
    assert secure.on().connect("a", username="alice", password=b"a-pw").reason_code == 0
    assert secure.on().connect("b", username="alice", password=b"nope").reason_code == 0x04
    assert secure.on(level=5).connect("c", username="alice").reason_code == 0x86
    assert secure.on(level=5).connect("d", username="eve", password=b"x").reason_code == 0x86


def test_a_password_file_turns_anonymous_off_unless_allowed(make_config: MakeConfig) -> None:
    # As Mosquitto 2.0: configured authentication means no anonymous clients, loopback too.
    unset = SecureHarness(make_config(passwords={"u": "p"}))
    assert unset.on().connect("a").reason_code == 0x05
    assert unset.on(level=5).connect("b").reason_code == ReasonCode.NOT_AUTHORIZED
    allowed = SecureHarness(make_config(passwords={"u": "p"}, allow_anonymous=True))
    assert allowed.on().connect("a").reason_code == 0
    assert allowed.on(peer="10.1.1.1:5").connect("b").reason_code == 0
    denied = SecureHarness(make_config(passwords={"u": "p"}, allow_anonymous=False))
    assert denied.on(level=5).connect("c").reason_code == ReasonCode.NOT_AUTHORIZED
    assert denied.on(level=4).connect("d").reason_code == 0x05


def test_a_name_nothing_can_check_is_treated_as_anonymous(make_config: MakeConfig) -> None:
    lan = ListenerConfig(name="lan", host="0.0.0.0", port=0)
    harness = SecureHarness(make_config(listeners=[lan], allow_anonymous=True))
    assert harness.on("lan").connect("a", username="whoever").reason_code == 0


def test_configured_files_that_were_never_loaded_fail_closed(make_config: MakeConfig) -> None:
    security = Security(make_config(passwords={"u": "p"}, acl="topic read #\n"))
    info = ConnectInfo("c", "u", b"p", 4, "127.0.0.1:1", "mqtt")
    assert not security.authenticate(info).accepted
    assert not security.authorise("c", "u", "read", "a")


def test_load_reports_every_bad_file_at_once(make_config: MakeConfig, tmp_path: Path) -> None:
    (tmp_path / "bad-pw").write_text("u:plain\n")
    (tmp_path / "bad-acl").write_text("topic sometimes x\n")
    config = make_config(
        password_file=str(tmp_path / "bad-pw"),
        acl_file=str(tmp_path / "bad-acl"),
        plugin="no_such_module_x:make",
    )
    with pytest.raises(ConfigError) as info:
        Security(config).load()
    lines = info.value.lines
    assert len(lines) == 3
    assert lines[0].startswith("config error: auth.password_file: ") and "line 1" in lines[0]
    assert lines[1].startswith("config error: auth.acl_file: ") and "line 1" in lines[1]
    assert lines[2].startswith('config error: auth.plugin: cannot import "no_such_module_x"')


# -- authorisation in the core ------------------------------------------------------------------


def test_without_an_acl_the_core_checks_nothing(make_config: MakeConfig) -> None:
    harness = SecureHarness(make_config(passwords={"u": "p"}))
    assert harness.broker.authorise is None


def test_a_denied_publish_is_refused_with_0x87_in_5_0(secure: SecureHarness) -> None:
    watcher = secure.login("w", "alice", b"a-pw")
    watcher.subscribe("alice/#")
    bob = secure.login("b", "bob", b"b-pw", level=5)
    bob.publish("alice/inbox", qos=1, packet_id=7)
    ack = bob.expect(PubAck)
    assert (ack.packet_id, ack.reason_code) == (7, ReasonCode.NOT_AUTHORIZED)
    bob.publish("alice/inbox", qos=2, packet_id=8)
    assert bob.expect(PubRec).reason_code == ReasonCode.NOT_AUTHORIZED
    bob.publish("alice/inbox", qos=0)
    assert watcher.packets() == []


def test_a_denied_publish_is_acknowledged_and_dropped_in_3_1_1(secure: SecureHarness) -> None:
    watcher = secure.login("w", "alice", b"a-pw")
    watcher.subscribe("alice/#")
    bob = secure.login("b", "bob", b"b-pw", level=4)
    bob.publish("alice/inbox", qos=1, packet_id=7)
    assert bob.expect(PubAck) == PubAck(7)  # as Mosquitto: no way to say no in 3.1.1
    assert watcher.packets() == []
    assert not bob.closed


def test_subscribe_codes_follow_the_acl(secure: SecureHarness) -> None:
    alice5 = secure.login("a5", "alice", b"a-pw", level=5)
    suback = alice5.subscribe("alice/#", "bob/#", "#", "$share/g/alice/+", qos=1)
    assert suback.reason_codes == [1, 0x87, 0x87, 1]
    alice4 = secure.login("a4", "alice", b"a-pw", level=4)
    assert alice4.subscribe("alice/#", "bob/#", qos=1).reason_codes == [1, 0x80]


def test_deliveries_are_checked_per_topic(secure: SecureHarness) -> None:
    # A filter granted as a whole can still match topics the ACL denies (the deny of
    # retained/secret sits inside retained/#): those deliveries are held back.
    alice = secure.login("a", "alice", b"a-pw")
    assert alice.subscribe("retained/#").reason_codes == [0]
    bob = secure.login("b", "bob", b"b-pw")
    bob.publish("retained/open", b"1")
    bob.publish("retained/secret", b"2")
    assert [p.topic for p in alice.publishes()] == ["retained/open"]


def test_retained_messages_a_client_may_not_read_are_not_sent(secure: SecureHarness) -> None:
    bob = secure.login("b", "bob", b"b-pw")
    bob.publish("retained/open", b"1", retain=True)
    bob.publish("retained/secret", b"2", retain=True)
    alice = secure.login("a", "alice", b"a-pw")
    alice.subscribe("retained/#")
    assert [p.topic for p in alice.publishes()] == ["retained/open"]


def test_sys_topics_need_a_dollar_rule(secure: SecureHarness) -> None:
    anonymous = secure.login("anon")
    alice = secure.login("a", "alice", b"a-pw")
    # Anonymous clients have "topic read public/#" only; $SYS needs a '$' rule.
    assert anonymous.subscribe("$SYS/#").reason_codes == [0x80]
    assert alice.subscribe("$SYS/#").reason_codes == [0x80]
    secure.broker.publish(Message("$SYS/broker/uptime", b"1", 0, True))
    assert anonymous.packets() == [] and alice.packets() == []


def test_a_will_to_a_topic_the_client_may_not_write_refuses_the_connect(
    secure: SecureHarness,
) -> None:
    from mqttd.protocol import Will

    client = secure.on(level=5)
    connack = client.connect(
        "b", username="bob", password=b"b-pw", will=Will("alice/last-words", b"bye")
    )
    assert connack.reason_code == ReasonCode.NOT_AUTHORIZED
    ok = secure.on(level=5).connect(
        "b", username="bob", password=b"b-pw", will=Will("bob/last-words", b"bye")
    )
    assert ok.reason_code == 0


def test_shared_subscriptions_check_the_inner_filter(secure: SecureHarness) -> None:
    alice = secure.login("a", "alice", b"a-pw")
    assert alice.subscribe("$share/g/shared/#").reason_codes == [0]
    bob = secure.login("b", "bob", b"b-pw")
    assert bob.subscribe("$share/g/shared/#").reason_codes == [0x80]  # write only
    bob.publish("shared/x", b"1")
    assert [p.topic for p in alice.publishes()] == ["shared/x"]


# -- reload ---------------------------------------------------------------------------------------


def test_a_reload_removes_rights_at_once_without_dropping_anyone(
    secure: SecureHarness,
) -> None:
    alice = secure.login("a", "alice", b"a-pw")
    alice.subscribe("shared/#")
    bob = secure.login("b", "bob", b"b-pw")
    bob.publish("shared/1", b"before")
    assert [p.payload for p in alice.publishes()] == [b"before"]
    Path(secure.config.auth.acl_file).write_text(ACL.replace("topic read shared/#\n", ""))
    secure.reload()
    bob.publish("shared/2", b"after")
    assert alice.packets() == []
    assert not alice.closed and not bob.closed
    # New rights apply at once too.
    Path(secure.config.auth.acl_file).write_text(ACL)
    secure.reload()
    bob.publish("shared/3", b"again")
    assert [p.payload for p in alice.publishes()] == [b"again"]


def test_a_reload_re_reads_the_password_file(secure: SecureHarness) -> None:
    from mqttd.auth.password_file import PasswordFile

    passwords = PasswordFile.load(secure.config.auth.password_file)
    passwords.set("alice", "new-pw")
    passwords.save()
    assert secure.on().connect("a", username="alice", password=b"new-pw").reason_code == 0x04
    secure.reload()
    assert secure.on().connect("a", username="alice", password=b"new-pw").reason_code == 0


def test_a_broken_file_at_reload_keeps_the_running_rules(
    secure: SecureHarness, caplog: pytest.LogCaptureFixture
) -> None:
    Path(secure.config.auth.acl_file).write_text("topic maybe x\n")
    secure.reload()
    assert "auth not reloaded" in caplog.text
    alice = secure.login("a", "alice", b"a-pw")
    assert alice.subscribe("alice/#").reason_codes == [0]


def test_a_reload_can_add_an_acl_to_a_broker_that_had_none(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    harness = SecureHarness(make_config(passwords={"u": "p"}))
    assert harness.broker.authorise is None
    (tmp_path / "acl2").write_text("user u\ntopic read mine/#\n")
    config = harness.config
    config.auth.acl_file = str(tmp_path / "acl2")
    harness.reload()
    assert harness.broker.authorise is not None
    client = harness.login("c", "u", b"p")
    assert client.subscribe("mine/#", "theirs/#").reason_codes == [0, 0x80]


# -- sessions belong to their user ---------------------------------------------------------------


def test_another_user_cannot_take_over_a_session(secure: SecureHarness) -> None:
    alice = secure.login("device-1", "alice", b"a-pw", clean_start=False)
    alice.subscribe("alice/#", qos=1)
    thief = secure.on(level=5)
    connack = thief.connect("device-1", username="bob", password=b"b-pw")
    assert connack.reason_code == ReasonCode.NOT_AUTHORIZED
    thief4 = secure.on(level=4)
    assert thief4.connect("device-1", username="bob", password=b"b-pw").reason_code == 0x05
    assert not alice.closed  # not taken over
    assert "alice/#" in secure.broker.sessions["device-1"].subscriptions


def test_a_clean_start_from_another_user_cannot_end_a_session(secure: SecureHarness) -> None:
    alice = secure.login("device-1", "alice", b"a-pw", clean_start=False)
    alice.subscribe("alice/#", qos=1)
    alice.lose()
    thief = secure.on(level=4)
    assert thief.connect("device-1", username="bob", password=b"b-pw").reason_code == 0x05
    session = secure.broker.sessions["device-1"]
    assert session.username == "alice" and "alice/#" in session.subscriptions
    back = secure.on(level=4)
    connack = back.connect("device-1", username="alice", password=b"a-pw", clean_start=False)
    assert (connack.reason_code, connack.session_present) == (0, True)


def test_the_owner_survives_a_restart(make_config: MakeConfig) -> None:
    store = MemoryStore()
    first = SecureHarness(make_config(passwords={"alice": "a", "bob": "b"}), store=store)
    first.login("device-1", "alice", b"a", clean_start=False).lose()
    (stored,) = asyncio.run(store.load()).sessions
    assert stored.owner == "alice"
    # A new broker on the same store (a restart): bob still cannot have it.
    second = SecureHarness(first.config, store=store)
    asyncio.run(second.broker.start())
    assert second.broker.sessions["device-1"].username == "alice"
    assert second.on().connect("device-1", username="bob", password=b"b").reason_code == 0x05
    back = second.on().connect("device-1", username="alice", password=b"a", clean_start=False)
    assert (back.reason_code, back.session_present) == (0, True)


def test_without_authentication_sessions_are_not_owned(make_config: MakeConfig) -> None:
    harness = SecureHarness(make_config())
    first = harness.login("c", "someone")
    second = harness.on()
    assert second.connect("c", username="someone-else").reason_code == 0
    assert first.closed  # an ordinary takeover


# -- TLS identity ----------------------------------------------------------------------------------


def test_the_certificate_identity_is_the_user_name(
    make_config: MakeConfig, tls_listener: Callable[..., ListenerConfig]
) -> None:
    config = make_config(
        listeners=[ListenerConfig(name="mqtt", port=0), tls_listener()],
        acl="user sensor-7\ntopic readwrite sensors/7/#\n",
    )
    harness = SecureHarness(config)
    client = harness.on("mqtts", level=5, peer="203.0.113.9:4000", identity="sensor-7")
    # The CONNECT's own user name and password are ignored: the certificate decides.
    assert client.connect("s7", username="admin", password=b"guess").reason_code == 0
    assert harness.broker.sessions["s7"].username == "sensor-7"
    assert client.subscribe("sensors/7/#", "sensors/8/#").reason_codes == [0, 0x87]
    nameless = harness.on("mqtts", level=5, peer="203.0.113.9:4001", identity=None)
    assert nameless.connect("x").reason_code == ReasonCode.NOT_AUTHORIZED


# -- plugins ---------------------------------------------------------------------------------------


def test_the_example_plugin_authenticates_and_authorises(make_config: MakeConfig) -> None:
    config = make_config(
        plugin="mqttd.auth.examples:static_users",
        plugin_options={"users": {"alice": "wonderland"}, "public": "news/#"},
    )
    harness = SecureHarness(config)
    assert harness.broker.authorise is not None and harness.broker.sessions_owned
    assert harness.on(level=5).connect("x", username="alice", password=b"no").reason_code == 0x86
    assert harness.on(level=5).connect("y").reason_code == ReasonCode.NOT_AUTHORIZED
    alice = harness.login("a", "alice", b"wonderland", level=5)
    assert alice.subscribe("users/alice/#", "news/#", "users/bob/#").reason_codes == [0, 0, 0x87]
    alice.publish("news/today", qos=1, packet_id=3)
    assert alice.expect(PubAck).reason_code == ReasonCode.NOT_AUTHORIZED  # read-only
    alice.publish("users/alice/note", qos=1, packet_id=4)
    got = alice.packets()
    assert any(isinstance(p, Publish) and p.topic == "users/alice/note" for p in got)
    assert PubAck(4) in got


def test_a_password_file_user_is_decided_before_the_plugin(make_config: MakeConfig) -> None:
    config = make_config(
        passwords={"ops": "root-pw"},
        plugin="mqttd.auth.examples:static_users",
        plugin_options={"users": {"alice": "wonderland"}},
    )
    harness = SecureHarness(config)
    assert harness.on().connect("o", username="ops", password=b"root-pw").reason_code == 0
    assert harness.on().connect("o2", username="ops", password=b"wonderland").reason_code == 4
    assert harness.on().connect("a", username="alice", password=b"wonderland").reason_code == 0


class Exploding:
    def authenticate(self, info: ConnectInfo) -> object:
        raise RuntimeError("backend down")

    def authorise(self, client_id: str, username: str | None, action: str, topic: str) -> bool:
        raise RuntimeError("backend down")


def exploding(options: object) -> Exploding:
    return Exploding()


def test_a_failing_plugin_refuses_rather_than_allows(make_config: MakeConfig) -> None:
    harness = SecureHarness(make_config(plugin=f"{__name__}:exploding", allow_anonymous=True))
    assert harness.on(level=5).connect("x", username="u").reason_code == 0x80
    anonymous = harness.login("anon")  # allow_anonymous = true: the plugin is not asked
    assert anonymous.subscribe("a/b").reason_codes == [0x80]


# -- issue 14: a user name is an identity only once proven -------------------------------


def _scram_file(tmp_path: Path) -> str:
    from mqttd.auth.scram import ScramUsers

    users = ScramUsers()
    users.add("carol", "c-pw")
    path = tmp_path / "scram-users"
    path.write_text(users.dump())
    return str(path)


def test_a_scram_file_counts_as_authentication_on_an_exposed_listener(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    lan = ListenerConfig(name="lan", host="0.0.0.0", port=0)
    security = Security(make_config(listeners=[lan], scram_file=_scram_file(tmp_path)))
    assert security.check() == []
    security.load()
    assert security.sessions_owned


def test_with_a_scram_file_anonymous_and_unproven_names_are_refused(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    harness = SecureHarness(make_config(scram_file=_scram_file(tmp_path), acl=ACL))
    assert harness.on().connect("a").reason_code == 0x05  # anonymous, loopback
    assert harness.on(level=5).connect("b", username="carol").reason_code == 0x86
    assert harness.on().connect("c", username="carol", password=b"bad").reason_code == 0x04
    assert harness.on().connect("d", username="carol", password=b"c-pw").reason_code == 0
    assert harness.on(level=5).connect("e", username="nobody", password=b"x").reason_code == 0x86


def test_with_an_acl_and_no_authentication_a_user_name_is_refused(
    make_config: MakeConfig,
) -> None:
    # The ACL grants bob rights: a name nothing proves must not claim them.
    harness = SecureHarness(make_config(acl=ACL))
    assert harness.on(level=5).connect("a", username="bob").reason_code == 0x86
    assert harness.on(level=4).connect("b", username="bob").reason_code == 0x04
    assert harness.on().connect("c").reason_code == 0  # anonymous on loopback: as before


def test_a_bridges_local_leg_stays_accepted_with_a_password_file(make_config: MakeConfig) -> None:
    # The in-process "$bridge" listener is no configured listener: judged by its peer.
    harness = SecureHarness(make_config(passwords={"u": "p"}))
    bridge = harness.on("$bridge", peer="localhost:bridge-up")
    assert bridge.connect("$bridge/up").reason_code == 0
    assert harness.on().connect("anon").reason_code == 0x05  # a real listener: refused
