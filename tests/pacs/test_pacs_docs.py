"""The PACS and reports guides' examples, run as written against the session's server and
PACS."""

from __future__ import annotations

import json
import re
import sys

import pytest

from tests.pacs.conftest import API_KEYS, USERS
from tests.utils.docs import only_block, page, run_bash, run_example

pytestmark = pytest.mark.e2e  # the README's examples, on the real engine

USER = "alice"


def block(language: str) -> str:
    return only_block(language, page("guides/pacs.md"))


def on_test_setup(text: str, server, pacs) -> str:
    """The example's server and PACS addresses -> this session's (the example uses forward)."""
    assert "localhost:8000" in text and "http://localhost:8042/dicom-web" in text
    text = text.replace("http://localhost:8042/dicom-web", pacs.forward_url)
    return text.replace("localhost:8000", f"127.0.0.1:{server.port}")


def user_env() -> dict[str, str]:
    return {
        "LINGSHU_API_KEY": API_KEYS[0],
        "PACS_USER": USER,
        "PACS_PASSWORD": USERS[USER],
    }


def test_curl_example_asks_about_four_slices_of_a_series(pacs_server, pacs, tmp_path):
    script = on_test_setup(block("shell"), pacs_server, pacs)
    script = re.sub(r"(?m)^STUDY=\S+", f"STUDY={pacs.ct.study_uid}", script)
    script = re.sub(r"(?m)^SERIES=\S+", f"SERIES={pacs.ct.series_uid}", script)
    body = json.loads(run_bash(script, tmp_path, user_env()))
    assert body["object"] == "chat.completion"
    single = json.loads(
        run_bash(script.replace('"slices": 4', '"slices": 1'), tmp_path, user_env())
    )
    slice_tokens = body["usage"]["prompt_tokens"] - single["usage"]["prompt_tokens"]
    assert slice_tokens > 0 and slice_tokens % 3 == 0  # three more slices, same size each


def test_python_example_asks_about_one_instance(pacs_server, pacs, tmp_path):
    code = on_test_setup(block("py"), pacs_server, pacs)
    ct = pacs.files["CT_small.dcm"]
    env = {**user_env(), "STUDY": ct.study, "SERIES": ct.series, "SOP": ct.sop}
    answer = run_example([sys.executable, "-c", code], tmp_path, env)
    assert answer.strip()


def test_report_example_drafts_and_stores(pacs_server, pacs, tmp_path):
    script = on_test_setup(only_block("shell", page("guides/reports.md")), pacs_server, pacs)
    ct = pacs.ct.slices[3]
    for name, uid in (
        ("STUDY", pacs.ct.study_uid),
        ("SERIES", pacs.ct.series_uid),
        ("SOP", ct.sop_uid),
    ):
        script = re.sub(rf"(?m)^{name}=\S+", f"{name}={uid}", script)
    writer = {**user_env(), "PACS_USER": "bob", "PACS_PASSWORD": USERS["bob"]}  # alice reads only
    report = json.loads(run_bash(script, tmp_path, writer))
    assert report["object"] == "report" and report["text"]
    assert report["dicom_sr"]["stored"]["url"].endswith(report["dicom_sr"]["sop_instance_uid"])
    assert report["fhir"]["entry"][0]["resource"]["resourceType"] == "DiagnosticReport"
