"""The `mqttd` command (placeholder until the broker lands)."""

from __future__ import annotations

import sys

from . import __version__


def main(argv: list[str] | None = None) -> int:
    print(f"mqttd {__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
