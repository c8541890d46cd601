"""Checks of the identity settings (tokens, quotas, mutual TLS, /metrics) that span fields."""

from __future__ import annotations

import ipaddress
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from lingshu_server.core.settings import Settings

# Public-key signatures only: an HMAC (HS*) key is a shared secret, which a resource server
# must never hold, and `none` is no signature at all.
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "Ed25519",
)


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_provider_url(url: str, what: str) -> None:
    """An identity provider's URL: https, or http on a loopback address (a test provider)."""
    parts = urlsplit(url)
    if not parts.hostname or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"{what} {url!r} must be an http(s) URL without a query")
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname)):
        return
    raise ValueError(f"{what} {url!r} must use https (http only on a loopback address)")


def tenant_quotas_value(value: Any) -> Any:
    """--tenant-quotas from the command line or the environment: a JSON object."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as exc:
            raise ValueError(f"tenant_quotas is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(
            'tenant_quotas must be a JSON object, e.g. \'{"radiology": {"tokens_per_minute": '
            "100000}}'"
        )
    return value


def has_credentials(settings: Settings) -> bool:
    """Whether the server checks callers: API keys, tokens or client certificates."""
    return (
        bool(settings.api_keys)
        or settings.api_key_file is not None
        or bool(settings.oidc_issuers)
        or settings.tls_client_auth != "none"
    )


def check_identity_settings(settings: Settings) -> None:
    for issuer in settings.oidc_issuers:
        check_provider_url(issuer, "oidc_issuers entry")
    if settings.oidc_issuers and not settings.oidc_audiences:
        raise ValueError("oidc_issuers needs oidc_audiences: the audience a token must name")
    refused = [alg for alg in settings.oidc_algorithms if alg not in ASYMMETRIC_ALGORITHMS]
    if refused or not settings.oidc_algorithms:
        raise ValueError(
            f"oidc_algorithms {refused or '[]'} refused: only asymmetric algorithms "
            f"({', '.join(ASYMMETRIC_ALGORITHMS)})"
        )
    if settings.oidc_playground_client_id and not settings.oidc_issuers:
        raise ValueError("oidc_playground_client_id needs oidc_issuers")
    if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
        raise ValueError("tls_cert_file and tls_key_file go together")
    if settings.tls_client_auth != "none" and (
        settings.tls_ca_file is None or settings.tls_cert_file is None
    ):
        raise ValueError("tls_client_auth needs tls_cert_file, tls_key_file and tls_ca_file")
    if settings.metrics_auth == "token" and not (settings.oidc_issuers and settings.metrics_role):
        raise ValueError("metrics_auth token needs oidc_issuers and metrics_role")
    if settings.metrics_auth == "key" and not has_credentials(settings):
        raise ValueError("metrics_auth key needs API keys, oidc_issuers or client certificates")
