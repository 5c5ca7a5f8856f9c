"""mqttd processes started from mosquitto.conf files, checked with real clients.

The files are written as mosquitto.conf(5) describes them; the password file is made by
Mosquitto's own mosquitto_passwd. Each scenario runs twice: from the mosquitto.conf
itself (`mqttd -c mosquitto.conf`) and from what `mqttd convert` printed for it, so the
converted TOML is shown to start the same broker.

The process fixture adds `-p 0 --host 127.0.0.1` (the first listener on a free port,
every listener on loopback); the other ports are free ports written into the file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from integration.paho_client import V5, V311, PahoClient
from mqtt_raw import RawClient, gen_connect, gen_publish, gen_subscribe, prop_u16
from support.servers import free_port

if TYPE_CHECKING:
    from conftest import MqttdFactory, MqttdProcess

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd"),
]

MODES = ["mosquitto.conf", "converted"]


def mosquitto_passwd(path: Path, users: dict[str, str]) -> None:
    """A password file written by Mosquitto's own tool."""
    for i, (user, password) in enumerate(users.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(
            ["mosquitto_passwd", *create, "-b", str(path), user, password],
            check=True,
            capture_output=True,
        )


def convert(path: Path) -> Path:
    """`mqttd convert path > path.toml`, which must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "mqttd", "convert", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    out = path.with_suffix(".toml")
    out.write_text(done.stdout)
    return out


Start = Callable[[str, str], "MqttdProcess"]


@pytest.fixture
def start(tmp_path: Path, mqttd_factory: MqttdFactory) -> Start:
    """start(text, mode): write text as a mosquitto.conf and run mqttd from it, or from
    its conversion when mode is "converted"."""

    def run(text: str, mode: str) -> MqttdProcess:
        path = tmp_path / "mosquitto.conf"
        path.write_text(text)
        if mode == "converted":
            path = convert(path)
        return mqttd_factory(["-c", str(path)])

    return run


def client(
    port: int, user: str | None = None, password: str | None = None, **kw: object
) -> PahoClient:
    paho = PahoClient("127.0.0.1", port, **kw)  # type: ignore[arg-type]
    if user is not None:
        paho.client.username_pw_set(user, password)
    return paho


@pytest.mark.parametrize("mode", MODES)
def test_password_file_acl_and_two_listeners(start: Start, mode: str, tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    mosquitto_passwd(passwd, {"alice": "wonder", "bob": "builder"})
    acl = tmp_path / "acl"
    acl.write_text(
        "# ACL as mosquitto.conf(5) acl_file describes it\n"
        "user alice\n"
        "topic readwrite sensors/#\n"
        "\n"
        "user bob\n"
        "topic read sensors/#\n"
        "\n"
        "pattern readwrite clients/%c/#\n"
        "pattern write users/%u/out\n"
    )
    ws_port = free_port()
    server = start(
        "# mqttd runs this file unchanged\n"
        "per_listener_settings false\n"
        "allow_anonymous false\n"
        f"password_file {passwd}\n"
        f"acl_file {acl}\n"
        "\n"
        "listener 1883\n"
        "\n"
        f"listener {ws_port}\n"
        "protocol websockets\n"
        "\n"
        "log_timestamp true\n"
        "connection_messages true\n",
        mode,
    )
    assert {(x.scheme, x.port) for x in server.listeners} >= {("ws", ws_port)}
    port = server.port
    # mosquitto_passwd's hashes check; a wrong password and no user name are refused.
    with client(port, "alice", "wrong") as bad:
        assert bad.connect(expect_success=False).reason_code in (134, 135)  # 3.1.1: 4 or 5
    with client(port) as anonymous:
        assert anonymous.connect(expect_success=False).reason_code in (134, 135)
    with (
        client(port, "alice", "wonder", client_id="a1") as alice,
        client(ws_port, "bob", "builder", client_id="b1", transport="websockets") as bob,
    ):
        alice.connect()
        bob.connect()
        assert bob.subscribe("sensors/#", 1) == [1]
        assert bob.subscribe("clients/b1/#", 1) == [1]
        alice.subscribe("clients/a1/#", 1)
        alice.publish("sensors/t1", b"21.5", 1)
        assert bob.expect_message().payload == b"21.5"
        bob.publish("sensors/t1", b"bob may only read", 1)  # refused by the ACL
        alice.publish("clients/b1/cmd", b"not alice's", 1)  # %c is alice's own id only
        alice.publish("clients/a1/cmd", b"mine", 1)
        assert alice.expect_message().payload == b"mine"
        bob.expect_no_message(0.3)
    notes = server.stderr.count("mosquitto.conf option without effect")
    assert notes == (2 if mode == "mosquitto.conf" else 0)  # said once each, at start


@pytest.mark.parametrize("mode", MODES)
def test_limits_from_a_mosquitto_conf_over_the_wire(start: Start, mode: str) -> None:
    server = start(
        "listener 1883\n"
        "allow_anonymous true\n"
        "message_size_limit 100\n"
        "max_inflight_messages 10\n"
        "max_keepalive 60\n"
        "max_qos 1\n",
        mode,
    )
    with RawClient(server.host, server.port) as raw:
        raw.send(gen_connect("lim", proto_ver=5, keepalive=600, properties=prop_u16(0x22, 10)))
        connack = raw.read_packet()
        assert connack is not None and connack.reason_code() == 0
        props = connack.properties()
        assert props[0x21] == [10]  # Receive Maximum = max_inflight_messages
        assert props[0x13] == [60]  # Server Keep Alive = max_keepalive
        assert props[0x24] == [1]  # Maximum QoS
        raw.send(gen_publish("t", qos=1, mid=5, payload=b"x" * 101, proto_ver=5))
        puback = raw.read_packet()
        assert puback is not None and (puback.mid(), puback.reason_code()) == (5, 0x83)
        raw.send(gen_publish("t", qos=1, mid=6, payload=b"x" * 100, proto_ver=5))
        puback = raw.read_packet()
        assert puback is not None and (puback.mid(), puback.reason_code()) == (6, 0x10)
    with (
        client(server.port, client_id="sub", protocol=V5) as sub,
        client(server.port, client_id="pub", protocol=V311) as pub,
    ):
        sub.connect()
        pub.connect()
        sub.subscribe("t", 1)
        pub.publish("t", b"y" * 101, 1)  # 3.1.1: acknowledged, dropped
        pub.publish("t", b"small", 1)
        assert sub.expect_message().payload == b"small"
        sub.expect_no_message(0.2)


def test_unsupported_option_stops_mqttd_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "mosquitto.conf"
    path.write_text("listener 1883\nmount_point tenant/\n")
    done = subprocess.run(
        [sys.executable, "-m", "mqttd", "-c", str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"config error: {path}:2: mount_point tenant/: mqttd has no per-listener topic prefix"
    )
    check = subprocess.run(
        [sys.executable, "-m", "mqttd", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 2 and ":2: mount_point tenant/" in check.stderr
    converted = subprocess.run(
        [sys.executable, "-m", "mqttd", "convert", str(path)], capture_output=True, text=True
    )
    assert converted.returncode == 2
    assert f"#   {path}:2: mount_point tenant/" in converted.stdout
    assert "[[listeners]]" in converted.stdout


def test_check_config_names_the_line_of_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "mosquitto.conf"
    path.write_text(f"listener 1883\nallow_anonymous false\npassword_file {tmp_path}/nope\n")
    check = subprocess.run(
        [sys.executable, "-m", "mqttd", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 2
    assert check.stderr.startswith(
        f"config error: {path}:3: password_file {tmp_path}/nope: auth.password_file: "
    ), check.stderr


@pytest.mark.parametrize("mode", MODES)
def test_more_limits_from_a_mosquitto_conf(start: Start, mode: str) -> None:
    server = start(
        "listener 1883\n"
        "allow_anonymous true\n"
        "max_connections 3\n"
        "max_packet_size 200\n"
        "retain_available false\n"
        "max_queued_messages 2\n",
        mode,
    )
    host, port = server.host, server.port
    with RawClient(host, port) as big, RawClient(host, port) as retainer:
        # max_packet_size: a bigger packet ends the connection (5.0: DISCONNECT 0x95).
        big.send(gen_connect("big", proto_ver=5))
        assert big.read_packet() is not None
        big.send(gen_publish("t", payload=b"x" * 300, proto_ver=5))
        disconnect = big.read_packet()
        assert disconnect is not None and disconnect.reason_code() == 0x95
        # retain_available false: a retained PUBLISH ends it (0x9A Retain not supported).
        retainer.send(gen_connect("ret", proto_ver=5))
        connack = retainer.read_packet()
        assert connack is not None and connack.properties()[0x25] == [0]
        retainer.send(gen_publish("t", payload=b"r", retain=True, proto_ver=5))
        disconnect = retainer.read_packet()
        assert disconnect is not None and disconnect.reason_code() == 0x9A
    # max_queued_messages: an offline session keeps 2 of 5 QoS 1 messages.
    with client(port, client_id="away", clean=False) as away:
        away.connect()
        away.subscribe("q", 1)
        away.disconnect()
    with client(port, client_id="pub") as pub:
        pub.connect()
        for i in range(5):
            pub.publish("q", str(i).encode(), 1)
    with client(port, client_id="away", clean=False) as back:
        back.connect()
        assert [m.payload for m in back.expect_messages(2)] == [b"0", b"1"]
        back.expect_no_message(0.3)
    # max_connections 3 on the listener: a fourth socket is closed at once.
    with RawClient(host, port) as a, RawClient(host, port) as b, RawClient(host, port) as c:
        for raw in (a, b, c):
            raw.send(gen_connect(f"c{id(raw)}"))
            assert raw.read_packet() is not None
        with RawClient(host, port) as fourth:
            fourth.send(gen_connect("fourth"))
            assert fourth.read_packet() is None


def test_a_qos2_publisher_hears_pubrec_first_as_from_mosquitto(
    tmp_path: Path, mqttd_factory: MqttdFactory
) -> None:
    """The same mosquitto.conf run by Mosquitto and by mqttd: a client subscribed to the
    topic it publishes at QoS 2 gets the PUBREC before its message comes back."""
    port = free_port()
    path = tmp_path / "mosquitto.conf"
    path.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    mosquitto = subprocess.Popen(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        server = mqttd_factory(["-c", str(path)])
        for where in (port, server.port):
            for _ in range(100):  # Mosquitto needs a moment to listen
                try:
                    raw = RawClient("127.0.0.1", where)
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                raise AssertionError(f"nothing listens on port {where}")
            with raw:
                raw.send(gen_connect(f"self-{where}"))
                assert raw.read_packet() is not None
                raw.send(gen_subscribe(1, "q", 2))
                assert raw.read_packet() is not None
                raw.send(gen_publish("q", qos=2, mid=7, payload=b"m"))
                first = raw.read_packet()
                assert first is not None and first.name == "PUBREC", (where, first)
    finally:
        mosquitto.terminate()
        mosquitto.wait(10)
