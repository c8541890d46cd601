"""Access tokens of a real OpenID provider at the HTTP edge (the fake engine: only who may call
is under test): valid, expired, not yet valid, another audience, another issuer, a missing
role, `alg: none`, HS256 over the public key, a key rotation, a flood of forged key ids, the
provider down; keys and tokens side by side; every route but the probes protected."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from joserfc.jwk import RSAKey

from tests.identity.conftest import MIN_REFRESH_S, PLAIN_KEY, RADIOLOGY_KEY
from tests.utils.errors import assert_openai_error
from tests.utils.oidc_provider import OTHER_AUDIENCE, OidcProvider, signing_key

# An OpenID provider (Node) and a server on the fake engine, a few seconds in one group: in the full
# suite beside the engine tests, not in the fast tier.
pytestmark = [pytest.mark.e2e, pytest.mark.beside_engine]

CHAT = {"model": "lingshu-demo", "messages": [{"role": "user", "content": "Findings?"}]}


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def chat(server, credential: str | None, **params) -> httpx.Response:
    headers = bearer(credential) if credential else {}
    body = {**CHAT, "max_tokens": 2, **params}
    return httpx.post(
        f"{server.base_url}/v1/chat/completions", json=body, headers=headers, timeout=30
    )


def refused(response: httpx.Response, status: int = 401, code: str = "invalid_token") -> str:
    error = assert_openai_error(response, status, code=code)
    assert response.headers["www-authenticate"].startswith("Bearer error=")
    return error["message"]


def eventually(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_a_provider_token_is_accepted_and_logged_by_issuer_and_subject(guarded, provider):
    token = provider.token("radiology-app")
    response = chat(guarded, token)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
    log = eventually(lambda: f"{provider.issuer}#radiology-app" in guarded.log_text())
    assert log, "the access log names the token's issuer and subject"
    lines = [json.loads(line) for line in guarded.log_text().splitlines() if line.startswith("{")]
    ours = [line for line in lines if line.get("identity") == f"{provider.issuer}#radiology-app"]
    assert ours[-1]["tenant"] == "radiology"
    assert token not in guarded.log_text()
    assert token.split(".")[2] not in guarded.log_text()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not yet valid"),
        ({"iat": int(time.time()) + 3600}, "issued in the future"),
        ({"aud": OTHER_AUDIENCE}, "audience"),
        ({"exp": None}, "missing claim"),
    ],
    ids=["expired", "not-yet-valid", "issued-in-the-future", "wrong-audience", "no-exp"],
)
def test_claims_out_of_bounds_are_401(guarded, provider, changes, reason):
    assert reason in refused(chat(guarded, provider.sign(**changes)))


def test_a_token_for_another_audience_from_the_provider_is_401(guarded, provider):
    token = provider.token("radiology-app", resource=OTHER_AUDIENCE)
    assert "audience" in refused(chat(guarded, token))


def test_an_issuer_not_on_the_list_is_401_without_contacting_it(guarded, provider):
    before = provider.jwks_requests()
    token = provider.sign(iss="https://idp.elsewhere.example")
    assert "issuer" in refused(chat(guarded, token))
    assert provider.jwks_requests() == before


def test_a_valid_token_without_the_role_is_403(guarded, provider):
    response = chat(guarded, provider.token("billing-app"))
    message = refused(response, 403, "insufficient_scope")
    assert "role" in message


def test_alg_none_and_hs256_with_the_public_key_are_401(guarded, provider):
    assert "algorithm" in refused(chat(guarded, provider.unsigned()))
    assert "algorithm" in refused(chat(guarded, provider.hs256_with_public_key()))
    # a token signed by a key the issuer never published, under a key id it did
    forged = provider.sign(key=RSAKey.generate_key(2048, parameters={"kid": "key-1"}, private=True))
    assert "bad signature" in refused(chat(guarded, forged))


def test_keys_and_tokens_side_by_side(guarded, provider):
    assert chat(guarded, RADIOLOGY_KEY).status_code == 200
    assert chat(guarded, PLAIN_KEY).status_code == 200
    assert chat(guarded, provider.token("radiology-app")).status_code == 200
    assert_openai_error(chat(guarded, "sk-wrong"), 401, code="invalid_api_key")
    assert_openai_error(chat(guarded, None), 401, code="invalid_api_key")
    # a token-shaped string that is no token
    refused(chat(guarded, "eyJub3QiOiJqc29uIn0.eyJ9.c2ln"))


def test_every_route_but_the_probes_needs_a_credential(guarded, provider):
    for path in ("/v1/models", "/version", "/tokenize"):
        response = httpx.request(
            "POST" if path == "/tokenize" else "GET", f"{guarded.base_url}{path}", timeout=10
        )
        assert_openai_error(response, 401)
    preview = httpx.post(f"{guarded.base_url}/v1/images/preview", json={}, timeout=10)
    assert_openai_error(preview, 401)
    for path in ("/health", "/ready", "/playground"):
        assert httpx.get(f"{guarded.base_url}{path}", timeout=10).status_code == 200
    token = provider.token("radiology-app")
    assert httpx.get(f"{guarded.base_url}/version", headers=bearer(token)).status_code == 200


def test_metrics_need_a_token_with_the_metrics_role(guarded, provider):
    url = f"{guarded.base_url}/metrics"
    assert_openai_error(httpx.get(url, timeout=10), 401)
    user = httpx.get(url, headers=bearer(provider.token("radiology-app")), timeout=10)
    assert_openai_error(user, 403, code="insufficient_scope")
    assert_openai_error(httpx.get(url, headers=bearer(PLAIN_KEY), timeout=10), 403)
    scraper = httpx.get(url, headers=bearer(provider.token("prometheus")), timeout=10)
    assert scraper.status_code == 200
    assert "lingshu_requests_total" in scraper.text


@pytest.fixture
def rotation(provider: OidcProvider, guarded):
    """Put the provider's first key set back after a test that rotates it, and wait until the
    server accepts its tokens again."""
    keys = list(provider.keys)
    yield
    provider.up()
    provider.publish(keys)
    token = provider.token("radiology-app")
    assert eventually(lambda: chat(guarded, token).status_code == 200)


def test_a_rotated_key_is_accepted_after_refresh_and_the_old_one_refused_once_gone(
    guarded, provider, rotation
):
    old_key = provider.keys[0]
    old_token = provider.token("radiology-app")
    # (after another test's rotation the server may fetch the first key set again)
    assert eventually(lambda: chat(guarded, old_token).status_code == 200)
    new_key = signing_key("key-2")
    provider.publish([new_key, old_key])  # the provider signs with the new key from now on
    new_token = provider.token("radiology-app")
    assert json.loads(_header(new_token))["kid"] == "key-2"
    # the server has not seen key-2: it fetches the keys again (at most once per interval)
    assert eventually(lambda: chat(guarded, new_token).status_code == 200)
    assert chat(guarded, old_token).status_code == 200  # both published
    provider.publish([new_key])  # key-1 retired
    assert chat(guarded, old_token).status_code == 200  # still cached until the next fetch
    unknown = provider.sign(key=signing_key("key-unknown"))
    refused(chat(guarded, unknown))  # an unknown kid fetches again: key-1 is gone now

    def old_refused() -> bool:
        chat(guarded, unknown)
        return chat(guarded, old_token).status_code == 401

    assert eventually(old_refused)
    assert chat(guarded, new_token).status_code == 200


def test_a_flood_of_forged_key_ids_fetches_the_keys_at_most_once_per_interval(guarded, provider):
    key = signing_key("forged")
    forged = [provider.sign(key=key, header={"kid": f"forged-{i}"}) for i in range(40)]
    before = provider.jwks_requests()
    started = time.monotonic()

    async def flood() -> list[int]:
        async with httpx.AsyncClient(base_url=guarded.base_url, timeout=30) as http:
            answers = await asyncio.gather(
                *(http.get("/v1/models", headers=bearer(token)) for token in forged)
            )
        return [answer.status_code for answer in answers]

    assert set(asyncio.run(flood())) == {401}
    elapsed = time.monotonic() - started
    assert provider.jwks_requests() - before <= 1 + int(elapsed / MIN_REFRESH_S)


def test_provider_down_cached_keys_keep_working_and_a_new_key_is_a_quick_401(
    guarded, provider, rotation
):
    token = provider.token("radiology-app")
    # (after another test's rotation the server may fetch the first key set again)
    assert eventually(lambda: chat(guarded, token).status_code == 200)
    new_key = signing_key("key-3")
    provider.publish([new_key, *provider.keys])
    provider.down()
    time.sleep(MIN_REFRESH_S)  # past the interval: the next unknown kid tries the provider
    assert chat(guarded, token).status_code == 200
    started = time.monotonic()
    refused(chat(guarded, provider.sign(key=new_key)))
    assert time.monotonic() - started < 5  # --oidc-http-timeout, not a hang
    assert chat(guarded, token).status_code == 200


def _header(token: str) -> str:
    import base64

    part = token.split(".")[0]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()
