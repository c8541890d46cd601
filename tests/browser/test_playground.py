"""The playground in a real browser (headless Chromium) against the real server: load the page,
upload a DICOM, change the window with the keyboard and see the model's pixels change, ask the
model card's report prompt and watch the answer stream in, see the API's own error for a corrupt
file, and keep the API key in the tab only. Screenshots land in each test's tmp dir; with
LINGSHU_PLAYGROUND_SCREENSHOT=PATH the flow's main screenshot is also copied there (that is how
docs/playground.png is made)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom.data import get_testdata_file
from qwen_vl_utils.vision_process import fetch_image
from selenium.webdriver import ActionChains, Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import FILE_KEYS
from tests.utils.images import data_url, encode, gradient_image, image_part
from tests.utils.preview import PREVIEW, png_pixels, preview
from tests.utils.videos import clip

pytestmark = pytest.mark.e2e  # the page's answer must equal the API's greedy answer

KEY_STORE = "lingshu.playground.apiKey"
REPORT_PROMPT = (
    "You are a helpful assistant. Please generate a report for the given images, including "
    "both findings and impressions. Return the report in the following format: "
    "Findings: {} Impression: {}."
)
CT = get_testdata_file("CT_small.dcm")
# Records every text the answer box shows, so the test sees it grow, not just arrive.
WATCH_ANSWER = """
const answer = document.getElementById('answer');
window.answerTexts = [];
new MutationObserver(() => window.answerTexts.push(answer.textContent))
  .observe(answer, {childList: true, characterData: true, subtree: true});
"""


def wait_until(browser: Chrome, condition, timeout: float = 120):
    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(lambda _: condition())


def by_id(browser: Chrome, element_id: str):
    return browser.find_element(By.ID, element_id)


def preview_state(browser: Chrome) -> str:
    return by_id(browser, "preview-status").get_attribute("data-state")


def upload(browser: Chrome, path: str | Path, expect: str = "done") -> None:
    by_id(browser, "file").send_keys(str(path))
    wait_until(browser, lambda: preview_state(browser) in ("done", "error"))
    assert preview_state(browser) == expect, by_id(browser, "preview-error").text


def shown_pixels(browser: Chrome) -> np.ndarray:
    return png_pixels(by_id(browser, "preview").get_attribute("src"))


READ_FACTS = """
const terms = [...document.querySelectorAll('#facts dt')].map((e) => e.textContent);
const values = [...document.querySelectorAll('#facts dd')].map((e) => e.textContent);
return terms.map((term, i) => [term, values[i]]);
"""


def facts(browser: Chrome) -> dict[str, str]:
    """The facts list, read in one go (the page replaces it with each preview). As pairs:
    chromedriver cannot return an object with a key named "Window"."""
    return dict(browser.execute_script(READ_FACTS))


def no_console_errors(browser: Chrome) -> None:
    """Nothing the page did was blocked by its own Content-Security-Policy, nothing threw."""
    for entry in browser.get_log("browser"):
        assert "Content Security Policy" not in entry["message"], entry
        if entry["level"] == "SEVERE":  # failed requests are logged too: only the expected 400/401
            assert " 40" in entry["message"], entry


def save(browser: Chrome, path: Path) -> Path:
    assert browser.save_screenshot(str(path)), path
    return path


def test_clinician_flow(server, client, browser, tmp_path):
    browser.get(f"{server.base_url}/playground")
    assert browser.title == "Lingshu playground"

    # the key: typed in, kept in this tab's sessionStorage and nowhere else
    key = by_id(browser, "api-key")
    key.send_keys("sk-typed-in-this-tab", Keys.TAB)
    stored = f"return sessionStorage.getItem('{KEY_STORE}')"
    wait_until(browser, lambda: browser.execute_script(stored) == "sk-typed-in-this-tab")
    assert browser.execute_script("return localStorage.length + document.cookie.length") == 0
    wait_until(browser, lambda: by_id(browser, "model").get_attribute("value") == server.model)

    # a CT: the server's default preset, as the decoder reports it
    upload(browser, CT)
    default = shown_pixels(browser)
    assert "mediastinum" in facts(browser)["Window from"]
    assert facts(browser)["Modality"] == "CT"
    assert by_id(browser, "preview-caption").text == "140 × 140 · 25 tokens"

    # the window, chosen with the keyboard: Tab from the file picker, then type "l" for Lung
    browser.execute_script("document.getElementById('file').focus()")
    ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.execute_script("return document.activeElement.id") == "window"
    ActionChains(browser).send_keys("l").perform()
    wait_until(browser, lambda: facts(browser).get("Window from", "").endswith("lung"))
    lung = shown_pixels(browser)
    assert not np.array_equal(lung, default)
    ct_url = data_url(Path(CT).read_bytes(), "application/dicom")
    api = preview(client, image_part(ct_url, dicom={"window": "lung"}))
    assert np.array_equal(lung, png_pixels(api["images"][0]["image"]))  # the API's own pixels
    assert facts(browser)["Window"] == "center -600, width 1500 (LINEAR)"

    # the model card's report prompt, sent with Ctrl+Enter, greedy so the API can be compared
    by_id(browser, "report-prompt").click()
    question = by_id(browser, "question")
    assert question.get_attribute("value") == REPORT_PROMPT
    assert browser.execute_script("return document.activeElement.id") == "question"
    for field, value in (("temperature", "0"), ("max-tokens", "24")):
        by_id(browser, field).clear()
        by_id(browser, field).send_keys(value)
    browser.execute_script(WATCH_ANSWER)
    question.send_keys(Keys.CONTROL, Keys.ENTER)
    answer = by_id(browser, "answer")
    wait_until(browser, lambda: answer.get_attribute("data-state") in ("done", "error"))
    assert answer.get_attribute("data-state") == "done", by_id(browser, "chat-error").text
    texts = browser.execute_script("return window.answerTexts")
    assert len(set(texts)) >= 2 and texts[-1] == answer.text  # it grew as the tokens came
    assert int(answer.get_attribute("data-chunks")) >= 2
    stats = by_id(browser, "stats").text
    assert "time to first token" in stats and "answer tokens" in stats
    same = client.post(
        "/v1/chat/completions",
        json={
            "model": server.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        image_part(ct_url, dicom={"window": "lung"}),
                        {"type": "text", "text": REPORT_PROMPT},
                    ],
                }
            ],
            "temperature": 0,
            "max_tokens": 24,
        },
    ).json()
    assert answer.get_attribute("textContent") == same["choices"][0]["message"]["content"]
    usage = same["usage"]
    assert f"{usage['prompt_tokens']} prompt tokens, {usage['completion_tokens']}" in stats
    browser.set_window_size(1440, 1320)  # the whole page, facts included, for the docs
    screenshot = save(browser, tmp_path / "playground.png")
    if os.environ.get("LINGSHU_PLAYGROUND_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["LINGSHU_PLAYGROUND_SCREENSHOT"])

    # a corrupt file: the API's message, as the API says it
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(Path(CT).read_bytes()[:20000])
    upload(browser, corrupt, expect="error")
    refusal = client.post(
        PREVIEW, json=image_part(data_url(corrupt.read_bytes(), "application/dicom"))
    )
    error = refusal.json()["error"]
    shown = by_id(browser, "preview-error").text
    assert shown.startswith(error["message"])
    assert f"HTTP 400 · {error['type']} · {error['code']} · param image_url" in shown
    assert not by_id(browser, "preview").is_displayed()
    question.send_keys(Keys.CONTROL, Keys.ENTER)
    wait_until(browser, lambda: answer.get_attribute("data-state") == "error")
    chat_error = by_id(browser, "chat-error").text
    assert chat_error.startswith(error["message"])
    assert "param messages[0].content[0].image_url" in chat_error
    save(browser, tmp_path / "playground-error.png")
    no_console_errors(browser)


def test_png_and_a_clip(server, client, browser, tmp_path):
    browser.get(f"{server.base_url}/playground")
    png = tmp_path / "fundus.png"
    png.write_bytes(encode(gradient_image(640, 480, seed=11), "PNG"))
    upload(browser, png)
    wait_until(browser, lambda: "640 × 480" in by_id(browser, "original-caption").text)
    expected = np.asarray(fetch_image({"image": data_url(png.read_bytes())}))
    assert np.array_equal(shown_pixels(browser), expected)
    assert facts(browser)["Source"].startswith("PNG · 640 × 480")
    save(browser, tmp_path / "png.png")

    mp4 = tmp_path / "endoscopy.mp4"
    mp4.write_bytes(clip(320, 240, 100, fps=10))  # 10 s: 20 frames sampled, 8 shown
    upload(browser, mp4)
    assert browser.find_elements(By.CSS_SELECTOR, "#original video")
    thumbnails = browser.find_elements(By.CSS_SELECTOR, "#frames img")
    api = preview(
        client, {"type": "video_url", "video_url": {"url": data_url(mp4.read_bytes(), "video/mp4")}}
    )
    assert len(thumbnails) == len(api["video"]["shown"]) == 8
    for thumbnail, frame in zip(thumbnails, api["video"]["shown"], strict=True):
        assert np.array_equal(
            png_pixels(thumbnail.get_attribute("src")), png_pixels(frame["image"])
        )
    assert facts(browser)["Sampled"] == "20 frames at 2 fps"
    save(browser, tmp_path / "clip.png")
    no_console_errors(browser)


def test_key_is_sent_and_wrong_keys_get_the_apis_answer(secured, browser, tmp_path):
    key = FILE_KEYS[38]  # this test's own key on the secured server (rate limits are per key)
    browser.get(f"{secured.base_url}/playground")
    models_error = by_id(browser, "models-error")
    wait_until(browser, lambda: models_error.is_displayed())
    assert "You didn't provide an API key" in models_error.text

    field = by_id(browser, "api-key")
    field.send_keys("sk-wrong", Keys.TAB)
    wait_until(browser, lambda: "Incorrect API key provided." in models_error.text)
    assert "HTTP 401 · invalid_request_error · invalid_api_key" in models_error.text
    save(browser, tmp_path / "wrong-key.png")

    field.clear()
    field.send_keys(key, Keys.TAB)
    wait_until(browser, lambda: not models_error.is_displayed())
    assert by_id(browser, "model").get_attribute("value") == secured.model

    browser.refresh()  # the same tab: the key is still there, and works
    assert by_id(browser, "api-key").get_attribute("value") == key
    png = tmp_path / "scan.png"
    png.write_bytes(encode(gradient_image(200, 150, seed=2), "PNG"))
    upload(browser, png)
    by_id(browser, "forget-key").click()
    assert browser.execute_script(f"return sessionStorage.getItem('{KEY_STORE}')") is None
    assert by_id(browser, "api-key").get_attribute("value") == ""
    with httpx.Client(base_url=secured.base_url) as http:
        assert http.get("/playground").status_code == 200  # the page itself needs no key
