"""Headless Chromium for the report's browser tests (the small real run they look at, `small_run`,
is in tests/conftest.py).

The browser tests need chromium and chromedriver (`apt-get install chromium chromium-driver`;
.ci/run installs them). Without them they fail under CI=true and skip elsewhere, so that a
laptop without Chromium can still run the rest of the suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def browser():
    from lmmsae.report import chromium

    binary, driver = chromium.find()
    if not binary or not driver:
        message = "chromium and chromedriver are needed: apt-get install chromium chromium-driver"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    with chromium.headless_chromium(1280, 900) as driver:
        yield driver


@pytest.fixture
def page(browser):
    """Open a file in the browser; after the test, no console error may have been logged."""
    opened = []

    def open_(path: Path):
        browser.get_log("browser")  # drop what earlier pages logged
        browser.get(Path(path).resolve().as_uri())
        opened.append(path)
        return browser

    yield open_
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"console errors on {opened}: {errors}"
