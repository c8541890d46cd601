"""The official OpenAI SDKs, Python and JavaScript, with an access token of the real OpenID
provider as their key, against a front end of the shared real engine: the answers (tokens the
engine generated, streamed or not) and the quota headers counting them."""

from __future__ import annotations

import json
import os
import subprocess

import openai
import pytest

from tests.identity.conftest import identity_args
from tests.utils.images import image_data_url
from tests.utils.oidc_provider import AUDIENCE, CLIENTS, FOLDER, node

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="package")
def identity_frontend(shared_engine, provider):
    return shared_engine.frontend("identity", *identity_args(provider))


def messages() -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_data_url(224, 224)}},
                {"type": "text", "text": "Describe the findings."},
            ],
        }
    ]


def test_python_sdk_with_a_token_as_its_key(identity_frontend, provider):
    sdk = openai.OpenAI(
        base_url=f"{identity_frontend.base_url}/v1",
        api_key=provider.token("cardiology-app"),
        max_retries=0,
    )
    raw = sdk.chat.completions.with_raw_response.create(
        model="lingshu-demo", messages=messages(), max_tokens=6
    )
    completion = raw.parse()
    assert completion.usage.completion_tokens > 0
    assert isinstance(completion.choices[0].message.content, str)
    assert int(raw.headers["x-ratelimit-limit-tokens"]) == 200
    stream = sdk.chat.completions.create(
        model="lingshu-demo", messages=messages(), max_tokens=6, stream=True
    )
    assert sum(len(chunk.choices) for chunk in stream) > 1
    expired = openai.OpenAI(
        base_url=f"{identity_frontend.base_url}/v1",
        api_key=provider.sign(exp=1_000_000),
        max_retries=0,
    )
    with pytest.raises(openai.AuthenticationError) as refused:
        expired.models.list()
    assert refused.value.code == "invalid_token"
    roleless = openai.OpenAI(
        base_url=f"{identity_frontend.base_url}/v1",
        api_key=provider.token("billing-app"),
        max_retries=0,
    )
    with pytest.raises(openai.PermissionDeniedError):
        roleless.models.list()


def test_js_sdk_with_a_token_as_its_key(identity_frontend, provider, tmp_path):
    image_file = tmp_path / "image.txt"
    image_file.write_text(image_data_url(224, 224))
    pathology, billing = CLIENTS["pathology-app"], CLIENTS["billing-app"]
    env = {
        **os.environ,
        "LINGSHU_URL": identity_frontend.base_url,
        "LINGSHU_MODEL": "lingshu-demo",
        "LINGSHU_IMAGE_FILE": str(image_file),
        "OIDC_ISSUER": provider.issuer,
        "OIDC_AUDIENCE": AUDIENCE,
        "OIDC_CLIENT": pathology.client_id,
        "OIDC_SECRET": pathology.secret,
        "OIDC_ROLELESS_CLIENT": billing.client_id,
        "OIDC_ROLELESS_SECRET": billing.secret,
    }
    result = subprocess.run(
        [node(), str(FOLDER / "sdk_with_token.mjs")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=FOLDER,
    )
    try:
        report = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"no report from the script:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    failed = [f"{r['name']}: {r['error']}" for r in report["results"] if not r["ok"]]
    assert not failed, "\n\n".join(failed)
    assert len(report["results"]) == 4
