"""The identity tests' fixtures: one real OpenID provider (oidc-provider on Node) for the
folder, and servers that accept its tokens beside API keys: in process on the fake engine for
the HTTP edge, a front end of the shared engine for the SDK runs (e2e)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import ENGINE_ARGS
from tests.utils.oidc_provider import (
    AUDIENCE,
    METRICS_ROLE,
    PLAYGROUND_CLIENT,
    ROLES_CLAIM,
    TENANT_CLAIM,
    USER_ROLE,
    OidcProvider,
    start_provider,
)

RADIOLOGY_KEY = "sk-radiology-7d1e"
PLAIN_KEY = "sk-plain-40c2"
MIN_REFRESH_S = 0.5  # --oidc-jwks-min-refresh: short, so rotation tests wait little
QUOTAS = {
    "pathology": {"requests_per_minute": 5, "tokens_per_minute": 2000},
    "cardiology": {"tokens_per_minute": 200},
    "radiology": {"concurrent_requests": 2},
}


@pytest.fixture(scope="package")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    running = start_provider(tmp_path_factory.mktemp("oidc") / "provider.log")
    yield running
    running.stop()


def identity_args(provider: OidcProvider) -> list[str]:
    """A server as a hospital would run it behind its provider: tokens with the user role,
    tenants from the `groups` claim, API keys beside them, quotas, /metrics for a role."""
    return [
        "--api-keys",
        f"{RADIOLOGY_KEY} tenant=radiology,{PLAIN_KEY}",
        "--oidc-issuers",
        provider.issuer,
        "--oidc-audiences",
        AUDIENCE,
        "--oidc-roles-claim",
        ROLES_CLAIM,
        "--oidc-required-roles",
        USER_ROLE,
        "--oidc-tenant-claim",
        TENANT_CLAIM,
        "--oidc-http-timeout",
        "0.5",
        "--oidc-jwks-min-refresh",
        str(MIN_REFRESH_S),
        "--tenant-quotas",
        json.dumps(QUOTAS),
        "--metrics-auth",
        "token",
        "--metrics-role",
        METRICS_ROLE,
        "--oidc-playground-client-id",
        PLAYGROUND_CLIENT,
        "--oidc-playground-scope",
        "openid lingshu.use",
    ]


@pytest.fixture(scope="package")
def guarded(provider: OidcProvider, tmp_path_factory: pytest.TempPathFactory):
    from tests.utils.in_process import start_fake_server

    log_path = tmp_path_factory.mktemp("guarded") / "server.log"
    running = start_fake_server(log_path, *ENGINE_ARGS, *identity_args(provider))
    provider.add_client(  # the playground's sign-in: a public client, PKCE, this server's page
        {
            "client_id": PLAYGROUND_CLIENT,
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "redirect_uris": [f"{running.base_url}/playground"],
        }
    )
    yield running
    running.stop()
