"""PACS settings in the deploy files: the Helm values for PACS (and FHIR server) URLs and
credentials from Secrets, and the Compose profile that adds an Orthanc next to the server.
Rendered offline (helm-python-sdk), checked with kubernetes-validate and against the server's
own Settings."""

from __future__ import annotations

import functools
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

from lingshu_server.inputs.dicomweb import DicomWebSource
from tests.deploy.files import settings_from

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "lingshu-server"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
PACS_VALUES = {
    "dicomweb": {
        "pacs": [
            {
                "url": "https://pacs.example.internal/dicom-web",
                "auth": "basic",
                "existingSecret": "pacs-service-account",
            },
            {
                "url": "https://archive.example.internal:8443/wado",
                "auth": "bearer",
                "existingSecret": "archive-token",
                "existingSecretKey": "token",
            },
            {"url": "https://research.example.internal/dicomweb", "auth": "forward"},
        ]
    },
    "fhir": {
        "servers": [
            {"url": "https://ehr.example.internal/fhir", "auth": "forward"},
            {
                "url": "https://ehr.example.internal/fhir-ai",
                "auth": "bearer",
                "existingSecret": "fhir-token",
                "existingSecretKey": "token",
            },
        ]
    },
    "settings": {"dicomwebTimeout": 20, "dicomwebCacheBytes": 268435456, "fhirTimeout": 10},
}


@functools.cache
def _chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART)


@functools.cache
def values_validator() -> jsonschema.Draft202012Validator:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = _chart().render(values, name="lingshu", namespace="radiology")
    manifests = (text for path, text in rendered.items() if path.endswith(".yaml"))
    return [doc for text in manifests for doc in yaml.safe_load_all(text) if doc is not None]


def server_container(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    (deployment,) = (d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = (c for c in pod["containers"] if c["name"] == "lingshu-server")
    return pod, container


def config_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    (config,) = (d for d in docs if d["kind"] == "ConfigMap")
    return config["data"]


def test_helm_pacs_credentials_come_from_secrets_mounted_where_the_server_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = render(PACS_VALUES)
    settings = settings_from(config_env(docs), monkeypatch)
    assert settings.dicomweb_urls == [p["url"] for p in PACS_VALUES["dicomweb"]["pacs"]]
    assert settings.dicomweb_auth == [
        "basic:/etc/lingshu/dicomweb/0/credentials",
        "bearer:/etc/lingshu/dicomweb/1/token",
        "forward",
    ]
    assert (settings.dicomweb_timeout, settings.dicomweb_cache_bytes) == (20, 268435456)
    assert settings.fhir_urls == [s["url"] for s in PACS_VALUES["fhir"]["servers"]]
    assert settings.fhir_auth == ["forward", "bearer:/etc/lingshu/fhir/1/token"]
    assert settings.fhir_timeout == 10
    pod, container = server_container(docs)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    secrets = (
        ("dicomweb/0", "pacs-service-account", "credentials"),
        ("dicomweb/1", "archive-token", "token"),
        ("fhir/1", "fhir-token", "token"),
    )
    for folder, secret, key in secrets:
        mount = mounts[f"/etc/lingshu/{folder}"]
        assert mount["readOnly"] is True
        source = volumes[mount["name"]]["secret"]
        assert source["secretName"] == secret
        assert source["items"] == [{"key": key, "path": key}]  # a directory mount: rotates
    # forward: the callers bring their own credentials
    assert "dicomweb-2" not in volumes and "fhir-0" not in volumes
    # no credential is ever in the ConfigMap
    assert not any("secret" in value.lower() for value in config_env(docs).values())
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.utils.latest_version(), strict=True)


def test_helm_without_pacs_leaves_dicomweb_off(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render({})
    settings = settings_from(config_env(docs), monkeypatch)
    assert settings.dicomweb_urls == [] and settings.fhir_urls == []
    pod, container = server_container(docs)
    remote = ("dicomweb", "fhir")
    assert not any(v["name"].startswith(remote) for v in pod["volumes"])
    assert not any(m["name"].startswith(remote) for m in container["volumeMounts"])


@pytest.mark.parametrize(
    "pacs",
    [
        {"url": "https://pacs/dicom-web", "auth": "basic"},  # credentials but no Secret
        {"url": "https://pacs/dicom-web", "auth": "bearer", "existingSecret": ""},
        {"url": "https://pacs/dicom-web", "auth": "kerberos"},
        {"url": "pacs/dicom-web", "auth": "none"},
        {"url": "https://pacs/dicom-web?token=x", "auth": "none"},
        {"url": "https://pacs/dicom-web", "auth": "none", "password": "x"},
    ],
)
def test_helm_schema_refuses_unusable_pacs_entries(pacs: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        values_validator().validate({"dicomweb": {"pacs": [pacs]}})
    with pytest.raises(jsonschema.ValidationError):  # FHIR servers: the same rules
        values_validator().validate({"fhir": {"servers": [pacs]}})


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_pacs_profile_adds_orthanc_with_dicomweb_on_loopback_only() -> None:
    services = compose()["services"]
    orthanc = services["orthanc"]
    assert orthanc["profiles"] == ["pacs"]
    assert orthanc["environment"]["DICOM_WEB_PLUGIN_ENABLED"] == "true"
    root = orthanc["environment"]["ORTHANC__DICOM_WEB__ROOT"]
    assert all(port.startswith("127.0.0.1:") for port in orthanc["ports"])
    unprofiled = {name for name, service in services.items() if "profiles" not in service}
    assert unprofiled == {"lingshu-server", "prometheus", "alertmanager", "grafana"}
    # the URL the profile's instructions give the server is that service's DICOMweb root
    instructions = r"LINGSHU_DICOMWEB_URLS='(\S+)' docker compose --profile pacs"
    command = re.search(instructions, COMPOSE.read_text())
    assert command is not None
    url = yaml.safe_load(command.group(1))[0]
    assert url == f"http://orthanc:{orthanc['ports'][0].rsplit(':', 1)[1]}{root.rstrip('/')}"


@pytest.mark.parametrize(
    ("shell", "urls"),
    [
        ({}, []),
        (
            {"LINGSHU_DICOMWEB_URLS": '["http://orthanc:8042/dicom-web"]'},
            ["http://orthanc:8042/dicom-web"],
        ),
    ],
)
def test_compose_server_environment_turns_dicomweb_on_only_when_asked(
    shell: dict[str, str], urls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = compose()["services"]["lingshu-server"]["environment"]

    def substitute(value: str) -> str:
        return re.sub(
            r"\$\{(\w+):-([^}]*)\}", lambda m: shell.get(m.group(1), m.group(2)), str(value)
        )

    env = {name: substitute(value) for name, value in environment.items()}
    settings = settings_from(env, monkeypatch)
    assert settings.dicomweb_urls == urls
    assert settings.dicomweb_auth == ["none"]
    with ThreadPoolExecutor(1) as pool:
        source = DicomWebSource.from_settings(settings, pool, CollectorRegistry())
        for url in urls:
            assert source.match(f"{url}/studies/1.2/series/3.4", "param") is not None
