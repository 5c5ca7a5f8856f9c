"""Fixtures of the tests that drive headless Chromium: one browser per module, a tab per test.

A test module imports them by name (`from .browser.fixtures import browser as browser`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .chromium import Chromium, Page, chromium_path


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    """One headless Chromium for the module; each test opens its own tab."""
    path = chromium_path()
    assert path is not None
    with Chromium(path) as chromium:
        yield chromium


@pytest.fixture
def page(browser: Chromium) -> Iterator[Page]:
    """A fresh 1280 x 900 tab, closed after the test."""
    tab = browser.new_page(width=1280, height=900)
    yield tab
    target = tab.send("Target.getTargetInfo")["targetInfo"]["targetId"]
    browser.send("Target.closeTarget", {"targetId": target})
