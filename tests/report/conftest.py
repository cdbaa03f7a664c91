"""One small real run per test session (the real stages on the toy world, see small_run.py) and
headless Chromium.

The browser tests need chromium and chromedriver (`apt-get install chromium chromium-driver`;
.ci/run installs them). Without them they fail under CI=true and skip elsewhere, so that a
laptop without Chromium can still run the rest of the suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from small_run import make_small_run

from lmmsae import toyworld


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    if not toyworld.weights_available():
        pytest.fail("the toy world's weights are missing from lmmsae/toyworld/weights")
    return make_small_run(tmp_path_factory.mktemp("runs"))


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
