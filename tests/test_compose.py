"""docker/cluster-compose.yml, checked without a Docker engine: a valid Compose file whose
three mqttd nodes run a command the CLI accepts, with a config that passes
`mqttd check-config`, reach the NATS service of the same file, and publish distinct
ports. With `docker compose` installed, Compose itself validates the file too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from mqttd.cli import build_parser
from mqttd.config import load_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker" / "cluster-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) resolved
    assert isinstance(data, dict)
    return data


def nodes(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("image", "") != "nats:2.10"
    }


def mounted_config(service: dict[str, Any]) -> Path:
    command = service["command"]
    args = build_parser().parse_args(command)  # the CLI accepts it (exits 2 otherwise)
    for volume in service["volumes"]:
        source, target, *_ = volume.split(":")
        if target == args.config:
            return (COMPOSE.parent / str(source)).resolve()
    raise AssertionError(f"{args.config} is not mounted")


def test_one_nats_server_with_jetstream_and_three_nodes(compose: dict[str, Any]) -> None:
    nats = compose["services"]["nats"]
    assert nats["image"].startswith("nats:")
    assert "-js" in nats["command"]
    assert "-sd" in nats["command"]
    assert len(nodes(compose)) == 3
    for service in nodes(compose).values():
        assert service["build"]["context"] == ".."
        assert (
            COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]
        ).is_file()
        assert service["depends_on"] == ["nats"]


def test_node_names_and_published_ports_are_distinct(compose: dict[str, Any]) -> None:
    services = nodes(compose).values()
    hostnames = [s["hostname"] for s in services]
    assert len(set(hostnames)) == 3
    published = [p.split(":")[0] for s in services for p in s["ports"]]
    assert len(published) == len(set(published)) == 9
    data = [v.split(":")[0] for s in services for v in s["volumes"] if v.endswith(":/data")]
    assert len(set(data)) == 3 and set(data) <= set(compose["volumes"])


def test_the_node_config_passes_check_config_and_reaches_the_nats_service(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    for service in nodes(compose).values():
        path = mounted_config(service)
        result = subprocess.run(
            [sys.executable, "-m", "mqttd", "check-config", str(path)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (result.returncode, result.stderr) == (0, "")
        config = load_config(path)
        assert config.cluster.enabled
        assert config.cluster.node == ""  # each node's name is its hostname
        for url in config.cluster.urls:
            parts = urlsplit(url)
            assert parts.hostname in compose["services"] and parts.port == 4222
        inside = {int(p.split(":")[1]) for p in service["ports"]}
        assert {lst.port for lst in config.listeners} | {config.metrics.port} == inside


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker command")
def test_docker_compose_accepts_the_file() -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("docker has no compose plugin here")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
