"""The [cluster] section: defaults, validation with messages naming the key, check-config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mqttd.config import ConfigError, config_from_dict

ROOT = Path(__file__).resolve().parents[2]


def errors_of(cluster: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"cluster": cluster})
    return info.value.lines


def test_the_cluster_is_off_by_default() -> None:
    cluster = config_from_dict({}).cluster
    assert not cluster.enabled
    assert cluster.urls == ["nats://127.0.0.1:4222"]
    assert cluster.name == "mqttd" and cluster.node == ""


def test_a_cluster_section_loads() -> None:
    cluster = config_from_dict(
        {
            "cluster": {
                "enabled": True,
                "name": "plant-7",
                "node": "edge_1",
                "urls": ["nats://10.0.0.1:4222", "tls://nats.example:4222"],
                "user": "mqttd",
                "password": "secret",
                "replicas": 3,
            }
        }
    ).cluster
    assert cluster.enabled and cluster.replicas == 3 and cluster.node == "edge_1"


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        ({"name": "a.b"}, 'config error: cluster.name: "a.b" is not allowed'),
        ({"node": "x y"}, 'config error: cluster.node: "x y" is not allowed'),
        ({"urls": ["127.0.0.1:4222"]}, 'config error: cluster.urls[0]: "127.0.0.1:4222"'),
        ({"enabled": True, "urls": []}, "config error: cluster.urls: empty"),
        ({"password": "p"}, "config error: cluster.password: set without cluster.user"),
        ({"token": "t", "user": "u"}, "config error: cluster.token: give a token"),
        ({"tls_key_file": "k.pem"}, "config error: cluster.tls_key_file: set without"),
        ({"replicas": 0}, "config error: cluster.replicas: 0 is out of range"),
        (
            {"heartbeat_interval": 2.0, "node_timeout": 3.0},
            "config error: cluster.node_timeout: 3 is not allowed",
        ),
        ({"nodes": "a"}, "config error: cluster.nodes: unknown key (did you mean cluster.node"),
    ],
)
def test_a_wrong_cluster_setting_is_named(cluster: dict[str, Any], expected: str) -> None:
    lines = errors_of(cluster)
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_check_config_reads_the_cluster_tls_files(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text('[cluster]\nenabled = true\ntls_ca_file = "missing-ca.pem"\n')
    result = subprocess.run(
        [sys.executable, "-m", "mqttd", "check-config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert result.stderr.startswith("config error: cluster.tls_ca_file: cannot use it"), result
