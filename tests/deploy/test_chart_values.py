"""The chart's values: values.schema.json accepts every case and refuses typos, offers every
server setting, and every value carries a helm-docs comment."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml

from lingshu_server.core.settings import Settings
from tests.deploy.files import (
    CASES,
    CHART,
    SETTINGS_FIELDS,
    _chart,
    camel_to_snake,
    values_for,
    values_schema,
)


@pytest.mark.parametrize("case", CASES)
def test_values_validate_against_schema(case: str) -> None:
    values = values_for(case)
    merged = _chart().merge_values(values)
    jsonschema.Draft202012Validator(values_schema()).validate(merged)
    _chart().validate_schema(values)  # Helm's own validator, as `helm install` runs it


@pytest.mark.parametrize(
    "typo",
    [
        {"setings": {"maxModelLen": 8192}},
        {"settings": {"maxModelLenn": 8192}},
        {"parallelism": {"tensorParalelSize": 2}},
        {"multiNode": {"enabeld": True}},
        {"settings": {"gpuMemoryUtilization": 1.5}},
        {"extraEnv": {"LINGSHU_API_KEYS": "sk-in-a-configmap"}},
    ],
    ids=[
        "top-level",
        "settings-key",
        "parallelism-key",
        "multinode-key",
        "out-of-range",
        "key-env",
    ],
)
def test_schema_rejects_typos(typo: dict[str, Any]) -> None:
    merged = _chart().merge_values(typo)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(values_schema()).validate(merged)
    with pytest.raises(helm_python.HelmValuesError):
        _chart().validate_schema(typo)


# Settings the chart sets itself (model, parallelism, listen address, key file, PACS and FHIR
# server lists with their credentials files, the state volume and the database URL Secret, the
# TLS files of its `tls` section), not `settings`.
CHART_OWNED_SETTINGS = {
    "model", "served_model_name", "tensor_parallel_size", "pipeline_parallel_size",
    "distributed_executor_backend", "host", "port", "api_keys", "api_key_file",
    "dicomweb_urls", "dicomweb_auth", "fhir_urls", "fhir_auth", "state_dir", "database_url",
    "tls_cert_file", "tls_key_file", "tls_ca_file", "tls_client_auth",
}  # fmt: skip


def snake_to_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def test_schema_offers_every_server_setting() -> None:
    schema_settings = values_schema()["properties"]["settings"]["properties"]
    missing = sorted(
        SETTINGS_FIELDS - CHART_OWNED_SETTINGS - set(map(camel_to_snake, schema_settings))
    )
    if missing:
        server_schema = Settings.model_json_schema()["properties"]
        suggestion = {
            snake_to_camel(name): {
                "anyOf": [{"type": server_schema[name].get("type", "string")}, {"type": "null"}]
            }
            for name in missing
        }
        pytest.fail(
            "server settings the chart's values.schema.json does not offer under `settings`; add:\n"
            + json.dumps(suggestion, indent=2)
        )


def test_schema_settings_are_server_settings() -> None:
    schema_settings = values_schema()["properties"]["settings"]["properties"]
    unknown = {key for key in schema_settings if camel_to_snake(key) not in SETTINGS_FIELDS}
    assert not unknown, f"values.schema.json settings that the server does not have: {unknown}"
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["settings"]
    assert set(defaults) <= set(schema_settings)


def test_every_value_has_a_helm_docs_comment() -> None:
    """Every key of values.yaml (outside list items) sits under a `# --` comment block."""
    missing = []
    lines = (CHART / "values.yaml").read_text().splitlines()
    list_indent: int | None = None  # inside a list item deeper than this indent
    for number, line in enumerate(lines, 1):
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        if list_indent is not None and indent > list_indent:
            continue
        list_indent = None
        if stripped.startswith("- "):
            list_indent = indent
            continue
        if not re.match(r"[\w./-]+:", stripped):
            continue
        block = []
        for previous in reversed(lines[: number - 1]):
            if not previous.lstrip().startswith("#"):
                break
            block.append(previous.strip())
        if not any(comment.startswith("# --") for comment in block):
            missing.append(f"line {number}: {stripped}")
    assert not missing, "values without a `# --` comment:\n" + "\n".join(missing)
