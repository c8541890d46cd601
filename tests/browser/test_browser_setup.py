"""Without Debian's browser or driver the browser tests fail, saying what to install."""

from __future__ import annotations

import pytest

from tests.browser.conftest import INSTALL_HINT, find_executable


def test_a_missing_browser_fails_with_the_install_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("LINGSHU_CHROMIUM", raising=False)
    with pytest.raises(pytest.fail.Exception) as failed:
        find_executable(("chromium", "chromium-browser"), "LINGSHU_CHROMIUM")
    assert "apt-get install -y chromium chromium-driver" in str(failed.value)
    assert INSTALL_HINT in str(failed.value)


def test_an_explicit_path_wins(monkeypatch, tmp_path):
    driver = tmp_path / "chromedriver-custom"
    driver.write_text("#!/bin/sh\n")
    driver.chmod(0o755)
    monkeypatch.setenv("LINGSHU_CHROMEDRIVER", str(driver))
    assert find_executable(("chromedriver",), "LINGSHU_CHROMEDRIVER") == str(driver)
