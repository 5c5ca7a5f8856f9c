"""A node that cannot reach NATS, or finds no JetStream there, does not start, and says why."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .conftest import NatsServer, free_port

ROOT = Path(__file__).resolve().parents[2]


def run_node(tmp_path: Path, url: str, timeout_key: str) -> subprocess.CompletedProcess[str]:
    """`mqttd` as a cluster node on `url`, with `timeout_key` at 0.5 s: it must exit 1."""
    config = tmp_path / "node.toml"
    config.write_text(
        "[persistence]\nenabled = false\n[cluster]\nenabled = true\n"
        f'urls = ["{url}"]\n{timeout_key} = 0.5\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "mqttd", "-p", "0", "-c", str(config)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result
    return result


def test_a_node_without_nats_exits_with_the_reason(tmp_path: Path) -> None:
    result = run_node(tmp_path, f"nats://127.0.0.1:{free_port()}", "connect_timeout")
    assert "cannot reach NATS at nats://127.0.0.1:" in result.stderr, result.stderr
    assert "mqttd ready" not in result.stderr


def test_a_node_on_nats_without_jetstream_exits_with_the_reason(
    tmp_path: Path, nats_factory: Callable[..., NatsServer]
) -> None:
    result = run_node(tmp_path, nats_factory(jetstream=False).url, "request_timeout")
    assert "NATS JetStream refused the cluster's buckets" in result.stderr, result.stderr
