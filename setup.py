"""Build mqttd; the codec (mqttd/protocol) is compiled to C with mypyc where it can be.

The codec is typed (mypy --strict), so mypyc turns it into a C extension as it stands:
over TCP the broker then carries 23-27 % more fan-in messages per second
(docs/benchmarks.md, tenth round). Every module also ships as plain Python, and mqttd runs
the same code interpreted where the compile is not wanted (MQTTD_PURE=1) or fails: no C
compiler or Python headers, or a codec that does not type-check. The build says which.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup

#: Interpreted on purpose: mypyc's native classes drop a subclass's class-level
#: `reason_code` default, which every error of errors.py relies on.
PURE = {"errors.py"}


def compiled_codec() -> list[Extension]:
    """The codec's extension modules, or none (then the wheel is pure Python)."""
    if os.environ.get("MQTTD_PURE") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as error:
        print(f"mqttd: codec not compiled (mypyc: {error})", file=sys.stderr)
        return []
    here = Path(__file__).parent
    paths = sorted(
        p.relative_to(here).as_posix()
        for p in (here / "mqttd" / "protocol").glob("*.py")
        if p.name not in PURE
    )
    try:
        # The ack decoders build instances through a constrained TypeVar, which mypyc's
        # checker reads as Any; plain mypy --strict accepts them.
        extensions = mypycify(["--no-warn-return-any", *paths], group_name="mqttd_codec")
    except SystemExit:  # mypy found an error: it has printed it
        print("mqttd: codec not compiled (it does not type-check)", file=sys.stderr)
        return []
    for extension in extensions:
        extension.optional = True  # a failed C compile leaves the pure-Python module
    return extensions


setup(ext_modules=compiled_codec())
