"""The typed configuration: defaults, one-line errors naming the key, overrides, the example."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from mqttd.broker.settings import BrokerSettings
from mqttd.config import (
    Config,
    ConfigError,
    LimitsConfig,
    MqttConfig,
    Overrides,
    config_from_dict,
    load_config,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "mqttd.toml"


def errors_of(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    return info.value.lines


def error_of(raw: dict[str, Any]) -> str:
    lines = errors_of(raw)
    assert len(lines) == 1, lines
    return lines[0]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mqttd.toml"
    path.write_text(text)
    return path


# -- defaults --------------------------------------------------------------------------------


def test_without_a_file_one_mqtt_listener_on_loopback_1883() -> None:
    config = load_config()
    assert config == Config()
    [listener] = config.listeners
    assert (listener.name, listener.type, listener.host, listener.port) == (
        "mqtt",
        "mqtt",
        "127.0.0.1",
        1883,
    )
    assert listener.tls is None
    assert config.persistence.enabled is True
    assert config.persistence.path == "./data/mqttd.db"
    assert (config.log.level, config.log.format) == ("info", "text")


def test_default_broker_settings_are_the_cores_defaults() -> None:
    assert Config().broker_settings() == BrokerSettings()


def test_limits_and_mqtt_sections_cover_every_broker_setting_once() -> None:
    limits = {f.name for f in dataclasses.fields(LimitsConfig)}
    mqtt = {f.name for f in dataclasses.fields(MqttConfig)}
    assert not limits & mqtt
    assert limits | mqtt == {f.name for f in dataclasses.fields(BrokerSettings)}


def test_section_values_reach_broker_settings() -> None:
    config = config_from_dict({"limits": {"max_inflight_messages": 7}, "mqtt": {"maximum_qos": 1}})
    settings = config.broker_settings()
    assert settings.max_inflight_messages == 7
    assert settings.maximum_qos == 1


def test_an_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


# -- one line per error, naming the key --------------------------------------------------------


def test_unknown_key_suggests_the_closest_key() -> None:
    assert error_of({"limits": {"max_inflight_mesages": 5}}) == (
        "config error: limits.max_inflight_mesages: unknown key "
        "(did you mean limits.max_inflight_messages?)"
    )


def test_unknown_section_suggests_the_closest_section() -> None:
    assert error_of({"limit": {}}) == "config error: limit: unknown key (did you mean limits?)"


def test_key_in_the_wrong_section_points_to_the_right_one() -> None:
    assert error_of({"limits": {"retain_available": False}}) == (
        "config error: limits.retain_available: unknown key (did you mean mqtt.retain_available?)"
    )


def test_unknown_key_without_a_close_match_has_no_suggestion() -> None:
    assert error_of({"log": {"zzz": 1}}) == "config error: log.zzz: unknown key"


def test_unknown_key_inside_a_listener_names_its_index() -> None:
    assert error_of({"listeners": [{"port": 0}, {"prot": 1884}]}) == (
        "config error: listeners[1].prot: unknown key (did you mean listeners[1].port?)"
    )


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        (
            {"limits": {"max_packet_size": "big"}},
            'limits.max_packet_size: "big" is a string, expected an integer',
        ),
        (
            {"limits": {"max_inflight_messages": True}},
            "limits.max_inflight_messages: true is a boolean, expected an integer",
        ),
        (
            {"limits": {"max_inflight_messages": 2.5}},
            "limits.max_inflight_messages: 2.5 is a float, expected an integer",
        ),
        (
            {"persistence": {"enabled": "yes"}},
            'persistence.enabled: "yes" is a string, expected true or false',
        ),
        ({"log": {"level": 3}}, "log.level: 3 is an integer, expected a string"),
        ({"limits": 3}, "limits: 3 is an integer, expected a table"),
        (
            {"listeners": {"port": 1}},
            "listeners: {...} is a table, expected an array of tables (written [[listeners]])",
        ),
        (
            {"listeners": [{"allowed_origins": "https://a"}]},
            'listeners[0].allowed_origins: "https://a" is a string, expected an array',
        ),
        (
            {"listeners": [{"allowed_origins": ["https://a", 3]}]},
            "listeners[0].allowed_origins[1]: 3 is an integer, expected a string",
        ),
        (
            {"listeners": [{"tls": "on"}]},
            'listeners[0].tls: "on" is a string, expected a table',
        ),
    ],
)
def test_wrong_type_names_the_key_the_value_and_the_type(raw: dict[str, Any], line: str) -> None:
    assert error_of(raw) == "config error: " + line


def test_an_integer_is_accepted_for_a_float_setting() -> None:
    config = config_from_dict({"limits": {"connect_timeout": 5}})
    assert config.limits.connect_timeout == 5.0
    assert isinstance(config.limits.connect_timeout, float)


def test_a_non_finite_float_is_refused() -> None:
    assert error_of({"limits": {"connect_timeout": float("inf")}}) == (
        "config error: limits.connect_timeout: inf is not a finite number"
    )


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        (
            {"limits": {"receive_maximum": 0}},
            "limits.receive_maximum: 0 is out of range (allowed: 1 to 65535)",
        ),
        (
            {"listeners": [{"port": 70000}]},
            "listeners[0].port: 70000 is out of range (allowed: 0 to 65535)",
        ),
        (
            {"limits": {"max_client_id_length": 22}},
            "limits.max_client_id_length: 22 is out of range (allowed: 23 to 65535)",
        ),
        (
            {"limits": {"max_queued_messages": -1}},
            "limits.max_queued_messages: -1 is out of range (allowed: >= 0)",
        ),
        (
            {"limits": {"connect_timeout": 0.01}},
            "limits.connect_timeout: 0.01 is out of range (allowed: 0.1 to 3600)",
        ),
    ],
)
def test_out_of_range_names_the_allowed_range(raw: dict[str, Any], line: str) -> None:
    assert error_of(raw) == "config error: " + line


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        ({"log": {"format": "xml"}}, 'log.format: "xml" is not allowed (allowed: "text", "json")'),
        ({"mqtt": {"maximum_qos": 3}}, "mqtt.maximum_qos: 3 is not allowed (allowed: 0, 1, 2)"),
        (
            {"limits": {"queue_overflow": "drop"}},
            'limits.queue_overflow: "drop" is not allowed (allowed: "drop_new", "drop_oldest")',
        ),
        (
            {"listeners": [{"type": "http"}]},
            'listeners[0].type: "http" is not allowed (allowed: "mqtt", "ws")',
        ),
        (
            {"persistence": {"durability": "maybe"}},
            'persistence.durability: "maybe" is not allowed (allowed: "safe", "fast")',
        ),
    ],
)
def test_bad_choice_lists_the_allowed_values(raw: dict[str, Any], line: str) -> None:
    assert error_of(raw) == "config error: " + line


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    lines = errors_of(
        {
            "limits": {"max_inflight_mesages": 3, "receive_maximum": 0},
            "log": {"format": "xml"},
            "listeners": [{"port": "x"}],
        }
    )
    assert len(lines) == 4
    assert all(line.startswith("config error: ") and "\n" not in line for line in lines)
    # In the order of the file.
    assert [line.split(":")[1].strip() for line in lines] == [
        "limits.max_inflight_mesages",
        "limits.receive_maximum",
        "log.format",
        "listeners[0].port",
    ]


def test_config_error_message_is_its_lines() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"log": {"level": "loud", "format": "xml"}})
    assert str(info.value) == "\n".join(info.value.lines)


# -- checks across keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listeners", "line"),
    [
        ([], "listeners: empty (at least one listener is required)"),
        (
            [{"name": "a"}, {"name": "a", "port": 1884}],
            'listeners[1].name: "a" is already the name of listeners[0] (names must be unique)',
        ),
        (
            [{}, {"type": "ws"}],
            "listeners[1].port: 1883 is already used by listeners[0] on 127.0.0.1",
        ),
        (
            [{"tls": {}}],
            "listeners[0].tls.certfile: missing (required when tls is set)",
        ),
        (
            [{"tls": {"certfile": "c.pem", "require_certificate": True}}],
            "listeners[0].tls.require_certificate: true needs listeners[0].tls.cafile "
            "(the CA that signs client certificates)",
        ),
        (
            [{"type": "ws", "path": "mqtt"}],
            'listeners[0].path: "mqtt" must start with "/"',
        ),
        (
            [{"type": "ws", "max_connections": 5}],
            'listeners[0].max_connections: 5 is not allowed (allowed: 0; only type = "mqtt" '
            "listeners enforce it)",
        ),
    ],
)
def test_listener_conflicts_are_refused(listeners: list[dict[str, Any]], line: str) -> None:
    assert error_of({"listeners": listeners}) == "config error: " + line


def test_several_listeners_on_port_zero_do_not_conflict() -> None:
    config = config_from_dict({"listeners": [{"port": 0}, {"port": 0, "type": "ws"}]})
    assert [listener.port for listener in config.listeners] == [0, 0]


def test_unnamed_listeners_are_named_by_scheme() -> None:
    config = config_from_dict(
        {
            "listeners": [
                {"port": 1883},
                {"port": 8883, "tls": {"certfile": "c.pem"}},
                {"port": 8080, "type": "ws"},
                {"port": 8443, "type": "ws", "tls": {"certfile": "c.pem"}},
                {"port": 1884},
                {"port": 1885, "name": "internal"},
            ]
        }
    )
    assert [listener.name for listener in config.listeners] == [
        "mqtt",
        "mqtts",
        "ws",
        "wss",
        "mqtt-4",
        "internal",
    ]


# -- files and overrides -----------------------------------------------------------------------


def test_a_file_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[listeners]]\nhost = "0.0.0.0"\nport = 1999\n[limits]\nmax_inflight_messages = 5\n',
    )
    config = load_config(path)
    assert (config.listeners[0].host, config.listeners[0].port) == ("0.0.0.0", 1999)
    assert config.limits.max_inflight_messages == 5


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    [line] = info.value.lines
    assert re.fullmatch(r"config error: .*nope\.toml: cannot read: No such file or directory", line)


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[limits\n"))
    [line] = info.value.lines
    assert line.startswith("config error: ") and "invalid TOML" in line and "\n" not in line


def test_overrides_host_every_listener_port_the_first(tmp_path: Path) -> None:
    config = load_config(None, Overrides(host="0.0.0.0", port=0))
    assert (config.listeners[0].host, config.listeners[0].port) == ("0.0.0.0", 0)
    path = write(tmp_path, '[[listeners]]\nport = 1883\n[[listeners]]\ntype = "ws"\nport = 8080\n')
    config = load_config(path, Overrides(host="::", port=1999))
    assert [(ls.host, ls.port) for ls in config.listeners] == [("::", 1999), ("::", 8080)]


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[listeners]]\nport = 1999\n[persistence]\nenabled = false\n[log]\nlevel = "error"\n',
    )
    config = load_config(
        path, Overrides(port=2000, db="/tmp/x.db", log_level="debug", log_format="json")
    )
    assert config.listeners[0].port == 2000
    assert (config.persistence.enabled, config.persistence.path) == (True, "/tmp/x.db")
    assert (config.log.level, config.log.format) == ("debug", "json")


def test_overrides_are_validated_like_the_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, Overrides(port=70000))
    assert info.value.lines == [
        "config error: listeners[0].port: 70000 is out of range (allowed: 0 to 65535)"
    ]


# -- the documented example ----------------------------------------------------------------


def test_example_file_is_exactly_the_defaults() -> None:
    assert load_config(EXAMPLE) == Config()


def test_example_file_documents_every_key() -> None:
    from mqttd.config import _all_paths

    text = EXAMPLE.read_text()
    paths = _all_paths()
    for path in paths:
        leaf = path.rpartition(".")[2]
        if any(p.startswith(path + ".") for p in paths):
            continue  # a table, shown as a header
        assert re.search(rf"^(# )?{leaf} = ", text, re.MULTILINE), f"{path} is not in the example"


def test_example_files_commented_listeners_are_valid() -> None:
    # Uncomment the "# [[listeners]]" blocks: what the example shows must load as shown.
    lines = EXAMPLE.read_text().splitlines()
    blocks = []
    for start in [i for i, line in enumerate(lines) if line == "# [[listeners]]"]:
        block: list[str] = []
        for line in lines[start:]:
            if not line.startswith("# "):
                break
            if not line.startswith("# #"):  # a comment inside the commented-out block
                block.append(line[2:])
        blocks.append("\n".join(block))
    assert len(blocks) == 2
    config = load_config(None)
    for text in blocks:
        extra = config_from_dict(tomllib.loads(text))
        config.listeners.extend(extra.listeners)
    assert [listener.scheme for listener in config.listeners] == ["mqtt", "mqtts", "ws"]
    assert config.listeners[1].tls is not None
    assert config.listeners[1].tls.min_version == "1.2"


def test_pubrec_first_needs_persistence_off() -> None:
    from mqttd.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError) as info:
        config_from_dict({"mqtt": {"pubrec_first": True}})
    assert info.value.lines == [
        "config error: mqtt.pubrec_first: true needs persistence.enabled = false (with SQLite "
        "a PUBREC waits for the commit of the message it acknowledges)"
    ]
    assert (
        config_from_dict({"mqtt": {"pubrec_first": True}, "persistence": {"enabled": False}})
        .broker_settings()
        .pubrec_first
    )
