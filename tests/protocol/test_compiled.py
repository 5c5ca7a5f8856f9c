"""The compiled codec against the same source interpreted: same packets, same errors.

setup.py compiles mqttd/protocol to C with mypyc where it can. A compiled module checks
the types of its arguments and its fields, which the interpreter does not, so every
difference would show here first: these tests load a copy of the package's Python
source under another name and feed both the same bytes and the same packets. They are
skipped where the codec runs interpreted (nothing to compare with).
"""

from __future__ import annotations

import importlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mqttd.protocol
from mqttd.protocol import Packet, encode
from mqttd.protocol import reader as compiled_reader

from .strategies import packets
from .test_fuzz import mutated_packets

pytestmark = pytest.mark.skipif(
    compiled_reader.__file__ is None or compiled_reader.__file__.endswith(".py"),
    reason="the codec runs interpreted here (setup.py did not compile it)",
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Outcome = tuple[object, ...]
NAME = "mqttd_protocol_source"


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """mqttd/protocol's .py files as the package `mqttd_protocol_source`, interpreted."""
    root = tmp_path_factory.mktemp("codec")
    source = Path(mqttd.protocol.__path__[0])
    shutil.copytree(source, root / NAME, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(NAME)
    finally:
        sys.path.remove(str(root))
        for module in [m for m in sys.modules if m == NAME or m.startswith(NAME + ".")]:
            del sys.modules[module]


def outcome(codec: ModuleType, data: bytes, level: int | None) -> Outcome:
    """What a reader of `codec` makes of `data`: its packets, or its error."""
    reader = codec.PacketReader(protocol_level=level, max_packet_size=4096)
    try:
        decoded = reader.feed(data)
    except codec.MQTTError as exc:
        return ("error", type(exc).__name__, int(exc.reason_code), str(exc))
    return ("packets", [repr(p) for p in decoded], reader.protocol_level)


def test_the_comparison_is_with_interpreted_code(interpreted: ModuleType) -> None:
    assert interpreted.reader.__file__.endswith(".py")
    assert not compiled_reader.__file__.endswith(".py")


@SETTINGS
@given(data=st.binary(max_size=200), level=st.sampled_from([None, 3, 4, 5]))
def test_random_bytes_decode_alike(interpreted: ModuleType, data: bytes, level: int | None) -> None:
    assert outcome(mqttd.protocol, data, level) == outcome(interpreted, data, level)


@SETTINGS
@given(case=mutated_packets())
def test_mutated_packets_decode_alike(interpreted: ModuleType, case: tuple[bytes, int]) -> None:
    data, level = case
    assert outcome(mqttd.protocol, data, level) == outcome(interpreted, data, level)


@SETTINGS
@given(data=st.data(), level=st.sampled_from([3, 4, 5]))
def test_packets_encode_alike(interpreted: ModuleType, data: st.DataObject, level: int) -> None:
    """A packet encodes to the same bytes, and those decode to the same packet."""
    packet: Packet = data.draw(packets(level))
    wire = encode(packet, level)
    decoded = interpreted.decode_packet(wire, level)
    assert repr(decoded) == repr(packet)
    assert interpreted.encode(decoded, level) == wire
