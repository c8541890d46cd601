"""A real browser for the playground: Debian's headless Chromium driven by Selenium through
Debian's chromium-driver. Nothing is downloaded: both paths are given, so Selenium Manager has
nothing to look for. A missing browser or driver fails the tests with the install line."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

INSTALL_HINT = "install Debian's browser and driver: apt-get install -y chromium chromium-driver"
WINDOW = (1440, 1000)  # a laptop screen


def find_executable(names: tuple[str, ...], env: str) -> str:
    """The first of `env`'s value and `names` found on PATH; else the test fails (not skips):
    a CI machine without the browser must not pass the browser tests by leaving them out."""
    for name in (os.environ.get(env), *names):
        if name and (found := shutil.which(name)):
            return found
    pytest.fail(f"{' or '.join(names)} not found (or set {env}); {INSTALL_HINT}", pytrace=False)


@pytest.fixture(scope="session")
def chromium_paths() -> tuple[str, str]:
    browser = find_executable(("chromium", "chromium-browser"), "LINGSHU_CHROMIUM")
    driver = find_executable(("chromedriver",), "LINGSHU_CHROMEDRIVER")
    return browser, driver


@pytest.fixture
def browser(chromium_paths: tuple[str, str], tmp_path: Path) -> Iterator[webdriver.Chrome]:
    binary, driver_path = chromium_paths
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root in containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A driver path in the Service makes Selenium skip Selenium Manager (no lookups, no downloads).
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
