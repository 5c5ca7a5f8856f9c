"""The benchmark's load generator across two nodes (scripts/bench.py's cluster scenarios):
with -Q its subscribers connect to the second node, and every message crosses once."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import NodeFactory

pytestmark = pytest.mark.timeout(90)

# As in scripts/bench.py: no back-pressure crosses nodes (docs/cluster.md), so the
# subscriber's queue must hold what the publishers' node sends ahead of it.
QUEUE = """
[limits]
max_queued_messages = 1000000
"""


@pytest.mark.parametrize(
    "args",
    [
        ("-s", "fan-in", "-P", "4", "-q", "1", "-m", "20000"),
        ("-s", "pairs", "-N", "20", "-q", "1", "-m", "10000", "-V", "5"),
    ],
    ids=["fan-in-q1", "pairs-q1-v5"],
)
def test_loadgen_subscribers_on_the_other_node_get_every_message_once(
    loadgen: Path, cluster_node: NodeFactory, args: tuple[str, ...]
) -> None:
    a, b = cluster_node("a", QUEUE), cluster_node("b", QUEUE)
    argv = [str(loadgen), "-p", str(a.port), "-Q", str(b.port), "-T", "40", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr
    assert result["delivered"] == result["expected"] > 0, proc.stderr + b.stderr
    assert (result["lost"], result["dup"], result["ooo"], result["bad"]) == (0, 0, 0, 0)
