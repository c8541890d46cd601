"""The official OpenAI JavaScript SDK (npm `openai`, pinned in package-lock.json) runs
conformance.mjs against the session's secured server (API keys, a body limit, a per-key rate
limit): chat and responses with an image, streamed and not, tool calls, structured output, and
the SDK's error classes for 401, 404, 400, 413 and 429.

Needs Node 20+ and `npm ci --prefix tests/js` (scripts/install-test.sh does both); without them
this test fails and says so."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FILE_KEYS, MAX_BODY
from tests.utils.images import image_data_url
from tests.utils.tools import require_node

pytestmark = pytest.mark.e2e  # the official SDK's conformance run, against the real engine

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "conformance.mjs"
CHECKS = {
    "chat: image",
    "chat: image, streamed",
    "chat: stream helper",
    "chat: structured output",
    "chat: tool calls, then the result",
    "chat: tool calls, streamed",
    "responses: image",
    "responses: streamed events",
    "responses: stream helper, structured output",
    "responses: function calls over turns",
    "responses: function calls, streamed",
    "responses: stored, chained, retrieved, deleted",
    "conversations: created, answered in, listed, deleted",
    "errors: 401 AuthenticationError",
    "errors: 404 NotFoundError",
    "errors: 400 BadRequestError",
    "errors: 413 request too large",
    "errors: 429 RateLimitError",
}


def node() -> str:
    return require_node(HERE, "openai")


def test_official_js_sdk_conformance(request, tmp_path):
    """Against the secured server alone: keys, a body limit and a rate limit, as deployed."""
    executable = node()  # before the server starts: a missing install fails at once
    secured = request.getfixturevalue("secured")
    image_file = tmp_path / "image.txt"
    image_file.write_text(image_data_url(224, 224))
    env = {
        **os.environ,
        "LINGSHU_URL": secured.base_url,
        "LINGSHU_MODEL": secured.model,
        "LINGSHU_IMAGE_FILE": str(image_file),
        "LINGSHU_KEYS": ",".join(FILE_KEYS[22:27]),  # keys no other test spends (rate limits)
        "LINGSHU_RATE_KEY": FILE_KEYS[27],
        "LINGSHU_OWNER_KEYS": f"{FILE_KEYS[28]},{FILE_KEYS[29]}",
        "LINGSHU_MAX_BODY": str(MAX_BODY),
    }
    result = subprocess.run(
        [executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=1200, cwd=HERE
    )
    try:
        report = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"no report from the script:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    failed = [f"{r['name']}: {r['error']}" for r in report["results"] if not r["ok"]]
    assert not failed, "\n\n".join(failed)
    assert {r["name"] for r in report["results"]} == CHECKS
    assert result.returncode == 0, result.stderr
    lock = json.loads((HERE / "package-lock.json").read_text())
    assert report["sdk"] == lock["packages"]["node_modules/openai"]["version"]
