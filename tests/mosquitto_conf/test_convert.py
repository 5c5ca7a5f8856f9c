"""mosquitto.conf -> Config: the reader, every option's mapping, and the errors and notes.

Files are written as mosquitto.conf(5) of Mosquitto 2.0 describes them. Every file that
converts is also printed as TOML (`convert_to_toml`) and loaded back with our own TOML
loader: both roads must give the same Config.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mqttd.config import Config, ConfigError, Overrides, load_config
from mqttd.mosquitto_conf import (
    convert_file,
    convert_to_toml,
    is_mosquitto_conf,
    load_mosquitto_config,
    parse_duration,
)
from mqttd.mosquitto_conf.options import NO_EFFECT, UNSUPPORTED
from mqttd.mosquitto_conf.reader import include_order

HOST = "gateway"  # the hostname Mosquitto would put in a bridge's client id


def load(tmp_path: Path, text: str, name: str = "mosquitto.conf") -> Config:
    """Load `text` as a mosquitto.conf, and check that its TOML conversion is the same."""
    path = tmp_path / name
    path.write_text(text)
    config, _ = load_mosquitto_config(path, hostname=HOST)
    toml, errors = convert_to_toml(path, hostname=HOST)
    assert errors == []
    converted = tmp_path / (name + ".toml")
    converted.write_text(toml)
    assert load_config(converted) == config, toml
    return config


def errors_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "mosquitto.conf"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_mosquitto_config(path, hostname=HOST)
    return info.value.lines


# -- recognising and reading the file ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mosquitto"),
    [
        ("listener 1883\n", True),
        ("# Place your local configuration in /etc/mosquitto/conf.d/\npersistence true\n", True),
        ("pid_file /run/mosquitto/mosquitto.pid\n", True),
        ("[[listeners]]\nport = 1883\n", False),
        ("[limits]\nmax_keepalive = 60\n", False),
        ("# only a comment\n", False),  # the defaults either way
        ("", False),
        ("not an option at all\n", False),  # the TOML loader then says what is wrong
        ("port = 1883\n[limits\n", False),  # broken TOML stays TOML (its error is clearer)
    ],
)
def test_a_mosquitto_conf_is_recognised_by_content(
    tmp_path: Path, text: str, mosquitto: bool
) -> None:
    path = tmp_path / "any.name"
    path.write_text(text)
    assert is_mosquitto_conf(path) is mosquitto


def test_include_dir_files_load_in_mosquittos_order() -> None:
    # mosquitto.conf(5)'s own example: b.conf, A.conf, 01.conf, a.conf, B.conf
    names = ["b.conf", "A.conf", "01.conf", "a.conf", "B.conf"]
    assert sorted(names, key=include_order) == ["01.conf", "A.conf", "a.conf", "B.conf", "b.conf"]


def test_include_dir_is_read_and_later_files_win(tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "b.conf").write_text("max_queued_messages 300\n")
    (conf_d / "a.conf").write_text("listener 1884\nmax_queued_messages 200\n")
    (conf_d / "readme.txt").write_text("max_queued_messages 999\n")  # not *.conf
    config = load(tmp_path, f"listener 1883\nallow_anonymous true\ninclude_dir {conf_d}\n")
    assert [listener.port for listener in config.listeners] == [1883, 1884]
    assert config.limits.max_queued_messages == 300


def test_include_dir_inside_an_included_file_is_an_error(tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "a.conf").write_text("include_dir /etc\n")
    lines = errors_of(tmp_path, f"include_dir {conf_d}\n")
    assert lines == [
        f"config error: {conf_d / 'a.conf'}:1: include_dir: only allowed in the main "
        "configuration file (Mosquitto refuses it here too)"
    ]


def test_comments_blank_lines_and_repeated_keys(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "# =================================================================\n"
        "# General configuration\n"
        "\n"
        "   # an indented comment\n"
        "max_keepalive 100\n"
        "max_keepalive 200\n",
    )
    assert config.limits.max_keepalive == 200


# -- listeners ------------------------------------------------------------------------------


def test_no_listener_is_mosquitto_2s_local_only_default(tmp_path: Path) -> None:
    config = load(tmp_path, "persistence false\n")
    (listener,) = config.listeners
    assert (listener.host, listener.port, listener.type) == ("127.0.0.1", 1883, "mqtt")
    assert config.auth.allow_anonymous is None  # mqttd's "loopback only" = Mosquitto's


def test_port_makes_the_default_listener_on_every_interface(tmp_path: Path) -> None:
    config = load(tmp_path, "port 1884\n")
    (listener,) = config.listeners
    assert (listener.host, listener.port) == ("", 1884)
    assert config.auth.allow_anonymous is False  # Mosquitto 2.0 once a listener is set


def test_listeners_with_address_socket_domain_and_websockets(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "listener 1883 127.0.0.1\n"
        "listener 1884\nsocket_domain ipv4\n"
        "listener 1885\nsocket_domain ipv6\n"
        "listener 9001\nprotocol websockets\n"
        "listener 1886\nmax_connections 5\n"
        "listener 1887\nmax_connections -1\n",
    )
    got = [(x.host, x.port, x.type, x.max_connections) for x in config.listeners]
    assert got == [
        ("127.0.0.1", 1883, "mqtt", 0),
        ("0.0.0.0", 1884, "mqtt", 0),
        ("::", 1885, "mqtt", 0),
        ("", 9001, "ws", 0),
        ("", 1886, "mqtt", 5),
        ("", 1887, "mqtt", 0),
    ]
    assert config.listeners[3].dashboard is False  # Mosquitto serves no web page


def test_tls_listener(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "listener 8883\n"
        "cafile /etc/mosquitto/ca_certificates/ca.crt\n"
        "certfile /etc/mosquitto/certs/server.crt\n"
        "keyfile /etc/mosquitto/certs/server.key\n"
        "require_certificate true\n"
        "use_identity_as_username true\n"
        "tls_version tlsv1.3\n",
    )
    tls = config.listeners[0].tls
    assert tls is not None
    assert tls.certfile == "/etc/mosquitto/certs/server.crt"
    assert tls.keyfile == "/etc/mosquitto/certs/server.key"
    assert tls.cafile == "/etc/mosquitto/ca_certificates/ca.crt"
    assert tls.require_certificate and tls.use_identity_as_username
    assert tls.min_version == "1.3"


def test_certificate_options_before_any_listener_go_to_the_default_listener(
    tmp_path: Path,
) -> None:
    config = load(tmp_path, "port 8883\ncertfile /c.pem\nkeyfile /k.pem\n")
    (listener,) = config.listeners
    assert listener.port == 8883 and listener.tls is not None


# -- security ---------------------------------------------------------------------------


def test_global_security_options(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "listener 1883\n"
        "password_file /etc/mosquitto/passwd\n"
        "acl_file /etc/mosquitto/acl\n"
        "allow_anonymous false\n"
        "allow_zero_length_clientid false\n"
        "auto_id_prefix gw-\n",
    )
    assert config.auth.password_file == "/etc/mosquitto/passwd"
    assert config.auth.acl_file == "/etc/mosquitto/acl"
    assert config.auth.allow_anonymous is False
    assert config.mqtt.allow_zero_length_client_id is False
    assert config.mqtt.client_id_prefix == "gw-"


def test_per_listener_settings_that_agree_become_the_one_auth(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "per_listener_settings true\n"
        "listener 1883\npassword_file /p\nallow_anonymous false\n"
        "listener 8883\npassword_file /p\nallow_anonymous false\n",
    )
    assert (config.auth.password_file, config.auth.allow_anonymous) == ("/p", False)


def test_per_listener_security_before_any_listener_starts_the_default_listener(
    tmp_path: Path,
) -> None:
    # As Mosquitto's config__read: the default listener's own security options use it.
    config = load(
        tmp_path,
        "per_listener_settings true\npassword_file /p\nlistener 1884\npassword_file /p\n",
    )
    assert [(x.host, x.port) for x in config.listeners] == [("", 1883), ("", 1884)]
    assert config.auth.password_file == "/p"


def test_per_listener_settings_that_differ_stop_with_the_line(tmp_path: Path) -> None:
    lines = errors_of(
        tmp_path,
        "per_listener_settings true\n"
        "listener 1883\nallow_anonymous true\n"
        "listener 8883\npassword_file /p\n",
    )
    assert len(lines) == 1
    assert (
        ":3: allow_anonymous true: per_listener_settings true with listeners that differ"
        in (lines[0])
    )


def test_per_listener_max_qos_must_agree(tmp_path: Path) -> None:
    assert load(tmp_path, "listener 1883\nmax_qos 1\n").mqtt.maximum_qos == 1
    (line,) = errors_of(tmp_path, "listener 1883\nmax_qos 1\nlistener 1884\n")
    assert ":2: max_qos 1: mqttd has one mqtt.maximum_qos for all listeners" in line


# -- global options ---------------------------------------------------------------------


def test_every_limit_option(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "max_keepalive 120\n"
        "max_packet_size 10000\n"
        "message_size_limit 5000\n"
        "max_inflight_messages 10\n"
        "max_inflight_bytes 4096\n"
        "max_queued_messages 500\n"
        "max_queued_bytes 65536\n"
        "retain_available false\n"
        "upgrade_outgoing_qos true\n"
        "persistent_client_expiration 2w\n"
        "sys_interval 30\n"
        "listener 1883\nmax_topic_alias 5\nmax_connections 100\n",
    )
    limits = config.limits
    assert limits.max_keepalive == 120
    assert limits.max_packet_size == 10_000
    assert limits.message_size_limit == 5000
    assert limits.max_inflight_messages == limits.receive_maximum == 10
    assert limits.max_inflight_bytes == 4096
    assert limits.max_queued_messages == 500
    assert limits.max_queued_bytes == 65536
    assert limits.persistent_client_expiration == 14 * 86_400
    assert limits.topic_alias_maximum == 5
    assert config.listeners[0].max_connections == 100
    assert config.mqtt.retain_available is False
    assert config.mqtt.upgrade_outgoing_qos is True
    assert config.sys.interval == 30


def test_mosquittos_defaults_where_a_client_sees_them(tmp_path: Path) -> None:
    config = load(tmp_path, "listener 1883\n")
    assert config.limits.max_inflight_messages == 20
    assert config.limits.receive_maximum == 20  # CONNACK Receive Maximum, as Mosquitto's
    assert config.mqtt.server_topic_aliases is False
    assert config.mqtt.client_id_prefix == "auto-"
    assert config.persistence.enabled is False  # persistence defaults to false


def test_max_inflight_messages_0_means_no_maximum(tmp_path: Path) -> None:
    config = load(tmp_path, "max_inflight_messages 0\n")
    assert config.limits.max_inflight_messages == config.limits.receive_maximum == 65_535


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h", 3600), ("2d", 172_800), ("1w", 604_800), ("2m", 5_184_000), ("1y", 31_536_000)],
)
def test_persistent_client_expiration_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_persistence_location_and_file_place_our_sqlite_file(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "persistence true\npersistence_location /var/lib/mosquitto/\n"
        "persistence_file broker.db\nautosave_interval 1800\n",
    )
    assert config.persistence.enabled is True
    assert config.persistence.path == "/var/lib/mosquitto/broker.mqttd.sqlite3"


def test_log_type_sets_the_least_severe_level(tmp_path: Path) -> None:
    assert load(tmp_path, "log_type error\nlog_type warning\n").log.level == "warning"
    assert load(tmp_path, "log_type all\n").log.level == "debug"
    assert load(tmp_path, "log_type error\n").log.level == "error"


# -- bridges ----------------------------------------------------------------------------


def test_a_bridge_section(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "listener 1883\n"
        "connection cloud\n"
        "address mqtt.example.com:8883 backup.example.com\n"
        'topic sensors/# out 1 "" site1/\n'
        "topic commands/# in 2 cloud/ site1/\n"
        "topic status both\n"
        "topic alerts\n"
        "bridge_protocol_version mqttv50\n"
        "remote_username gw\n"
        "remote_password secret\n"
        "local_username bridge\n"
        "local_password local\n"
        "bridge_cafile /etc/ssl/ca.pem\n"
        "bridge_certfile /etc/ssl/gw.pem\n"
        "bridge_keyfile /etc/ssl/gw.key\n"
        "cleansession true\n"
        "try_private false\n"
        "keepalive_interval 30\n"
        "restart_timeout 2 20\n"
        "start_type lazy\n"
        "threshold 5\n"
        "idle_timeout 120\n"
        "round_robin true\n",
    )
    (bridge,) = config.bridge
    assert bridge.name == "cloud"
    assert bridge.addresses == ["mqtt.example.com:8883", "backup.example.com"]
    rules = [
        (t.pattern, t.direction, t.qos, t.local_prefix, t.remote_prefix) for t in bridge.topics
    ]
    assert rules == [
        ("sensors/#", "out", 1, "", "site1/"),
        ("commands/#", "in", 2, "cloud/", "site1/"),
        ("status", "both", 0, "", ""),
        ("alerts", "out", 0, "", ""),
    ]
    assert bridge.protocol_version == 5
    assert (bridge.username, bridge.password) == ("gw", "secret")
    assert (bridge.local_username, bridge.local_password) == ("bridge", "local")
    assert bridge.tls is not None and bridge.tls.cafile == "/etc/ssl/ca.pem"
    assert bridge.tls.certfile == "/etc/ssl/gw.pem" and bridge.tls.keyfile == "/etc/ssl/gw.key"
    assert bridge.clean_start and not bridge.try_private
    assert bridge.keepalive == 30
    assert (bridge.reconnect_delay_min, bridge.reconnect_delay_max) == (2.0, 20.0)
    assert (bridge.start_type, bridge.threshold, bridge.idle_timeout) == ("lazy", 5, 120.0)
    assert bridge.round_robin
    # Mosquitto's names: remote client id "<hostname>.<connection>", state topic by it.
    assert bridge.client_id == f"{HOST}.cloud"
    assert bridge.notification_topic == f"$SYS/broker/connection/{HOST}.cloud/state"
    assert bridge.notifications and not bridge.notifications_local_only


def test_bridge_notification_options(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "connection a\naddress 10.0.0.1\ntopic x\nremote_clientid site-a\n"
        "notifications_local_only true\n"
        "connection b\naddress 10.0.0.2\ntopic y\nnotifications false\n"
        "connection c\naddress 10.0.0.3\ntopic z\nnotification_topic bridges/c\n",
    )
    a, b, c = config.bridge
    assert a.notification_topic == "$SYS/broker/connection/site-a/state"
    assert a.notifications_local_only
    assert not b.notifications
    assert c.notification_topic == "bridges/c"


# -- what cannot be honoured ----------------------------------------------------------------


@pytest.mark.parametrize("option", sorted(UNSUPPORTED))
def test_every_unsupported_option_stops_with_its_name_line_and_reason(
    tmp_path: Path, option: str
) -> None:
    prefix = (
        "connection b\naddress 10.0.0.1\ntopic x\n"
        if option.startswith(("bridge_", "local_clientid"))
        else "listener 1883\n"
    )
    line_number = prefix.count("\n") + 1
    lines = errors_of(tmp_path, f"{prefix}{option} somevalue\n")
    assert lines == [
        f"config error: {tmp_path / 'mosquitto.conf'}:{line_number}: {option} somevalue: "
        f"{UNSUPPORTED[option]}"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "listener 0 /run/mosquitto.sock\n",
            ":1: listener 0 /run/mosquitto.sock: mqttd listens on TCP",
        ),
        ("log_dest topic\n", ":1: log_dest topic: mqttd does not publish its log"),
        ("queue_qos0_messages true\n", ":1: queue_qos0_messages true: mqttd queues QoS 0"),
        ("tls_version tlsv1.1\n", ":1: tls_version tlsv1.1: mqttd accepts tlsv1.2 or tlsv1.3"),
        (
            "auth_opt_db_host localhost\n",
            ":1: auth_opt_db_host localhost: options of Mosquitto plugins",
        ),
        ("address 10.0.0.1\n", ":1: address 10.0.0.1: a bridge option outside a `connection`"),
        ("max_keepalive x\n", ":1: max_keepalive x: expected an integer"),
        ("allow_anonymous yes\n", ':1: allow_anonymous yes: expected "true" or "false"'),
        ("persistent_client_expiration 3x\n", ":1: persistent_client_expiration 3x: expected"),
        ("listener 1883\nprotocol mqtt5\n", ':2: protocol mqtt5: expected "mqtt" or "websockets"'),
        ("listener 9001\nprotocol websockets\nmax_connections 3\n", ":3: max_connections 3:"),
        (
            "listener 8883\ncafile /ca.pem\n",
            ":2: cafile /ca.pem: TLS options on a listener without",
        ),
        ("connection x\naddress h\ntopic t sideways\n", ":3: topic t sideways: direction must be"),
        (
            "connection x\naddress h\ntopic t\nbridge_protocol_version mqttv31\n",
            ":4: bridge_protocol_version mqttv31",
        ),
        (
            "connection x\naddress h\ntopic t\nbridge_insecure true\n",
            ":4: bridge_insecure true: mqttd checks",
        ),
        (
            "connection x\naddress h\ntopic t\nbridge_outgoing_retain false\n",
            ":4: bridge_outgoing_retain false:",
        ),
        (
            "connection x\naddress h\ntopic t\nlocal_cleansession true\n",
            ":4: local_cleansession true:",
        ),
        ("connection x\ntopic t\n", ":1: connection x: a bridge needs an address line"),
        ("no_such_option 1\n", ":1: no_such_option 1: unknown option"),
        # our own validation, reported on the line that set the key:
        ("max_keepalive 0\n", ":1: max_keepalive 0: limits.max_keepalive: 0 is out of range"),
        (
            "listener 1883\nlistener 1883\n",
            ":2: listener 1883: listeners[1].port: 1883 is already used",
        ),
    ],
)
def test_errors_name_the_line_and_the_option(tmp_path: Path, text: str, expected: str) -> None:
    lines = errors_of(tmp_path, text)
    assert any(expected in line for line in lines), lines


@pytest.mark.parametrize("option", sorted(NO_EFFECT))
def test_options_without_effect_are_accepted_with_a_note(tmp_path: Path, option: str) -> None:
    prefix = "connection b\naddress 10.0.0.1\ntopic x\n" if option.startswith("bridge_") else ""
    path = tmp_path / "mosquitto.conf"
    path.write_text(f"{prefix}{option} true\n")
    config, notes = load_mosquitto_config(path, hostname=HOST)
    assert notes == [f"{path}:{prefix.count(chr(10)) + 1}: {option}: {NO_EFFECT[option]}"]
    assert isinstance(config, Config)


def test_convert_comments_what_it_could_not_map(tmp_path: Path) -> None:
    path = tmp_path / "mosquitto.conf"
    path.write_text("listener 1883\nmount_point tenant/\nlog_timestamp false\nmax_keepalive 60\n")
    toml, errors = convert_to_toml(path, hostname=HOST)
    assert errors == [f"{path}:2: mount_point tenant/: {UNSUPPORTED['mount_point']}"]
    assert f"#   {path}:2: mount_point tenant/: " in toml
    assert f"#   {path}:3: log_timestamp: " in toml
    assert f"max_keepalive = 60  # {path}:4: max_keepalive 60" in toml


def test_command_line_overrides_apply_to_a_mosquitto_conf(tmp_path: Path) -> None:
    path = tmp_path / "mosquitto.conf"
    path.write_text("listener 1883\nlistener 1884\n")
    config, _ = load_mosquitto_config(path, Overrides(host="127.0.0.1", port=0))
    assert [(x.host, x.port) for x in config.listeners] == [("127.0.0.1", 0), ("127.0.0.1", 1884)]


def test_the_debian_default_configuration_runs(tmp_path: Path) -> None:
    # /etc/mosquitto/mosquitto.conf as Debian ships it, with an empty conf.d.
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "README").write_text("Any files placed in this directory that have a .conf ending")
    config = load(
        tmp_path,
        "# Place your local configuration in /etc/mosquitto/conf.d/\n"
        "#\n"
        "# A full description of the configuration file is at\n"
        "# /usr/share/doc/mosquitto/examples/mosquitto.conf.example\n"
        "\n"
        "pid_file /run/mosquitto/mosquitto.pid\n"
        "\n"
        "persistence true\n"
        f"persistence_location {tmp_path}/\n"
        "\n"
        "log_dest file /var/log/mosquitto/mosquitto.log\n"
        "\n"
        f"include_dir {conf_d}\n",
    )
    assert [(x.host, x.port) for x in config.listeners] == [("127.0.0.1", 1883)]
    assert config.persistence.enabled


def test_a_conversion_is_reported_not_raised_for_unreadable_files(tmp_path: Path) -> None:
    conversion = convert_file(tmp_path / "missing.conf")
    assert conversion.errors and "cannot read" in conversion.errors[0]
