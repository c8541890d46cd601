"""A real OpenID provider on loopback for the identity tests: panva's `oidc-provider` (npm,
OpenID Certified) run by Node from tests/identity/provider.mjs, issuing RS256 JWT access tokens
by client credentials and by authorization code with PKCE.

The tests own its signing keys (made here with joserfc), so they can rotate them, and sign
tokens of their own with the provider's key to reach the cases a provider never issues
(expired, not yet valid, another issuer, `alg: none`, HS256 over the public key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.utils.tools import INSTALL_HINT, require_tool

FOLDER = Path(__file__).resolve().parents[1] / "identity"
AUDIENCE = "https://lingshu.hospital.test"
OTHER_AUDIENCE = "https://billing.hospital.test"
USER_ROLE = "lingshu.user"
METRICS_ROLE = "lingshu.metrics"
ROLES_CLAIM = "realm_access.roles"
TENANT_CLAIM = "groups"


@dataclass(frozen=True)
class Client:
    client_id: str
    secret: str
    tenant: str | None
    roles: tuple[str, ...]


CLIENTS = {
    name: Client(name, f"secret-{name}", tenant, roles)
    for name, tenant, roles in (
        ("radiology-app", "radiology", (USER_ROLE,)),
        ("cardiology-app", "cardiology", (USER_ROLE,)),
        ("pathology-app", "pathology", (USER_ROLE,)),
        ("billing-app", "billing", ()),  # a valid token without the role
        ("prometheus", "monitoring", (METRICS_ROLE,)),
    )
}
PLAYGROUND_CLIENT = "lingshu-playground"


def signing_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(
        2048, parameters={"kid": kid, "alg": "RS256", "use": "sig"}, private=True
    )


def _claims(client: Client) -> dict[str, Any]:
    claims: dict[str, Any] = {"realm_access": {"roles": list(client.roles)}}
    if client.tenant:
        claims[TENANT_CLAIM] = [client.tenant]
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class OidcProvider:
    process: subprocess.Popen
    issuer: str
    keys: list[RSAKey]
    clients: list[dict[str, Any]] = field(default_factory=list)

    def token(self, client: str = "radiology-app", resource: str = AUDIENCE) -> str:
        """An access token by client credentials, as a service would get one."""
        found = CLIENTS[client]
        response = httpx.post(
            f"{self.issuer}/token",
            data={"grant_type": "client_credentials", "resource": resource},
            auth=(found.client_id, found.secret),
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def sign(
        self,
        claims: dict[str, Any] | None = None,
        *,
        key: RSAKey | None = None,
        header: dict[str, Any] | None = None,
        **changes: Any,
    ) -> str:
        """A token signed by the test with the provider's current key (or `key`): a valid
        radiology token unless `claims` or `changes` say otherwise (None removes a claim)."""
        key = key or self.keys[0]
        now = int(time.time())
        body = {
            "iss": self.issuer,
            "sub": "radiology-app",
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 300,
            "client_id": "radiology-app",
            **_claims(CLIENTS["radiology-app"]),
            **(claims or {}),
            **changes,
        }
        body = {name: value for name, value in body.items() if value is not None}
        return jwt.encode({"alg": "RS256", "kid": key.kid, **(header or {})}, body, key)

    def unsigned(self, **changes: Any) -> str:
        """The same claims with `alg: none` and no signature."""
        header, payload, _ = self.sign(**changes).split(".")
        return f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{payload}."

    def hs256_with_public_key(self) -> str:
        """Algorithm confusion: HS256 whose HMAC secret is the provider's public key (PEM),
        which anyone can download."""
        header = _b64(json.dumps({"alg": "HS256", "kid": self.keys[0].kid}).encode())
        payload = self.sign().split(".")[1]
        secret = self.keys[0].as_pem(private=False)
        mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(mac)}"

    def _control(self, what: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(f"{self.issuer}/_control/{what}", json=body or {}, timeout=10)
        response.raise_for_status()
        return response.json()

    def publish(self, keys: list[RSAKey]) -> None:
        """Serve `keys` as the key set, the first one signing new tokens (a rotation)."""
        self.keys = keys
        self._control("config", {"jwks": {"keys": [k.as_dict(private=True) for k in keys]}})

    def add_client(self, client: dict[str, Any]) -> None:
        self.clients.append(client)
        self._control("config", {"clients": self._all_clients()})

    def down(self) -> None:
        """Every request to the provider hangs from now on."""
        self._control("mode", {"mode": "hang"})

    def up(self) -> None:
        self._control("mode", {"mode": "up"})

    def jwks_requests(self) -> int:
        return self._control("stats")["jwks_requests"]

    def _all_clients(self) -> list[dict[str, Any]]:
        return [
            {
                "client_id": c.client_id,
                "client_secret": c.secret,
                "grant_types": ["client_credentials"],
                "redirect_uris": [],
                "response_types": [],
            }
            for c in CLIENTS.values()
        ] + self.clients

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


def node() -> str:
    found = require_tool("node", "nodejs")
    version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.fail(f"node {version.strip()} is older than 20: {INSTALL_HINT}", pytrace=False)
    if not (FOLDER / "node_modules" / "oidc-provider" / "package.json").is_file():
        pytest.fail(
            f"tests/identity/node_modules has no oidc-provider (npm ci): {INSTALL_HINT}",
            pytrace=False,
        )
    return found


def start_provider(log_path: Path) -> OidcProvider:
    keys = [signing_key("key-1")]
    config = {
        "jwks": {"keys": [k.as_dict(private=True) for k in keys]},
        "audiences": [AUDIENCE, OTHER_AUDIENCE],
        "ttl": 600,
        "claims": {
            **{c.client_id: _claims(c) for c in CLIENTS.values()},
            "user": _claims(CLIENTS["radiology-app"]),
        },
    }
    provider = OidcProvider(None, "", keys)  # type: ignore[arg-type]
    config["clients"] = provider._all_clients()
    log = log_path.open("wb")
    process = subprocess.Popen(
        [node(), str(FOLDER / "provider.mjs")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=FOLDER,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps(config).encode())
    process.stdin.close()
    line = process.stdout.readline()
    if not line:
        process.wait(10)
        raise RuntimeError(f"oidc-provider did not start:\n{log_path.read_text()[-3000:]}")
    provider.process, provider.issuer = process, json.loads(line)["issuer"]
    return provider
