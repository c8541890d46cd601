"""The rendered manifests: helm lint, kubernetes-validate (strict) for built-in kinds, CRD field
schemas for custom resources, and what matters in them (GPUs, probes, security, secrets)."""

from __future__ import annotations

import base64
import re
import subprocess
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
from fastapi import APIRouter

import lingshu_server.http.routes
from tests.deploy.files import (
    CASES,
    CHART,
    KUBE_VERSIONS,
    LITERAL_KEY,
    NAMESPACE,
    SECRET_NAME,
    _chart,
    compose,
    config_env,
    final_stage_env,
    final_stage_value,
    manifests,
    of_kind,
    pod_specs,
    prometheus_config,
    render,
    rendered_case,
    serving_containers,
    values_for,
)


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
                            "oauth2": _OBJ,
                        }
                    ),
                },
            },
            ["selector", "endpoints"],
        )
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _resource(
        _closed(
            {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": _closed(
                        {
                            "name": _STR,
                            "interval": _DURATION,
                            "rules": {
                                "type": "array",
                                "items": _closed(
                                    {
                                        "alert": _STR,
                                        "record": _STR,
                                        "expr": {"type": ["string", "integer"]},
                                        "for": _DURATION,
                                        "keep_firing_for": _DURATION,
                                        "labels": {
                                            "type": "object",
                                            "additionalProperties": _STR,
                                        },
                                        "annotations": {
                                            "type": "object",
                                            "additionalProperties": _STR,
                                        },
                                    },
                                    ["expr"],
                                ),
                            },
                        },
                        ["name", "rules"],
                    ),
                }
            },
            ["groups"],
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
        "ConfigMap", "Secret", "ServiceAccount", "Service", "Deployment", "StatefulSet",
        "LeaderWorkerSet", "HorizontalPodAutoscaler", "ScaledObject", "PodDisruptionBudget",
        "ServiceMonitor", "PrometheusRule", "NetworkPolicy", "Ingress", "Pod",
    }  # fmt: skip
    assert expected <= kinds, expected - kinds


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
    port = re.search(r"ray start --head .*--port=(\d+)", leader_script).group(1)
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
    """Paths of every APIRouter in lingshu_server.http.routes (`router`, or `v1` and `public`)."""
    routers = [r for r in vars(lingshu_server.http.routes).values() if isinstance(r, APIRouter)]
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
        for pod in of_kind(docs, "Pod"):  # the `helm test` hook
            for path in re.findall(
                r"\{base\}(/[\w/]+)", pod["spec"]["containers"][0]["command"][-1]
            ):
                used.setdefault(path, set()).add(f"{case} helm test")
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
    assert set(deploy_http_paths()) == {"/health", "/ready", "/metrics", "/v1/models"}


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/v1/models"])
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
    assert init["command"][:2] == ["sh", "-c"] and "\nhf download " in init["command"][2]
    (token,) = [v for v in init["env"] if v["name"] == "HF_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert not [m for m in init["volumeMounts"] if m.get("readOnly")], "it writes the weights"


@pytest.mark.parametrize(
    ("model", "downloaders"),
    [
        ({"existingClaim": "shared-rwx", "existingClaimAccessMode": "ReadWriteMany"}, 1),
        ({"existingClaim": ""}, 2),
        ({"existingClaim": "", "perReplicaCache": {"enabled": True}}, 2),
    ],
    ids=["shared-claim", "empty-dirs", "per-replica-claims"],
)
def test_multinode_download_runs_once_per_volume(model: dict[str, Any], downloaders: int) -> None:
    values = values_for("multinode")
    values["model"] |= {**model, "download": {"enabled": True}}
    (lws,) = of_kind(manifests(render(values)), "LeaderWorkerSet")
    lwt = lws["spec"]["leaderWorkerTemplate"]
    roles = [lwt[role]["spec"] for role in ("leaderTemplate", "workerTemplate")]
    assert sum(len(spec.get("initContainers", [])) for spec in roles) == downloaders
    assert roles[0]["initContainers"][0]["name"] == "download-model"
