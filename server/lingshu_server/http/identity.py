"""Who may call, and how much: the authenticator (keys, tokens, client certificates) and the
tenants' quotas, built from the settings onto `app.state`; the playground's sign-in settings."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import FastAPI

from lingshu_server.core.identity_settings import check_provider_url
from lingshu_server.core.quotas import LocalQuotaCounter
from lingshu_server.core.settings import Settings
from lingshu_server.http.auth import Authenticator
from lingshu_server.http.oidc_keys import SigningKeys
from lingshu_server.http.oidc_tokens import TokenVerifier
from lingshu_server.http.quotas import TenantQuotas


def install_identity(app: FastAPI, settings: Settings) -> None:
    """`app.state.signing_keys` (kept fresh by the lifespan), `authenticator`, `quotas`."""
    signing_keys = None
    verifier = None
    if settings.oidc_issuers:
        signing_keys = SigningKeys(
            settings.oidc_issuers,
            timeout_s=settings.oidc_http_timeout,
            min_refresh_s=settings.oidc_jwks_min_refresh,
            refresh_s=settings.oidc_jwks_refresh,
            ca_file=settings.oidc_ca_file,
        )
        verifier = TokenVerifier(settings, signing_keys)
    app.state.signing_keys = signing_keys
    app.state.authenticator = Authenticator(
        keys=app.state.api_keys,
        tokens=verifier,
        client_certs=settings.tls_client_auth != "none",
        tenant_attribute=settings.tls_tenant_attribute,
    )
    app.state.quotas = (
        TenantQuotas(settings.tenant_quotas, LocalQuotaCounter())
        if settings.tenant_quotas
        else None
    )


@dataclass(frozen=True)
class SignIn:
    """What the playground needs to sign in with authorization code and PKCE."""

    authorization_endpoint: str
    token_endpoint: str
    client_id: str
    scope: str
    resource: str | None

    @property
    def token_origin(self) -> str:
        parts = urlsplit(self.token_endpoint)
        return f"{parts.scheme}://{parts.netloc}"


async def playground_sign_in(app: FastAPI) -> SignIn | None:
    """The playground's sign-in through the first issuer, from its discovery document (fetched
    now if the provider was down so far); None when not configured or not reachable."""
    settings: Settings = app.state.settings
    signing_keys: SigningKeys | None = app.state.signing_keys
    if signing_keys is None or not settings.oidc_playground_client_id:
        return None
    issuer = signing_keys.issuers[settings.oidc_issuers[0]]
    if not issuer.discovery:
        await issuer.refresh(min_age_s=issuer.min_refresh_s)
    endpoints = issuer.discovery
    authorization, token = endpoints.get("authorization_endpoint"), endpoints.get("token_endpoint")
    if not isinstance(authorization, str) or not isinstance(token, str):
        return None
    try:
        check_provider_url(authorization, "authorization_endpoint")
        check_provider_url(token, "token_endpoint")
    except ValueError:
        return None
    return SignIn(
        authorization_endpoint=authorization,
        token_endpoint=token,
        client_id=settings.oidc_playground_client_id,
        scope=settings.oidc_playground_scope,
        resource=settings.oidc_playground_resource,
    )
