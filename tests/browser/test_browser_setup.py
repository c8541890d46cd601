"""Without Debian's browser or driver the browser tests fail (never skip), naming the package."""

from __future__ import annotations

import pytest

from tests.browser.conftest import chromium_and_driver


def test_a_missing_browser_fails_naming_its_debian_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception) as failed:
        chromium_and_driver()
    assert "Debian package chromium" in str(failed.value)
    assert "scripts/install-test.sh" in str(failed.value)
