"""docs/operations/identity.md as written: the Keycloak and Entra ID configurations are valid
settings with the meaning the page gives them, the key file and quota examples are read by the
server as the page says, and the token example runs against the real provider and a server
(the fake engine: only the sign-in is under test). The Compose defaults leave identity off."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from lingshu_server.core.quotas import TenantQuota
from lingshu_server.http.auth import _parse_keys
from tests.deploy.files import COMPOSE
from tests.utils.docs import fenced_blocks, on_server, page, run_bash
from tests.utils.oidc_provider import CLIENTS

# The fake engine (only the sign-in is under test), but outside the fast tier, which stays under
# its 90 s: the examples' shell runs and their server would add seconds there; beside the engine
# tests they add no wall time.
pytestmark = [pytest.mark.e2e, pytest.mark.beside_engine]

PAGE = "operations/identity.md"
SHOW_SETTINGS = (
    f"{sys.executable} -c 'import json; from lingshu_server.core.settings import Settings; "
    'print(Settings(model="m").model_dump_json())\''
)


def settings_of(block: str) -> dict:
    """The settings a server started after `block` (in the same shell) would have."""
    return json.loads(run_bash(f"{block}\n{SHOW_SETTINGS}", Path.cwd()))


def test_the_keycloak_and_entra_configurations():
    keycloak, entra, _ = fenced_blocks("bash", page(PAGE))
    found = settings_of(keycloak)
    assert found["oidc_issuers"] == ["https://keycloak.hospital.example/realms/hospital"]
    assert found["oidc_roles_claim"] == "realm_access.roles"
    assert found["oidc_required_roles"] == ["lingshu-user"]
    assert found["oidc_tenant_claim"] == "groups"
    found = settings_of(entra)
    assert found["oidc_issuers"][0].startswith("https://login.microsoftonline.com/")
    assert found["oidc_issuers"][0].endswith("/v2.0")
    assert len(found["oidc_audiences"]) == 2
    assert found["oidc_roles_claim"] == "roles"
    assert found["oidc_playground_scope"] == "openid api://lingshu-server/.default"


def test_the_key_file_and_quota_examples():
    (key_file,) = fenced_blocks("text", page(PAGE))
    keys = _parse_keys(key_file, None)
    assert [key.tenant for key in keys] == ["radiology", "cardiology", None]
    (quotas,) = fenced_blocks("json", page(PAGE))
    parsed = {name: TenantQuota(**value) for name, value in json.loads(quotas).items()}
    assert parsed["radiology"].tokens_per_day == 20_000_000
    assert parsed["*"].concurrent_requests == 4


def test_the_token_example_runs_against_the_provider(guarded, provider, tmp_path):
    example = fenced_blocks("bash", page(PAGE))[2]
    keycloak_token = (
        "https://keycloak.hospital.example/realms/hospital/protocol/openid-connect/token"
    )
    assert keycloak_token in example
    script = on_server(example.replace(keycloak_token, f"{provider.issuer}/token"), guarded.port)
    client = CLIENTS["radiology-app"]
    out = run_bash(
        script, tmp_path, {"CLIENT_ID": client.client_id, "CLIENT_SECRET": client.secret}
    )
    answer = json.loads(out)
    assert answer["object"] == "chat.completion"
    assert answer["usage"]["completion_tokens"] > 0


def test_the_compose_defaults_leave_identity_off():
    environment = yaml.safe_load(COMPOSE.read_text())["services"]["lingshu-server"]["environment"]
    ours = {k: v for k, v in environment.items() if "OIDC" in k or "QUOTAS" in k}
    assert len(ours) == 6
    defaults = "\n".join(
        f"export {name}='{value.split(':-', 1)[1].removesuffix('}')}'"
        for name, value in ours.items()
    )
    found = settings_of(defaults)
    assert found["oidc_issuers"] == [] and found["tenant_quotas"] == {}
    assert found["oidc_tenant_claim"] is None and found["oidc_roles_claim"] == "scope"
