"""The network layer's tests run every socket scenario on asyncio's loop and on uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
import uvloop
from support.fake_net import Run


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    """Run a scenario to completion on the loop named by the parameter."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:

        def go(scenario: Coroutine[Any, Any, None]) -> None:
            runner.run(asyncio.wait_for(scenario, 20))

        yield go
