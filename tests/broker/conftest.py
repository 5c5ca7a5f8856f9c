"""Fixtures for the broker core tests (see tests/support/core.py)."""

from __future__ import annotations

from typing import Any

import pytest
from support.core import Harness, settings


@pytest.fixture
def harness() -> Harness:
    """A broker with default settings on a fake clock and a memory store."""
    return Harness()


@pytest.fixture
def make_harness() -> Any:
    """Build a harness with settings overrides: make_harness(max_inflight_messages=2)."""

    def make(store: Any = None, authenticate: Any = None, **overrides: Any) -> Harness:
        return Harness(settings(**overrides), store=store, authenticate=authenticate)

    return make
