"""Operator assets under deploy/: the Grafana dashboard and the Prometheus alert rules.

The rules are checked and unit-tested with promtool (Debian's `prometheus` package; CI installs
it, so a missing promtool fails rather than skips). Every metric name that the dashboard and the
rules use must exist in a live scrape of the test server's `/metrics`, so a rename can never
silently break a panel or an alert.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.utils.images import image_data_url, image_part
from tests.utils.tools import require_tool

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "lingshu-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"

REQUIRED_ALERTS = {
    "LingshuEngineDown",
    "LingshuHighErrorRate",
    "LingshuTTFTHigh",
    "LingshuQueueGrowing",
    "LingshuKVCacheSaturated",
}
SEVERITIES = {"critical", "warning", "info"}

# The metric contract: families as the Python client declares them, their types and labels.
VLLM = ("model_name", "engine")
CONTRACT = {
    "vllm:e2e_request_latency_seconds": ("histogram", VLLM),
    "vllm:time_to_first_token_seconds": ("histogram", VLLM),
    "vllm:inter_token_latency_seconds": ("histogram", VLLM),
    "vllm:request_time_per_output_token_seconds": ("histogram", VLLM),
    "vllm:request_queue_time_seconds": ("histogram", VLLM),
    "vllm:num_requests_running": ("gauge", VLLM),
    "vllm:num_requests_waiting": ("gauge", VLLM),
    "vllm:kv_cache_usage_perc": ("gauge", VLLM),
    "vllm:request_success": ("counter", (*VLLM, "finished_reason")),
    "vllm:prompt_tokens": ("counter", VLLM),
    "vllm:generation_tokens": ("counter", VLLM),
    "lingshu_requests": ("counter", ("route", "status")),
    "lingshu_request_duration_seconds": ("histogram", ("route",)),
    "lingshu_preprocess_seconds": ("histogram", ()),
    "lingshu_image_preprocess_seconds": ("histogram", ("format",)),
    "lingshu_request_image_bytes": ("histogram", ()),
    "lingshu_request_image_pixels": ("histogram", ()),
    "lingshu_request_image_tokens": ("histogram", ()),
    "lingshu_rejected_requests": ("counter", ("reason",)),
    "lingshu_requests_in_flight": ("gauge", ()),
    "lingshu_client_disconnects": ("counter", ()),
    "lingshu_prompt_tokens_cached": ("counter", ()),
    "lingshu_engine_healthy": ("gauge", ()),
    "lingshu_engine_loading": ("gauge", ()),
    "lingshu_requests_queued": ("gauge", ()),
    "lingshu_batches": ("gauge", ("status",)),
    "lingshu_batch_lines": ("counter", ("outcome",)),
    "lingshu_queue_depth": ("gauge", ("priority",)),
    "lingshu_build_info": ("gauge", ("version", "vllm_version", "model", "tensor_parallel_size")),
}

# Our metrics and vLLM's; `lingshu-server` (the job name) has a hyphen and never matches.
METRIC_NAME = re.compile(r"(?<![\w:])(vllm:[A-Za-z0-9_:]+|lingshu_[A-Za-z0-9_]+)")
GRAFANA_MACROS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+),\s*\w+\)", re.DOTALL)


# --- helpers ----------------------------------------------------------------------------------


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def load_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def all_panels(panels: Iterable[dict]) -> Iterator[dict]:
    """Every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def data_panels(dashboard: dict) -> list[dict]:
    return [p for p in all_panels(dashboard["panels"]) if p.get("type") != "row"]


def dashboard_exprs(dashboard: dict) -> list[str]:
    """PromQL of every panel target, plus the selectors of the label_values() variables."""
    exprs = [t["expr"] for p in data_panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("definition") or var["query"]
        query = query["query"] if isinstance(query, dict) else query
        match = LABEL_VALUES.fullmatch(query.strip())
        exprs.append(match["selector"] if match else query)
    return exprs


def alert_exprs() -> list[str]:
    return [rule["expr"] for rule in load_rules()]


def grafana_to_promql(expr: str) -> str:
    """Substitute Grafana's macros and template variables so that promtool can parse the query."""
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def referenced_metrics(exprs: Iterable[str]) -> set[str]:
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}


def scraped_sample_names(exposition: str) -> set[str]:
    """Series names a Prometheus scrape of this text would store.

    The parser names families without the suffixes (a counter `x_total` is family `x`, a
    histogram's `x_bucket`/`x_sum`/`x_count` are family `x`), but each sample keeps the full name
    that PromQL selects, so the samples' names are what the assets must match.
    """
    return {
        sample.name
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def missing_metrics(referenced: set[str], exposition: str) -> set[str]:
    return referenced - scraped_sample_names(exposition)


def contract_exposition() -> str:
    """What prometheus_client exposes for the contract, one labelled child of each metric."""
    registry = CollectorRegistry()
    for name, (kind, labels) in CONTRACT.items():
        metric = {"counter": Counter, "histogram": Histogram, "gauge": Gauge}[kind](
            name, name, labels, registry=registry
        )
        child = metric.labels(*["x"] * len(labels)) if labels else metric
        getattr(child, {"counter": "inc", "histogram": "observe", "gauge": "set"}[kind])(1)
    return generate_latest(registry).decode()


def run_promtool(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [require_tool("promtool", "prometheus"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


# --- alert rules ------------------------------------------------------------------------------


def test_promtool_check_rules():
    result = run_promtool("check", "rules", str(ALERTS))
    assert "SUCCESS" in result.stdout


def test_promtool_rule_unit_tests():
    result = run_promtool("test", "rules", str(ALERTS_TEST))
    assert "SUCCESS" in result.stdout


def test_every_alert_has_severity_and_runbook():
    rules = load_rules()
    names = [rule.get("alert") for rule in rules]
    assert None not in names, "alerts.yml holds only alerting rules"
    assert len(names) == len(set(names)), names
    assert REQUIRED_ALERTS <= set(names)
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        annotations = rule["annotations"]
        for key in ("summary", "description", "runbook"):
            assert annotations.get(key, "").strip(), f"{rule['alert']} lacks {key}"
        assert "\n" not in annotations["runbook"].strip(), f"{rule['alert']}: one-line runbook"
        assert "for" in rule, f"{rule['alert']} should not page on a single evaluation"


def test_every_alert_is_shown_firing_in_a_unit_test():
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    checks = [check for test in tests for check in test.get("alert_rule_test", [])]
    firing = {check["alertname"] for check in checks if check.get("exp_alerts")}
    quiet = {check["alertname"] for check in checks if not check.get("exp_alerts")}
    names = {rule["alert"] for rule in load_rules()}
    assert names <= firing, f"no firing case for {names - firing}"
    assert quiet, "at least one case must show an alert not firing"


# --- dashboard --------------------------------------------------------------------------------


def test_dashboard_structure():
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"

    ids = [p["id"] for p in all_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    panels = data_panels(dashboard)
    assert len(panels) >= 15
    for panel in panels:
        title = panel.get("title", "").strip()
        assert title, f"panel {panel['id']} has no title"
        assert panel.get("description", "").strip(), f"panel {title!r} has no description"
        assert panel.get("targets"), f"panel {title!r} has no targets"
        assert panel["datasource"]["uid"] == "${datasource}", title
        assert set(panel["gridPos"]) >= {"x", "y", "w", "h"}, title
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"panel {title!r} has an empty query"


def test_dashboard_queries_parse_as_promql(tmp_path):
    """promtool parses each query (Grafana variables substituted) as a recording rule."""
    exprs = dashboard_exprs(load_dashboard())
    rules = [
        {"record": f"dashboard_query_{i}", "expr": grafana_to_promql(expr)}
        for i, expr in enumerate(exprs)
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool("check", "rules", str(path))


def test_dashboard_covers_the_key_metrics():
    used = referenced_metrics(dashboard_exprs(load_dashboard()))
    for name in (
        "lingshu_requests_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "lingshu_image_preprocess_seconds_bucket",
        "lingshu_rejected_requests_total",
        "lingshu_requests_in_flight",
        "lingshu_client_disconnects_total",
        "lingshu_preprocess_seconds_sum",
        "lingshu_prompt_tokens_cached_total",
        "lingshu_engine_healthy",
        "lingshu_build_info",
    ):
        assert name in used, f"the dashboard does not chart {name}"


def test_assets_use_only_contract_metric_names():
    """Typos show up here without a server; the live test below is the real check."""
    used = referenced_metrics(dashboard_exprs(load_dashboard()) + alert_exprs())
    assert missing_metrics(used, contract_exposition()) == set()


# --- metric-name extraction, checked against a hand-made exposition ---------------------------

EXPOSITION = """\
# HELP lingshu_requests_total Requests answered.
# TYPE lingshu_requests_total counter
lingshu_requests_total{route="/v1/chat/completions",status="200"} 3.0
# HELP lingshu_requests_created Requests answered.
# TYPE lingshu_requests_created gauge
lingshu_requests_created{route="/v1/chat/completions",status="200"} 1.7e+09
# HELP lingshu_rejected_requests_total Requests refused.
# TYPE lingshu_rejected_requests_total counter
# HELP lingshu_preprocess_seconds Front-end time.
# TYPE lingshu_preprocess_seconds histogram
lingshu_preprocess_seconds_bucket{le="0.1"} 1.0
lingshu_preprocess_seconds_bucket{le="+Inf"} 1.0
lingshu_preprocess_seconds_count 1.0
lingshu_preprocess_seconds_sum 0.05
# HELP lingshu_build_info Build.
# TYPE lingshu_build_info gauge
lingshu_build_info{model="m",tensor_parallel_size="1",version="0.1.0",vllm_version="x"} 1.0
# HELP vllm:request_success_total Finished requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.1
# HELP vllm:e2e_request_latency_seconds Latency.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 0.5
vllm:e2e_request_latency_seconds_bucket{engine="0",le="1.0",model_name="m"} 2.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 2.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} 2.0
"""


def test_metric_name_extraction():
    exprs = [
        'sum by (status) (rate(lingshu_requests_total{job="lingshu-server"}[$__rate_interval]))',
        "histogram_quantile(0.95, sum by (le) "
        '(rate(vllm:e2e_request_latency_seconds_bucket{model_name=~"$model_name"}[5m])))',
        "sum(rate(vllm:request_success_total[5m]))"
        " / sum(rate(lingshu_preprocess_seconds_count[5m]))",
        'vllm:kv_cache_usage_perc{job="lingshu-server"} > 0.95',
        'lingshu_build_info{instance=~"$instance"}',
    ]
    assert referenced_metrics(exprs) == {
        "lingshu_requests_total",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:request_success_total",
        "lingshu_preprocess_seconds_count",
        "vllm:kv_cache_usage_perc",
        "lingshu_build_info",
    }
    assert missing_metrics(referenced_metrics(exprs), EXPOSITION) == set()


def test_missing_metric_names_are_caught():
    exprs = [
        "rate(lingshu_rejected_requests_total[5m])",  # declared, but no series yet
        "lingshu_preprocess_seconds",  # a histogram's bare name is no series
        "rate(vllm:request_success[5m])",  # a counter without _total
        "rate(lingshu_request_duration_seconds_sum[5m])",  # absent
    ]
    assert missing_metrics(referenced_metrics(exprs), EXPOSITION) == {
        "lingshu_rejected_requests_total",
        "lingshu_preprocess_seconds",
        "vllm:request_success",
        "lingshu_request_duration_seconds_sum",
    }


def test_grafana_queries_are_substituted():
    expr = 'rate(x{job=~"$job", instance=~"${instance}"}[$__rate_interval])'
    assert grafana_to_promql(expr) == 'rate(x{job=~".*", instance=~".*"}[5m])'
    query = 'label_values(vllm:num_requests_running{job=~"$job"}, model_name)'
    assert LABEL_VALUES.fullmatch(query)["selector"] == 'vllm:num_requests_running{job=~"$job"}'


# --- the live server --------------------------------------------------------------------------

CHAT = "/v1/chat/completions"


def send_traffic(client) -> None:
    """Requests that make every labelled series exist: text, a PNG, a rejection, a disconnect."""
    text = {"messages": [{"role": "user", "content": "Findings?"}], "max_tokens": 2}
    response = client.post(CHAT, json=text)
    assert response.status_code == 200, response.text

    content = [image_part(image_data_url(224, 224)), {"type": "text", "text": "Findings?"}]
    png = {"messages": [{"role": "user", "content": content}], "max_tokens": 2}
    response = client.post(CHAT, json=png)
    assert response.status_code == 200, response.text

    response = client.post(CHAT, json={"messages": []})
    assert response.status_code == 400, response.text

    abandoned = {**text, "max_tokens": 256, "stream": True}
    with client.stream("POST", CHAT, json=abandoned) as response:
        assert response.status_code == 200
        next(response.iter_lines())  # then close the connection mid-stream


@pytest.mark.e2e
def test_every_metric_in_the_assets_is_scraped(client):
    referenced = referenced_metrics(dashboard_exprs(load_dashboard()) + alert_exprs())
    assert referenced, "no metric names found in the assets"
    send_traffic(client)

    deadline = time.monotonic() + 20  # the engine's stats and the disconnect land shortly after
    while True:
        response = client.get("/metrics", follow_redirects=True)
        assert response.status_code == 200, response.text
        missing = missing_metrics(referenced, response.text)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    scraped = sorted(
        name
        for name in scraped_sample_names(response.text)
        if name.startswith(("lingshu_", "vllm:"))
    )
    assert not missing, (
        f"used by deploy/ but not in /metrics: {sorted(missing)}\nscraped: {scraped}"
    )
