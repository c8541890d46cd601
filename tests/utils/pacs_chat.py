"""Asking the server about images through the OpenAI SDK, reading its audit log, and reading
back what the server stored into the PACS."""

from __future__ import annotations

import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

import openai
import pydicom

from lingshu_server.inputs.pacs_client import dicom_from_response

QUESTION = "Describe the findings."
MODEL = "lingshu-demo"


def image(url: str, **options: Any) -> dict:
    """An image_url content part; `dicom=` options go inside the image_url object."""
    return {"type": "image_url", "image_url": {"url": url, **options}}


def ask(sdk: openai.OpenAI, *parts: dict, request_id: str | None = None, **kwargs: Any):
    """A completion for the parts followed by the question (a fresh request id each time)."""
    messages = [{"role": "user", "content": [*parts, {"type": "text", "text": QUESTION}]}]
    headers = {"X-Request-Id": request_id or uuid.uuid4().hex}
    kwargs.setdefault("max_tokens", 2)
    return sdk.chat.completions.create(
        model=MODEL, messages=messages, extra_headers=headers, **kwargs
    )


def fingerprint(sdk: openai.OpenAI, *parts: dict) -> list[tuple[str, float]]:
    """What the model makes of the images: greedy tokens and their top log-probabilities.
    Equal fingerprints mean the engine saw the same pixels; a random-weight model's
    log-probabilities move with every gray level."""
    completion = ask(sdk, *parts, max_tokens=3, temperature=0, logprobs=True, top_logprobs=5)
    return [
        (top.token, round(top.logprob, 4))
        for entry in completion.choices[0].logprobs.content
        for top in entry.top_logprobs
    ]


def audit_record(path: Path, request_id: str, timeout_s: float = 10) -> dict:
    """The audit log line of one request (written just after the response is sent)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if path.exists():
            for line in path.read_text().splitlines():
                record = json.loads(line)
                if record["request_id"] == request_id:
                    return record
        if time.monotonic() > deadline:
            raise AssertionError(f"no audit record for request {request_id}")
        time.sleep(0.1)


def read_back(pacs: Any, url: str) -> pydicom.Dataset:
    """The stored instance, by WADO-RS from the PACS itself."""
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    with pacs.orthanc.client() as http:
        response = http.get(url.removeprefix(pacs.orthanc.url), headers={"Accept": accept})
    assert response.status_code == 200, response.text
    data = dicom_from_response(response.content, response.headers["content-type"])
    return pydicom.dcmread(io.BytesIO(data))
