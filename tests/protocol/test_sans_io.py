"""The protocol package stays sans-IO: no asyncio, no socket, nothing else of mqttd."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
baseline = set(sys.modules)
import mqttd.protocol
import mqttd.protocol.datatypes, mqttd.protocol.property_codec  # the private modules too
loaded = set(sys.modules) - baseline
io = sorted(m for m in loaded if m.split('.')[0] in {'asyncio', 'socket', 'selectors', 'ssl'})
ours = sorted(m for m in loaded if m.startswith('mqttd.') and not m.startswith('mqttd.protocol'))
print(io, ours)
"""


def test_importing_mqttd_protocol_loads_no_io_module_and_nothing_else_of_mqttd() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[] []", result.stdout + result.stderr
