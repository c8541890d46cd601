"""The playground's "Draft report" in a real browser (headless Chromium) against the real
engine and the real PACS: a study from the PACS is drafted (sections, the FHIR JSON and the SR's
content tree shown, as the API answers them), stored only when "Store to PACS" is clicked, and
read back from the PACS; an uploaded DICOM is drafted but cannot be stored."""

from __future__ import annotations

import json

import httpx
import pytest
from pydicom.data import get_testdata_file
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser.conftest import browser  # noqa: F401 - the real browser, as a fixture
from tests.browser.test_playground import by_id, no_console_errors, save, wait_until
from tests.pacs.conftest import API_KEYS
from tests.utils.pacs_chat import image, read_back

pytestmark = pytest.mark.e2e  # the drafted text is the engine's

KEY = API_KEYS[1]


def report_state(page) -> str:
    return by_id(page, "report-status").get_attribute("data-state")


def draft(page) -> None:
    by_id(page, "draft-report").click()
    wait_until(page, lambda: report_state(page) in ("done", "error"))
    assert report_state(page) == "done", by_id(page, "report-error").text


def test_draft_then_store_a_pacs_study(pacs_server, pacs, browser, tmp_path):  # noqa: F811
    page = browser
    page.get(f"{pacs_server.base_url}/playground")
    by_id(page, "api-key").send_keys(KEY, Keys.TAB)
    wait_until(page, lambda: by_id(page, "model").get_attribute("value") == pacs_server.model)
    for field, value in (("temperature", "0"), ("max-tokens", "12")):
        by_id(page, field).clear()
        by_id(page, field).send_keys(value)
    ct = pacs.files["CT_small.dcm"]
    url = pacs.basic_url + pacs.instance_path(ct)
    by_id(page, "pacs-url").send_keys(url, Keys.TAB)
    wait_until(page, lambda: by_id(page, "preview-status").get_attribute("data-state") == "done")

    draft(page)
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=pacs_server.base_url, headers=headers, timeout=120) as http:
        same = http.post(
            "/v1/reports",
            json={
                "content": [image(url)],
                "outputs": ["fhir", "dicom_sr"],
                "temperature": 0,
                "max_tokens": 12,
            },
        ).json()
    assert by_id(page, "report-text").get_attribute("textContent") == same["text"]
    shown = json.loads(by_id(page, "report-fhir").get_attribute("textContent"))
    assert (
        shown["entry"][0]["resource"]["presentedForm"][0]["data"]
        == (same["fhir"]["entry"][0]["resource"]["presentedForm"][0]["data"])
    )
    sections = by_id(page, "report-sections").text
    if same["sections"]["found"]:
        assert same["sections"]["impression"] in sections
    else:
        assert "not found" in sections
    tree = by_id(page, "report-sr").text
    assert (
        "Device Observer Name: lingshu-demo" in tree
        and "CONTAINER Diagnostic imaging study" in tree
    )
    assert "Drafted (not stored)." in by_id(page, "report-status").text
    store = by_id(page, "store-report")
    assert store.is_enabled()
    shown_sr = len(page.find_elements(By.CSS_SELECTOR, "#report-sr li"))
    assert shown_sr == 1 + 5 + (2 * 2 if same["sections"]["found"] else 1)
    save(page, tmp_path / "draft.png")

    store.click()  # the explicit second step
    wait_until(page, lambda: report_state(page) in ("stored", "error"))
    assert report_state(page) == "stored", by_id(page, "report-error").text
    stored_url = by_id(page, "report-status").text.removeprefix("Stored: ")
    sr = read_back(pacs, stored_url)
    assert sr.StudyInstanceUID == ct.study and sr.VerificationFlag == "UNVERIFIED"
    assert not store.is_enabled()
    save(page, tmp_path / "stored.png")

    # an uploaded DICOM: drafted with its SR, but there is no PACS to store it into
    by_id(page, "file").send_keys(get_testdata_file("CT_small.dcm"))
    wait_until(page, lambda: by_id(page, "pacs-url").get_attribute("value") == "")
    draft(page)
    assert (
        "Only a study read from the PACS can be stored back." in by_id(page, "report-status").text
    )
    assert not by_id(page, "store-report").is_enabled()
    no_console_errors(page)
