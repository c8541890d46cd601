"""The Compose stack (deploy/): YAML structure, settings and mounted files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.deploy.files import (
    ALERT_RULES,
    DASHBOARD,
    DEPLOY,
    compose,
    prometheus_config,
)
from tests.utils.tools import require_tool


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
    for service in compose()["services"]:
        for target, source in bind_mounts(service).items():
            path = (DEPLOY / source).resolve()
            assert path.exists(), f"{service} mounts {source} at {target}: missing"


def test_dashboard_and_rules_are_parseable() -> None:
    assert json.loads(DASHBOARD.read_text())["panels"]
    assert yaml.safe_load(ALERT_RULES.read_text())["groups"]


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool", "prometheus")
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
