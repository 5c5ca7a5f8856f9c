"""The core stays free of the cluster's I/O, and a single broker never loads nats-py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
import mqttd.broker.broker, mqttd.broker.backplane, mqttd.cluster.subjects
import mqttd.cluster.envelope
from mqttd.app import App
from mqttd.config import Config
App(Config())
loaded = sorted(m for m in sys.modules if m == 'nats' or m.startswith('nats.')
                or m == 'mqttd.cluster.backplane')
print(loaded)
"""


def test_a_single_broker_loads_neither_nats_nor_the_nats_backplane() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_the_core_never_imports_the_cluster_package() -> None:
    for path in (ROOT / "mqttd" / "broker").glob("*.py"):
        text = path.read_text()
        assert "cluster" not in {
            line.split()[1].lstrip(".").split(".")[0]
            for line in text.splitlines()
            if line.startswith(("from ", "import ")) and len(line.split()) > 1
        }, path
