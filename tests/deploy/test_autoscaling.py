"""Autoscaling and the queue alert watch the server's own admission queue and in-flight count
(vLLM's waiting count stays near 0 while admission control holds load in the front end)."""

from __future__ import annotations

import re
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lingshu_server.core.metrics import Metrics
from lingshu_server.core.settings import Settings
from tests.deploy.files import (
    ALERT_RULES,
    DEPLOY,
    NAMESPACE,
    chart_values,
    manifests,
    multinode_values,
    of_kind,
    one,
    render,
    rendered_case,
    values_for,
    values_schema,
)

# A custom-metrics API name is a URL path segment: prometheus-adapter serves no colons.
CUSTOM_METRIC_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
QUEUE_METRICS = {"lingshu_requests_queued", "lingshu_requests_in_flight"}
# Several replicas read the weights: a claim that attaches to several nodes.
SHARED_MODEL = {"existingClaimAccessMode": "ReadOnlyMany"}
# ... and a database every replica can open (PostgreSQL, not SQLite).
SHARED_STATE = {"databaseUrlSecret": {"name": "lingshu-database"}}


def server_gauges() -> set[str]:
    """Gauges a lingshu-server exposes on /metrics (its own registry)."""
    exposition = Metrics().exposition().decode()
    return {f.name for f in text_string_to_metric_families(exposition) if f.type == "gauge"}


def default_in_flight_target() -> int:
    return Settings.model_fields["max_concurrent_requests"].default * 3 // 4


def test_hpa_scales_on_the_servers_queue_and_in_flight_gauges() -> None:
    hpa = one(manifests(rendered_case("lingshu-7b")), "HorizontalPodAutoscaler")
    targets = {m["pods"]["metric"]["name"]: m["pods"]["target"] for m in hpa["spec"]["metrics"]}
    assert set(targets) == QUEUE_METRICS
    assert QUEUE_METRICS <= server_gauges()
    assert all(CUSTOM_METRIC_NAME.match(name) for name in targets)
    max_concurrent = values_for("lingshu-7b")["settings"]["maxConcurrentRequests"]
    in_flight = float(targets["lingshu_requests_in_flight"]["averageValue"])
    assert 0 < in_flight <= max_concurrent, "scale out before requests have to queue"
    assert all(t["type"] == "AverageValue" for t in targets.values())


def test_in_flight_target_defaults_to_three_quarters_of_the_admission_limit() -> None:
    values = {"model": SHARED_MODEL, "state": SHARED_STATE, "autoscaling": {"enabled": True}}
    hpa = one(manifests(render(values)), "HorizontalPodAutoscaler")
    (in_flight,) = [
        m["pods"]["target"]["averageValue"]
        for m in hpa["spec"]["metrics"]
        if m["pods"]["metric"]["name"] == "lingshu_requests_in_flight"
    ]
    assert in_flight == str(default_in_flight_target())
    with pytest.raises(helm_python.HelmError, match="maxConcurrentRequests"):
        render({"model": SHARED_MODEL, "autoscaling": {"enabled": True, "inFlightTarget": "80"}})


@pytest.mark.parametrize("name", ["vllm:num_requests_waiting", "lingshu requests"])
def test_schema_refuses_metric_names_the_adapter_cannot_serve(name: str) -> None:
    values = chart_values({"autoscaling": {"enabled": True, "queuedMetricName": name}})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(values_schema()).validate(values)


def keda_triggers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in one(docs, "ScaledObject")["spec"]["triggers"]}


@pytest.mark.parametrize("case", ["everything", "multinode-keda"])
def test_keda_queries_the_releases_queue_and_in_flight(case: str) -> None:
    if case == "multinode-keda":
        docs = manifests(render(multinode_values(keda={"enabled": True})))
    else:
        docs = manifests(rendered_case(case))
    (service,) = of_kind(docs, "Service")
    selector = f'namespace="{NAMESPACE}",service="{service["metadata"]["name"]}"'
    triggers = keda_triggers(docs)
    assert triggers["queued"]["metadata"]["query"] == f"sum(lingshu_requests_queued{{{selector}}})"
    assert (
        triggers["in-flight"]["metadata"]["query"]
        == f"sum(lingshu_requests_in_flight{{{selector}}})"
    )
    for trigger in triggers.values():
        assert "vllm:" not in trigger["metadata"]["query"]
        # KEDA's fallback works only with AverageValue triggers.
        assert trigger["metricType"] == "AverageValue"


def test_keda_falls_back_and_scales_down_slowly() -> None:
    spec = one(manifests(rendered_case("everything")), "ScaledObject")["spec"]
    fallback = spec["fallback"]
    assert spec["minReplicaCount"] <= fallback["replicas"] <= spec["maxReplicaCount"]
    assert fallback["failureThreshold"] >= 1
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert "idleReplicaCount" not in spec  # cooldownPeriod matters only for idle scaling


def test_keda_never_scales_to_a_count_it_cannot_wake_from() -> None:
    values = chart_values({"keda": {"enabled": True, "minReplicaCount": 0}})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(values_schema()).validate(values)
    with pytest.raises(helm_python.HelmError, match="extraTriggers"):
        render({"model": SHARED_MODEL, "keda": {"enabled": True, "idleReplicaCount": 0}})
    wake = {
        "type": "prometheus",
        "name": "ingress-requests",
        "metadata": {
            "serverAddress": "http://prometheus-operated.monitoring.svc:9090",
            "query": 'sum(rate(nginx_ingress_controller_requests{ingress="lingshu"}[2m]))',
            "threshold": "1",
        },
    }
    keda = {"enabled": True, "idleReplicaCount": 0, "extraTriggers": [wake]}
    docs = manifests(render({"model": SHARED_MODEL, "state": SHARED_STATE, "keda": keda}))
    spec = one(docs, "ScaledObject")["spec"]
    assert spec["idleReplicaCount"] == 0 < spec["minReplicaCount"]
    assert spec["cooldownPeriod"] > 0 and spec["initialCooldownPeriod"] > 0
    assert keda_triggers(docs)["ingress-requests"]["metadata"] == wake["metadata"]


def test_queue_alert_watches_the_admission_queue() -> None:
    rules = {
        r["alert"]: r for g in yaml.safe_load(ALERT_RULES.read_text())["groups"] for r in g["rules"]
    }
    expr = rules["LingshuQueueGrowing"]["expr"]
    assert "lingshu_requests_queued" in expr and "vllm:num_requests_waiting" not in expr
    # alerts_test.yml shows it firing while vLLM's own queue stays empty (run by promtool in
    # tests/test_observability_assets.py).
    cases = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())["tests"]
    firing_with_empty_engine_queue = [
        case
        for case in cases
        if any(
            check["alertname"] == "LingshuQueueGrowing" and check.get("exp_alerts")
            for check in case.get("alert_rule_test", [])
        )
        and any(
            s["series"].startswith("vllm:num_requests_waiting")
            and set(s["values"].split()) == {"0x30"}
            for s in case["input_series"]
        )
    ]
    assert firing_with_empty_engine_queue
