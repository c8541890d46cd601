"""The playground signs in through the real OpenID provider in a real browser (headless
Chromium): authorization code with PKCE, the provider's own login and consent pages, the token
in the key's place, and the page's API calls made with it (the fake engine: only the sign-in is
under test, so it runs beside the engine tests, not on them)."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import browser  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.beside_engine]


def visible(driver, selector: str):
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0] if found and found[0].is_displayed() else None


def test_sign_in_with_authorization_code_and_pkce(guarded, provider, browser):  # noqa: F811
    page = f"{guarded.base_url}/playground"
    browser.get(page)
    wait = WebDriverWait(browser, 30, poll_frequency=0.1)
    wait.until(lambda d: visible(d, "#sign-in")).click()
    # the provider's login page (any name signs in), then its consent page
    wait.until(lambda d: d.current_url.startswith(provider.issuer))
    wait.until(lambda d: visible(d, "input[name=login]")).send_keys("dr.chen")
    browser.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys("anything")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: d.current_url.startswith(page) or visible(d, "button[type=submit]"))
    if not browser.current_url.startswith(page):
        visible(browser, "button[type=submit]").click()
    # back on the playground: the code exchanged for a token, the models listed with it
    wait.until(lambda d: "lingshu-demo" in d.find_element(By.ID, "model").text)
    assert browser.current_url == page  # the code is gone from the address bar
    token = browser.find_element(By.ID, "api-key").get_attribute("value")
    assert token.startswith("eyJ") and token.count(".") == 2
    assert not browser.find_element(By.ID, "models-error").is_displayed()
    assert f'"identity": "{provider.issuer}#dr.chen"' in guarded.log_text()
