"""The Compose stack (deploy/): YAML structure, settings and mounted files."""

from __future__ import annotations

import json
import math
import re
import shutil
import stat
import subprocess
from pathlib import Path

import yaml

from lingshu_server.serve import MIN_CONNECTION_CLOSE_S
from tests.deploy.files import (
    ALERT_RULES,
    DASHBOARD,
    DEPLOY,
    ENGINE_EXIT_S,
    ROOT,
    compose,
    compose_config,
    final_stage_value,
    prometheus_config,
)
from tests.utils.tools import require_tool

ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"


def bind_mounts(service: str) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts (relative to deploy/), with
    ${NAME:-default} as its default."""
    mounts = {}
    for volume in compose()["services"][service].get("volumes", []):
        source, target, *_ = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", volume).split(":")
        if source.startswith((".", "/")):
            mounts[target] = source
    return mounts


def test_compose_server_service() -> None:
    server = compose()["services"]["lingshu-server"]
    assert server["build"] == {"context": "..", "dockerfile": "Dockerfile"}
    (device,) = server["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    env = server["environment"]
    # One GPU per tensor-parallel rank: both follow the same variable and default.
    assert device["count"] == env["LINGSHU_TENSOR_PARALLEL_SIZE"] == "${LINGSHU_TP:-1}"
    assert "LINGSHU_API_KEYS" not in env
    (secret,) = server["secrets"]
    assert env["LINGSHU_API_KEY_FILE"] == f"/run/secrets/{secret}"
    assert "file" in compose()["secrets"][secret]
    assert any(v.endswith(":/models:ro") for v in server["volumes"]), "weights read-only"
    assert server["read_only"] is True and server["shm_size"]
    assert "/health" in " ".join(server["healthcheck"]["test"])
    grace = int(server["stop_grace_period"].rstrip("s"))
    drain = math.ceil(float(env["LINGSHU_DRAIN_TIMEOUT"]))
    assert grace >= drain + MIN_CONNECTION_CLOSE_S + ENGINE_EXIT_S


def test_compose_file_is_valid_for_compose() -> None:
    """Compose v2 itself parses, validates and resolves the file with the `pacs` profile (the
    default and the `postgres` profile, which needs its env files: test_stored_state.py)."""
    services = compose_config(DEPLOY, "pacs")["services"]
    assert {"lingshu-server", "prometheus", "alertmanager", "grafana", "orthanc"} <= set(services)


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
    user_data = {f"./{line.rstrip('/')}" for line in (DEPLOY / ".gitignore").read_text().split()}
    for service in compose()["services"]:
        for target, source in bind_mounts(service).items():
            if source in user_data:  # the operator's weights, never in the repository
                continue
            assert (DEPLOY / source).exists(), f"{service} mounts {source} at {target}: missing"


def test_dashboard_and_rules_are_parseable() -> None:
    assert json.loads(DASHBOARD.read_text())["panels"]
    assert yaml.safe_load(ALERT_RULES.read_text())["groups"]


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    # The config names the rules file at its path inside the container: point it at the file here.
    config = prometheus_config() | {"rule_files": [str(ALERT_RULES)]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [
            require_tool("promtool", "prometheus"),
            "check",
            "config",
            str(tmp_path / "prometheus.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_are_routed_to_alertmanager() -> None:
    (alertmanagers,) = prometheus_config()["alerting"]["alertmanagers"]
    (target,) = alertmanagers["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in compose()["services"]
    assert any(p.endswith(f":{port}:{port}") for p in compose()["services"][host]["ports"])
    config_target = "/etc/alertmanager/alertmanager.yml"
    assert f"--config.file={config_target}" in compose()["services"][host]["command"]
    assert (DEPLOY / bind_mounts(host)[config_target]).resolve() == ALERTMANAGER
    result = subprocess.run(
        [require_tool("amtool", "prometheus-alertmanager"), "check-config", str(ALERTMANAGER)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    route = yaml.safe_load(ALERTMANAGER.read_text())["route"]
    receivers = {r["name"] for r in yaml.safe_load(ALERTMANAGER.read_text())["receivers"]}
    assert route["receiver"] in receivers


def test_new_api_key_is_readable_by_the_container_user_and_nobody_else(tmp_path: Path) -> None:
    script = tmp_path / "new-api-key.sh"
    shutil.copy(DEPLOY / "new-api-key.sh", script)
    result = subprocess.run([str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    key_file = tmp_path / "secrets" / "api-keys"
    info = key_file.stat()
    assert info.st_uid == int(final_stage_value("USER").split(":")[0])
    assert stat.S_IMODE(info.st_mode) == 0o640, oct(info.st_mode)
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    (key,) = key_file.read_text().splitlines()
    assert re.fullmatch(r"lsk-[0-9a-f]{64}", key)
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    documented = "".join(path.read_text() for path in [DEPLOY / "docker-compose.yml", *pages])
    assert "0644" not in documented, "a documented command makes a key file world-readable"
