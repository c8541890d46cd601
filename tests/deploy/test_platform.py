"""What platform teams expect of the chart: tensor parallel checked against the model's shape,
engine arguments passed through, the alert rules and dashboard as cluster objects, an Ingress
that keeps /metrics inside, conversation routing, topology spread, dynamic resource claims and a
`helm test` hook."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml

from lingshu_server.core.settings import Settings
from tests.deploy.files import (
    ALERT_RULES,
    CASES,
    DASHBOARD,
    _chart,
    chart_values,
    config_env,
    manifests,
    multinode_values,
    of_kind,
    one,
    pod_specs,
    render,
    rendered_case,
    values_for,
    values_schema,
)

# ---------- tensor parallel against the checkpoints' shapes ----------

# Qwen2.5-VL shapes of the Lingshu checkpoints: text attention heads, KV heads, text MLP width;
# the vision tower (16 heads, a 3420-wide MLP) is the same in both.
SHAPES = {
    "Lingshu-7B": {"heads": 28, "kv_heads": 4, "mlp": 18944},
    "Lingshu-32B": {"heads": 40, "kv_heads": 8, "mlp": 27648},
}
VISION_HEADS, VISION_MLP = 16, 3420


def tp_loads(tp: int, shape: dict[str, int]) -> bool:
    """vLLM's rules: TP divides the attention heads (ModelConfig.verify_with_parallel_config),
    the MLP widths (ColumnParallelLinear's divide), the vision heads; KV heads are split or
    replicated evenly."""
    kv = shape["kv_heads"]
    kv_ok = kv % tp == 0 if tp <= kv else tp % kv == 0
    widths = (shape["heads"], shape["mlp"], VISION_HEADS, VISION_MLP)
    return kv_ok and all(width % tp == 0 for width in widths)


def schema_accepts(values: dict[str, Any]) -> bool:
    try:
        jsonschema.Draft202012Validator(values_schema()).validate(chart_values(values))
    except jsonschema.ValidationError:
        return False
    return True


@pytest.mark.parametrize("case", [c for c in CASES if c != "default"] + ["default"])
def test_schema_accepts_exactly_the_tensor_parallel_sizes_the_model_loads_with(case: str) -> None:
    values = values_for(case)
    model = chart_values(values)["model"]["path"]
    shape = SHAPES[model]
    for tp in range(1, 17):
        changed = {**values, "parallelism": {"tensorParallelSize": tp}}
        assert schema_accepts(changed) == tp_loads(tp, shape), (case, tp)
    assert tp_loads(chart_values(values)["parallelism"]["tensorParallelSize"], shape)


def test_helm_refuses_a_tensor_parallel_size_that_does_not_divide_the_heads() -> None:
    values = {**values_for("lingshu-32b-tp4"), "parallelism": {"tensorParallelSize": 8}}
    with pytest.raises(helm_python.HelmValuesError):
        _chart().validate_schema(values)


# ---------- engine arguments ----------


def test_engine_args_reach_the_server_as_a_json_object(monkeypatch: pytest.MonkeyPatch) -> None:
    env = config_env(manifests(rendered_case("everything")))
    engine_args = values_for("everything")["settings"]["engineArgs"]
    assert json.loads(env["LINGSHU_ENGINE_ARGS"]) == engine_args
    monkeypatch.setenv("LINGSHU_ENGINE_ARGS", env["LINGSHU_ENGINE_ARGS"])
    assert Settings().engine_args == engine_args
    assert "LINGSHU_ENGINE_ARGS" not in config_env(manifests(rendered_case("default")))


# ---------- alert rules and dashboard ----------


def test_prometheus_rule_holds_the_alert_rules_for_the_releases_job() -> None:
    rule = one(manifests(rendered_case("everything")), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERT_RULES.read_text())["groups"]
    renamed = one(
        manifests(render({**values_for("everything"), "nameOverride": "radiology-vlm"})),
        "PrometheusRule",
    )
    exprs = [r["expr"] for g in renamed["spec"]["groups"] for r in g["rules"]]
    assert all('job="radiology-vlm"' in e and "lingshu-server" not in e for e in exprs)
    monitor = one(
        manifests(render({**values_for("everything"), "nameOverride": "radiology-vlm"})),
        "ServiceMonitor",
    )
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"  # job = the name label


def test_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    from tests.test_observability_assets import run_promtool

    rule = one(manifests(rendered_case("everything")), "PrometheusRule")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    assert "SUCCESS" in run_promtool("check", "rules", str(path)).stdout


def test_dashboard_configmap_for_the_grafana_sidecar() -> None:
    docs = manifests(rendered_case("everything"))
    (dashboard,) = [
        c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"]["grafana_folder"] == "Lingshu"
    assert json.loads(dashboard["data"]["lingshu-dashboard.json"]) == json.loads(
        DASHBOARD.read_text()
    )


# ---------- exposure and routing ----------


@pytest.mark.parametrize("case", CASES)
def test_ingress_never_routes_metrics(case: str) -> None:
    for ingress in of_kind(manifests(rendered_case(case)), "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                prefix = path["path"].rstrip("/") + "/"
                routes_metrics = (
                    path["path"] == "/metrics"
                    if path["pathType"] == "Exact"
                    else "/metrics/".startswith(prefix)
                )
                assert not routes_metrics, (case, path)


@pytest.mark.parametrize(
    "path",
    [
        ("/", "Prefix"),
        ("/metrics", "Exact"),
        ("/metrics/", "Prefix"),
        ("/", "ImplementationSpecific"),
    ],
)
def test_ingress_paths_that_route_metrics_are_refused(path: tuple[str, str]) -> None:
    hosts = [
        {"host": "lingshu.example.internal", "paths": [{"path": path[0], "pathType": path[1]}]}
    ]
    with pytest.raises(helm_python.HelmError, match="/metrics"):
        render({"ingress": {"enabled": True, "hosts": hosts}})


def test_conversation_routing_by_client_address_or_header() -> None:
    service = one(manifests(render({"routing": {"sessionAffinity": "clientIP"}})), "Service")
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    assert service["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] == 3600
    docs = manifests(rendered_case("everything"))
    annotations = one(docs, "Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$http_x_session_id"
    assert "sessionAffinity" not in one(docs, "Service")["spec"]
    with pytest.raises(helm_python.HelmError, match="ingress-nginx"):
        render({"routing": {"sessionAffinity": "header"}})


def test_topology_spread_selects_the_releases_serving_pods() -> None:
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
        }
    ]
    for values in (
        {"topologySpreadConstraints": spread},
        multinode_values(topologySpreadConstraints=spread),
    ):
        docs = manifests(render(values))
        (service,) = of_kind(docs, "Service")
        for where, spec in pod_specs(docs):
            (constraint,) = spec["topologySpreadConstraints"]
            assert constraint["labelSelector"]["matchLabels"] == service["spec"]["selector"], where
    given = [{**spread[0], "labelSelector": {"matchLabels": {"team": "radiology"}}}]
    (deployment,) = of_kind(manifests(render({"topologySpreadConstraints": given})), "Deployment")
    assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"] == given


def test_dynamic_resource_claims_reach_the_pod() -> None:
    values = {
        "gpuResourceName": "",
        "resourceClaims": [{"name": "gpus", "resourceClaimTemplateName": "one-h100"}],
        "resources": {"claims": [{"name": "gpus"}]},
    }
    (deployment,) = of_kind(manifests(render(values)), "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["resourceClaims"] == values["resourceClaims"]
    (server,) = spec["containers"]
    assert server["resources"]["claims"] == [{"name": "gpus"}]
    assert "nvidia.com/gpu" not in server["resources"]["limits"]
    with pytest.raises(helm_python.HelmError, match="resourceClaims does not define"):
        render({"resources": {"claims": [{"name": "gpus"}]}})


# ---------- helm test ----------


def helm_test_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (pod,) = of_kind(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    return pod


@pytest.mark.parametrize("case", CASES)
def test_helm_test_pod_is_a_hook_outside_every_selector(case: str) -> None:
    docs = manifests(rendered_case(case))
    pod = helm_test_pod(docs)
    labels = pod["metadata"]["labels"]
    selectors = [s["spec"]["selector"] for s in of_kind(docs, "Service")]
    selectors += [
        d["spec"]["selector"]["matchLabels"] for d in of_kind(docs, "PodDisruptionBudget")
    ]
    selectors += [
        d["spec"]["selector"]["matchLabels"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    ]
    assert not any(s.items() <= labels.items() for s in selectors)
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    for policy in of_kind(docs, "NetworkPolicy"):
        peers = [
            p.get("podSelector", {}).get("matchLabels")
            for p in policy["spec"]["ingress"][0]["from"]
        ]
        assert any(p is not None and p.items() <= labels.items() for p in peers), "allowed in"


def run_helm_test(
    pod: dict[str, Any], url: str, key_file: Path | None
) -> subprocess.CompletedProcess:
    """The hook's container command with its environment, the Service URL and key file replaced."""
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    env["LINGSHU_TEST_URL"] = url
    if key_file is not None:
        env["LINGSHU_TEST_KEY_FILE"] = str(key_file)
    else:
        env.pop("LINGSHU_TEST_KEY_FILE", None)
    python, *args = container["command"]
    assert python == "python3"
    return subprocess.run(
        ["python3", *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_helm_test_passes_against_a_running_server(secured) -> None:
    pod = helm_test_pod(manifests(render({"model": {"servedModelName": ["lingshu-demo"]}})))
    result = run_helm_test(pod, secured.base_url, secured.key_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GET /health: 200" in result.stdout and "GET /v1/models: 200" in result.stdout
    assert not any(
        key in result.stdout + result.stderr for key in secured.key_file.read_text().split()
    )


def test_helm_test_fails_on_a_wrong_model_or_key(secured, tmp_path: Path) -> None:
    pod = helm_test_pod(manifests(rendered_case("default")))  # expects Lingshu-7B
    wrong_model = run_helm_test(pod, secured.base_url, secured.key_file)
    assert wrong_model.returncode == 1 and "without 'Lingshu-7B'" in wrong_model.stderr
    bad_key = tmp_path / "keys"
    bad_key.write_text("sk-not-a-key-of-this-server\n")
    pod = helm_test_pod(manifests(render({"model": {"servedModelName": ["lingshu-demo"]}})))
    refused = run_helm_test(pod, secured.base_url, bad_key)
    assert refused.returncode == 1 and "/v1/models answered 401" in refused.stderr
