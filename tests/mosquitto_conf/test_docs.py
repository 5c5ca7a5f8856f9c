"""docs/migrating-from-mosquitto.md stays true: every option is there, and its worked
example converts to exactly the TOML the page shows."""

from __future__ import annotations

import re
from pathlib import Path

from mqttd.config import config_from_dict
from mqttd.mosquitto_conf import convert_file, convert_to_toml
from mqttd.mosquitto_conf.options import KNOWN

DOC = Path(__file__).resolve().parents[2] / "docs" / "migrating-from-mosquitto.md"


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.DOTALL)


def test_every_option_of_mosquitto_conf_5_is_on_the_page() -> None:
    text = DOC.read_text()
    missing = sorted(option for option in KNOWN if f"`{option}" not in text)
    assert missing == []


def test_the_worked_example_converts_to_the_toml_shown(tmp_path: Path) -> None:
    text = DOC.read_text()
    example = text.split("## A worked example", 1)[1]
    conf = _blocks(example, "conf")[0]
    (shown,) = _blocks(example, "toml")
    etc = tmp_path / "etc" / "mosquitto"
    etc.mkdir(parents=True)
    path = etc / "mosquitto.conf"
    path.write_text(conf)
    toml, errors = convert_to_toml(path, hostname="gateway")
    assert errors == []
    assert toml.replace(str(tmp_path), "") == shown
    config = config_from_dict(convert_file(path, hostname="gateway").raw)
    assert [(x.port, x.scheme) for x in config.listeners] == [
        (1883, "mqtt"),
        (8883, "mqtts"),
        (9001, "ws"),
    ]
    assert [b.name for b in config.bridge] == ["cloud"]
