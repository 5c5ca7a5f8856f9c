"""Checks across the keys of `[[bridge]]` tables: they live in config.py now.

Loading a configuration must not import bridge/ (config.py is data, below the bridges),
so `bridge_config_errors` and `parse_address` moved there; this module keeps the names
the bridge code and older imports use.
"""

from __future__ import annotations

from ..config import DEFAULT_BRIDGE_PORT as DEFAULT_PORT
from ..config import bridge_config_errors, parse_address

__all__ = ["DEFAULT_PORT", "bridge_config_errors", "parse_address"]
