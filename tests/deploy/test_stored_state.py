"""Where stored responses live in the deploy files: SQLite on a state volume for one replica (the
chart refuses more), PostgreSQL from a Secret for many, and the Compose stack's two ways."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import pytest
from sqlalchemy.engine import make_url

from tests.deploy.files import (
    COMPOSE,
    DEPLOY,
    compose_config,
    config_env,
    final_stage_env,
    lws_templates,
    manifests,
    multinode_values,
    of_kind,
    one,
    pod_specs,
    render,
    rendered_case,
    settings_from,
)

SHARED_MODEL = {"existingClaimAccessMode": "ReadOnlyMany"}
DATABASE = {"databaseUrlSecret": {"name": "lingshu-database", "key": "url"}}
SQLITE = {"databaseUrlSecret": {"name": ""}}
URL = "postgresql+asyncpg://lingshu:s3cret@postgres.example.internal:5432/lingshu"


def server_container(spec: dict[str, Any]) -> dict[str, Any]:
    (server,) = [c for c in spec["containers"] if c["name"] == "lingshu-server"]
    return server


# ---------- Helm: SQLite, one replica ----------


@pytest.mark.parametrize(
    ("values", "knob"),
    [
        ({"replicaCount": 2}, "2 replicas would run (replicaCount)"),
        ({"autoscaling": {"enabled": True, "maxReplicas": 3}}, "(autoscaling.maxReplicas)"),
        ({"keda": {"enabled": True, "maxReplicaCount": 5}}, "(keda.maxReplicaCount)"),
        ("multinode-two-groups", "(replicaCount)"),
    ],
    ids=["replicas", "hpa", "keda", "multinode"],
)
def test_sqlite_with_more_than_one_replica_is_refused(values: Any, knob: str) -> None:
    if values == "multinode-two-groups":
        values = multinode_values(replicaCount=2, state=SQLITE)
    else:
        values = {"model": SHARED_MODEL, **values}
    with pytest.raises(helm_python.HelmError, match="only one server may open") as refusal:
        render(values)
    assert knob in str(refusal.value) and "state.databaseUrlSecret" in str(refusal.value)
    values["state"] = DATABASE
    assert manifests(render(values))  # the same layout on PostgreSQL


def test_sqlite_state_is_a_claim_mounted_at_the_state_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = manifests(rendered_case("default"))
    claim = one(docs, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    deployment = one(docs, "Deployment")
    # One server holds the database file at a time: the old pod goes before the new one starts.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    spec = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"]}
    mounts = {m["name"]: m for m in server_container(spec)["volumeMounts"]}
    settings = settings_from(config_env(docs), monkeypatch)
    assert settings.database_url is None
    assert Path(mounts["state"]["mountPath"]) == settings.state_dir
    assert not mounts["state"].get("readOnly")


def test_sqlite_state_on_an_existing_claim_or_an_empty_dir() -> None:
    existing = {"state": {"persistence": {"existingClaim": "lingshu-state-kept"}}}
    docs = manifests(render(existing))
    assert not of_kind(docs, "PersistentVolumeClaim")
    ((_, spec),) = pod_specs(docs)
    (state,) = [v for v in spec["volumes"] if v["name"] == "state"]
    assert state["persistentVolumeClaim"]["claimName"] == "lingshu-state-kept"
    trying_out = {"state": {"persistence": {"enabled": False, "size": "2Gi"}}}
    docs = manifests(render(trying_out))
    assert not of_kind(docs, "PersistentVolumeClaim")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"  # nothing shared to wait for
    spec = deployment["spec"]["template"]["spec"]
    (state,) = [v for v in spec["volumes"] if v["name"] == "state"]
    assert state["emptyDir"] == {"sizeLimit": "2Gi"}


def test_multinode_sqlite_state_is_the_leaders_alone() -> None:
    lws = one(manifests(render(multinode_values(state=SQLITE))), "LeaderWorkerSet")
    assert lws["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"] == {
        "maxSurge": 0,
        "maxUnavailable": 1,
    }
    leader, worker = lws_templates(lws)
    assert "state" in {v["name"] for v in leader["spec"]["volumes"]}
    assert "state" in {m["name"] for m in leader["spec"]["containers"][0]["volumeMounts"]}
    assert "state" not in {v["name"] for v in worker["spec"]["volumes"]}


# ---------- Helm: PostgreSQL from a Secret ----------


@pytest.mark.parametrize("layout", ["deployment", "multinode"])
def test_database_url_reaches_only_the_server_from_its_secret(
    layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = (
        multinode_values(state=DATABASE)
        if layout == "multinode"
        else {"model": SHARED_MODEL, "replicaCount": 3, "state": DATABASE}
    )
    docs = manifests(render(values))
    env = config_env(docs)
    assert "LINGSHU_DATABASE_URL" not in env and "LINGSHU_STATE_DIR" not in env
    assert not of_kind(docs, "PersistentVolumeClaim")
    found = []
    for where, spec in pod_specs(docs):
        assert "state" not in {v["name"] for v in spec["volumes"]}, where
        for container in spec["containers"] + spec.get("initContainers", []):
            for variable in container.get("env", []):
                if variable["name"] == "LINGSHU_DATABASE_URL":
                    found.append(container["name"])
                    reference = variable["valueFrom"]["secretKeyRef"]
                    assert reference == {"name": "lingshu-database", "key": "url"}
    assert found == ["lingshu-server"], "the server container, and nothing else, gets the URL"
    settings = settings_from({**env, "LINGSHU_DATABASE_URL": URL}, monkeypatch)
    assert settings.database_url == URL


# ---------- Compose ----------


def compose_copy(tmp_path: Path) -> Path:
    """deploy/'s Compose file and scripts in a folder of their own, to write secrets/ into."""
    folder = tmp_path / "deploy"
    folder.mkdir()
    shutil.copy(COMPOSE, folder)
    shutil.copy(DEPLOY / "new-database-password.sh", folder)
    return folder


def test_compose_keeps_sqlite_in_the_state_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = compose_config(compose_copy(tmp_path))
    server = config["services"]["lingshu-server"]
    assert "postgres" not in config["services"]  # only with its profile
    settings = settings_from({**final_stage_env(), **server["environment"]}, monkeypatch)
    assert settings.database_url is None and not settings.store_responses
    (state,) = [v for v in server["volumes"] if v["target"] == str(settings.state_dir)]
    assert state["type"] == "volume" and not state.get("read_only")
    assert state["source"] in config["volumes"]
    assert state["source"] != "lingshu-cache", "patient data apart from the caches"


def test_compose_postgres_profile_shares_one_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = compose_copy(tmp_path)
    result = subprocess.run(
        [str(folder / "new-database-password.sh")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for name in ("database.env", "postgres.env"):
        assert stat.S_IMODE((folder / "secrets" / name).stat().st_mode) == 0o600, name
    config = compose_config(folder, "postgres")
    server, postgres = config["services"]["lingshu-server"], config["services"]["postgres"]
    url = make_url(server["environment"]["LINGSHU_DATABASE_URL"])
    assert url.drivername == "postgresql+asyncpg" and url.host == "postgres"
    assert url.password == postgres["environment"]["POSTGRES_PASSWORD"]
    assert len(url.password or "") >= 32
    assert (url.username, url.database) == (
        postgres["environment"]["POSTGRES_USER"],
        postgres["environment"]["POSTGRES_DB"],
    )
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert not postgres.get("ports"), "the database is reached on the Compose network only"
    settings = settings_from({**final_stage_env(), **server["environment"]}, monkeypatch)
    assert settings.database_url == str(url.render_as_string(hide_password=False))
