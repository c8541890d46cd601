"""Who may see what: each PACS auth mode, the fetch cache per caller, audit lines and logs."""

from __future__ import annotations

import re
import uuid

import httpx
import openai
import pytest

from benchmarks import pacs_latency
from tests.pacs.conftest import API_KEYS, BEARER_TOKEN, BENCHMARK_KEYS, USERS, basic, sdk_client
from tests.utils.images import tokens_for
from tests.utils.pacs_chat import ask, audit_record, image

FORWARD = "X-DICOMweb-Authorization"


def metric(server, name: str, **labels: str) -> float:
    """One sample of the server's /metrics (0 when absent)."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name + (f"{{{wanted}}}" if wanted else "")) + r" (\S+)"
    found = re.search("^" + pattern + "$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_bearer_token_from_a_file_and_its_rotation(sdk, pacs):
    first, second = pacs.ct.slices[4], pacs.ct.slices[5]
    url = pacs.bearer_url + f"/studies/{pacs.ct.study_uid}/series/{pacs.ct.series_uid}"
    assert ask(sdk, image(f"{url}/instances/{first.sop_uid}")).usage.prompt_tokens > 0
    pacs.token_file.write_text("a-token-the-pacs-no-longer-accepts\n")
    try:
        with pytest.raises(openai.BadRequestError) as caught:
            ask(sdk, image(f"{url}/instances/{second.sop_uid}"))
    finally:
        pacs.token_file.write_text(BEARER_TOKEN + "\n")
    assert caught.value.status_code == 400  # the PACS's 401 is not our 401
    assert caught.value.code == "dicomweb_unauthorized"
    assert "refused access (HTTP 401)" in caught.value.message
    assert ask(sdk, image(f"{url}/instances/{second.sop_uid}")).usage.prompt_tokens > 0


def test_forwarded_credentials_let_the_pacs_decide(pacs_server, pacs):
    ct = pacs.files["CT_small.dcm"]
    url = image(pacs.forward_url + pacs.instance_path(ct))
    for user, password in USERS.items():
        sdk = sdk_client(pacs_server, **{FORWARD: basic(user, password)})
        assert ask(sdk, url).usage.prompt_tokens > tokens_for(128, 128)
    # alice's instance is cached now; a wrong password must still not see it
    wrong = sdk_client(pacs_server, **{FORWARD: basic("alice", "guess")})
    with pytest.raises(openai.BadRequestError) as caught:
        ask(wrong, url)
    assert caught.value.code == "dicomweb_unauthorized"
    assert FORWARD in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        ask(sdk_client(pacs_server), url)
    assert caught.value.code == "dicomweb_unauthorized"
    assert f"send your PACS credentials in the {FORWARD} header" in caught.value.message


def test_follow_up_questions_hit_the_cache_and_api_keys_do_not_share_it(pacs_server, pacs):
    instance = pacs.ct.slices[6]
    url = image(
        pacs.basic_url
        + f"/studies/{pacs.ct.study_uid}/series/{pacs.ct.series_uid}"
        + f"/instances/{instance.sop_uid}"
    )
    ward_a, ward_b = (sdk_client(pacs_server, key) for key in API_KEYS)

    def counts() -> tuple[float, float]:
        return (
            metric(pacs_server, "lingshu_dicomweb_fetches_total", kind="instance"),
            metric(pacs_server, "lingshu_dicomweb_cache_hits_total", kind="instance"),
        )

    fetches, hits = counts()
    ask(ward_a, url)
    assert counts() == (fetches + 1, hits)
    ask(ward_a, url)  # the follow-up question
    assert counts() == (fetches + 1, hits + 1)
    ask(ward_b, url)  # another caller: fetched again, never served from ward A's entry
    assert counts() == (fetches + 2, hits + 1)
    assert metric(pacs_server, "lingshu_dicomweb_fetched_bytes_total", kind="instance") > 0
    assert metric(pacs_server, "lingshu_dicomweb_cache_bytes") >= 2 * len(instance.data)
    assert metric(pacs_server, "lingshu_dicomweb_fetch_seconds_count", kind="instance") > 0


def test_audit_log_names_pacs_and_uids_and_ordinary_logs_never_do(
    sdk, pacs, pacs_server, audit_log
):
    request_id = uuid.uuid4().hex
    series = pacs.basic_url + pacs.series_path(pacs.ct)
    ask(sdk, image(series, dicom={"slices": 2}), request_id=request_id)
    record = audit_record(audit_log, request_id)
    host = pacs.basic_url.removeprefix("http://").split("/")[0]
    assert [entry["dicomweb"] for entry in record["images"]] == [
        {
            "pacs": host,
            "study_instance_uid": pacs.ct.study_uid,
            "series_instance_uid": pacs.ct.series_uid,
            "sop_instance_uid": pacs.ct.slices[k].sop_uid,
        }
        for k in (6, 18)
    ]
    assert all(entry["format"] == "DICOM" and entry["sha256"] for entry in record["images"])
    log = pacs_server.log_text()
    assert request_id in log  # the access log line of that very request is there
    uids = {pacs.ct.study_uid, pacs.ct.series_uid, *(s.sop_uid for s in pacs.ct.slices)}
    uids |= {uid for i in pacs.files.values() for uid in (i.study, i.series, i.sop)}
    assert [uid for uid in uids if uid in log] == []
    assert BEARER_TOKEN not in log and all(pw not in log for pw in USERS.values())


@pytest.mark.e2e  # time to first token and the API process's CPU: a real server
def test_latency_benchmark_runs_against_a_real_pacs(pacs_server, pacs):
    """benchmarks/pacs_latency.py cannot rot: its measurements, once, on this session's PACS."""
    report = pacs_latency.measure(
        pacs_server, pacs.basic_url, pacs.ct, list(BENCHMARK_KEYS), repeats=1, warmup=1
    )
    assert set(report["results"]) == {
        "ct_instance_base64",
        "ct_instance_pacs",
        "ct_instance_pacs_cached",
        "ct_series_4_pacs",
        "ct_series_4_pacs_cached",
    }
    for result in report["results"].values():
        assert 0 < result["ttft_min_ms"] <= result["ttft_p50_ms"]
        assert result["api_cpu_ms_per_image"] >= 0
    table = pacs_latency.render(report)
    assert table.count("\n| ct_") == 5
