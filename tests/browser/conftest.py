"""A real browser for the playground: Debian's headless Chromium driven by Selenium through
Debian's chromium-driver. Nothing is downloaded: the driver's path is given, so Selenium skips
Selenium Manager. A missing browser or driver fails the tests naming its Debian package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.utils.tools import require_tool

WINDOW = (1440, 1000)  # a laptop screen


def chromium_and_driver() -> tuple[str, str]:
    return require_tool("chromium", "chromium"), require_tool("chromedriver", "chromium-driver")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    binary, driver_path = chromium_and_driver()
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
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
