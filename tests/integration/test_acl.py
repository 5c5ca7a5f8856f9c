"""ACLs and password files on a real mqttd process, with paho clients; SIGHUP reloads them."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mqttd.auth.password_file import PasswordFile

from .paho_client import V5, V311, PahoClient

ACL = """\
# anonymous clients: the broker's figures only
topic read $SYS/#

user alice
topic readwrite home/#
topic deny home/vault/#
topic read news/#

user bob
topic readwrite bob/#
topic write news/#
topic write home/#
"""

USERS = {"alice": "alice-pw", "bob": "bob-pw"}


@pytest.fixture
def secured(mqttd_factory: Callable[..., Any], tmp_path: Path) -> Any:
    passwords = PasswordFile(tmp_path / "passwd")
    for user, password in USERS.items():
        passwords.set(user, password)
    passwords.save()
    (tmp_path / "acl").write_text(ACL)
    server = mqttd_factory(
        config=f"""
[persistence]
enabled = false

[sys]
interval = 1

[auth]
password_file = "{tmp_path / "passwd"}"
acl_file = "{tmp_path / "acl"}"
# A password file turns anonymous access off (issue 14): this test wants both.
allow_anonymous = true
"""
    )
    server.acl_path = tmp_path / "acl"
    server.passwd_path = tmp_path / "passwd"
    return server


def login(
    server: Any, user: str | None, client_id: str, protocol: Any = V5, **kw: Any
) -> PahoClient:
    client = PahoClient(server.host, server.port, client_id, protocol=protocol, **kw)
    if user is not None:
        client.client.username_pw_set(user, USERS[user])
    client.connect()
    return client


class AckWatcher:
    """Collects the reason code of each acknowledged publish (paho's on_publish)."""

    def __init__(self, client: PahoClient) -> None:
        self.codes: dict[int, int] = {}
        self.changed = threading.Condition()
        client.client.on_publish = self._on_publish

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self.changed:
            self.codes[mid] = rc.value
            self.changed.notify_all()

    def code(self, mid: int, timeout: float = 5.0) -> int:
        with self.changed:
            assert self.changed.wait_for(lambda: mid in self.codes, timeout), "no ack"
            return self.codes[mid]


def test_a_wrong_password_is_refused(secured: Any) -> None:
    client = PahoClient(secured.host, secured.port, "x", protocol=V5)
    client.client.username_pw_set("alice", "wrong")
    with client:
        assert client.connect(expect_success=False).reason_code == 0x86
    client = PahoClient(secured.host, secured.port, "y", protocol=V311)
    client.client.username_pw_set("mallory", "x")
    with client:
        # 3.1.1 return code 4; paho reports it as its 5.0 equivalent, 0x86.
        assert client.connect(expect_success=False).reason_code == 0x86


def test_publish_denied_is_0x87_in_5_0_and_silently_dropped_in_3_1_1(secured: Any) -> None:
    with login(secured, "alice", "alice") as alice, login(secured, "bob", "bob5") as bob5:
        alice.subscribe("home/#", 1)
        acks = AckWatcher(bob5)
        info = bob5.client.publish("home/vault/door", b"open", qos=1)  # alice may not read
        assert acks.code(info.mid) == 0  # bob may write it; nobody may read it
        info = bob5.client.publish("alice/private", b"x", qos=1)
        assert acks.code(info.mid) == 0x87
        with login(secured, "bob", "bob4", protocol=V311) as bob4:
            bob4.publish("alice/private", b"x", qos=1)  # acknowledged all the same
            bob4.publish("home/kitchen", b"ok", qos=1)
        received = alice.expect_message()
        assert (received.topic, received.payload) == ("home/kitchen", b"ok")
        alice.expect_no_message(0.3)


def test_subscriptions_the_acl_does_not_cover_are_refused(secured: Any) -> None:
    with login(secured, "alice", "a5") as a5, login(secured, "alice", "a4", V311) as a4:
        assert a5.subscribe("home/+/temp", 1) == [1]
        assert a5.subscribe("#", 1) == [0x87]
        assert a5.subscribe("home/vault/#", 1) == [0x87]
        assert a4.subscribe("bob/#", 1) == [0x80]


def test_wildcards_and_retained_messages_never_leak_a_forbidden_topic(secured: Any) -> None:
    with login(secured, "bob", "bob") as bob:
        bob.publish("home/vault/code", b"1234", qos=1, retain=True)
        bob.publish("home/hall/light", b"on", qos=1, retain=True)
    with login(secured, "alice", "alice") as alice:
        alice.subscribe("home/#", 1)
        (received,) = alice.expect_messages(1)
        assert (received.topic, received.retain) == ("home/hall/light", True)
        alice.expect_no_message(0.3)


def test_sys_is_readable_only_where_the_acl_says(secured: Any) -> None:
    with login(secured, None, "anon") as anon, login(secured, "alice", "alice") as alice:
        assert anon.subscribe("$SYS/broker/#", 0) == [0]
        assert anon.expect_message(timeout=5).topic.startswith("$SYS/broker/")
        assert alice.subscribe("$SYS/#", 0) == [0x87]


def test_sighup_removes_rights_at_once_without_dropping_connections(secured: Any) -> None:
    with login(secured, "alice", "alice") as alice, login(secured, "bob", "bob") as bob:
        alice.subscribe("news/#", 1)
        bob.publish("news/1", b"before", qos=1)
        assert alice.expect_message().payload == b"before"
        secured.acl_path.write_text(ACL.replace("topic read news/#\n", ""))
        secured.send_signal(signal.SIGHUP)
        secured.wait_for_stderr(lambda text: "auth reloaded" in text, 10)
        bob.publish("news/2", b"after", qos=1)
        alice.expect_no_message(0.5)
        assert not alice.disconnected.is_set() and not bob.disconnected.is_set()


def test_sighup_applies_a_new_password(secured: Any) -> None:
    passwords = PasswordFile.load(secured.passwd_path)
    passwords.set("bob", "rotated")
    passwords.save()
    secured.send_signal(signal.SIGHUP)
    secured.wait_for_stderr(lambda text: "auth reloaded" in text, 10)
    client = PahoClient(secured.host, secured.port, "b", protocol=V5)
    client.client.username_pw_set("bob", "rotated")
    with client:
        assert client.connect().reason_code == 0


def test_another_user_cannot_take_a_client_id(secured: Any) -> None:
    with login(secured, "alice", "shared-id") as alice:
        thief = PahoClient(secured.host, secured.port, "shared-id", protocol=V5)
        thief.client.username_pw_set("bob", USERS["bob"])
        with thief:
            assert thief.connect(expect_success=False).reason_code == 0x87
        alice.subscribe("home/#", 0)  # still connected and served
        assert not alice.disconnected.is_set()


def test_check_config_validates_the_auth_files(tmp_path: Path) -> None:
    (tmp_path / "acl").write_text("topic sometimes a/b\n")
    (tmp_path / "passwd").write_text("alice:plaintext\n")
    config = tmp_path / "mqttd.toml"
    config.write_text(
        f'[auth]\npassword_file = "{tmp_path / "passwd"}"\nacl_file = "{tmp_path / "acl"}"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "mqttd", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("config error: auth.password_file: ") and "line 1" in lines[0]
    assert lines[1].startswith("config error: auth.acl_file: ") and "line 1" in lines[1]
