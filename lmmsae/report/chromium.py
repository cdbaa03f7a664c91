"""Headless Chromium through selenium, for the screenshots script and the browser tests.

Uses the distribution's chromium and chromium-driver (Debian: `apt-get install chromium
chromium-driver`) at fixed paths, so selenium never looks for a driver online; the flags keep a
machine without network from stalling on refused connections."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--allow-file-access-from-files")


def find() -> tuple[str | None, str | None]:
    """(chromium binary, chromedriver) found on PATH or in LMMSAE_CHROMIUM / LMMSAE_CHROMEDRIVER."""
    binary = os.environ.get("LMMSAE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("LMMSAE_CHROMEDRIVER") or shutil.which("chromedriver")
    return binary, driver


@contextmanager
def headless_chromium(width: int = 1280, height: int = 900) -> Iterator:
    """A selenium WebDriver on a fresh profile, closed (and the profile removed) afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from lmmsae.errors import UserError

    binary, driver_path = find()
    if not binary or not driver_path:
        raise UserError("headless Chromium needs the chromium and chromedriver programs: "
                        "`apt-get install chromium chromium-driver` (Debian) or set LMMSAE_CHROMIUM/LMMSAE_CHROMEDRIVER")
    profile = tempfile.mkdtemp(prefix="lmmsae-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
