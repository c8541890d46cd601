"""Where the weights and the audit trail live: claims mounted only where their access mode
allows, the download sized for the checkpoint and skipping the Hub once complete, read-only
weights, ephemeral-storage requests, one cache claim per replica, one audit file per pod."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import pytest

from lingshu_server.core.settings import Settings
from tests.deploy.files import (
    CASES,
    chart_values,
    config_env,
    lws_templates,
    manifests,
    multinode_values,
    of_kind,
    one,
    pod_specs,
    render,
    rendered_case,
    values_for,
)

MI = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024, "G": 1e9 / 2**20, "M": 1e6 / 2**20}
# On-disk size of the checkpoints (bf16 safetensors): what a download volume must hold.
CHECKPOINT_GB = {"lingshu-medical-mllm/Lingshu-7B": 17, "lingshu-medical-mllm/Lingshu-32B": 67}


def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity)).groups()
    return float(number) * MI[unit]


def download_values(**model: Any) -> dict[str, Any]:
    return {"model": {"existingClaim": "", "download": {"enabled": True}, **model}}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2}, "Multi-Attach"),
        ({"keda": {"enabled": True, "maxReplicaCount": 3}}, "up to 3 replica"),
        (
            {
                "model": {"existingClaimAccessMode": "ReadOnlyMany", "download": {"enabled": True}},
            },
            "cannot write into the ReadOnlyMany claim",
        ),
    ],
    ids=["rwo-two-replicas", "rwo-autoscaled", "rox-download"],
)
def test_claims_are_mounted_only_where_their_access_mode_allows(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmError, match=message):
        render(values)


def test_rwo_claim_refused_for_a_multinode_group() -> None:
    values = multinode_values()
    values["model"] = {**values["model"], "existingClaimAccessMode": "ReadWriteOnce"}
    with pytest.raises(helm_python.HelmError, match="multi-node group"):
        render(values)


@pytest.mark.parametrize("case", CASES)
def test_examples_pair_replicas_with_claims_that_allow_them(case: str) -> None:
    values = chart_values(values_for(case))
    model = values["model"]
    docs = manifests(rendered_case(case))
    spread = values["multiNode"]["enabled"] or any(
        d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject") for d in docs
    )
    spread = spread or values["replicaCount"] > 1
    if model["existingClaim"] and spread:
        assert model["existingClaimAccessMode"] in ("ReadOnlyMany", "ReadWriteMany"), case
    if model["existingClaim"] and model["download"]["enabled"]:
        assert model["existingClaimAccessMode"] != "ReadOnlyMany", case


@pytest.mark.parametrize("case", CASES)
def test_weights_are_read_only_for_the_server(case: str) -> None:
    for where, spec in pod_specs(manifests(rendered_case(case))):
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            (mount,) = [m for m in container["volumeMounts"] if m["name"] == "model"]
            assert mount["readOnly"] is True, (case, where)
        claim = volumes.get("model", {}).get("persistentVolumeClaim")
        if claim:
            assert claim["readOnly"] is True, (case, where)
        writable = [  # the weights' claim again, writable, for the download alone
            name
            for name, volume in volumes.items()
            if name != "model"
            and claim
            and volume.get("persistentVolumeClaim", {}).get("claimName") == claim["claimName"]
        ]
        for init in spec.get("initContainers", []):
            assert {m["name"] for m in init["volumeMounts"]} & ({"model", *writable})
        for container in spec["containers"]:
            assert not {m["name"] for m in container["volumeMounts"]} & set(writable)


@pytest.mark.parametrize(
    ("repository", "size", "fits"),
    [
        ("lingshu-medical-mllm/Lingshu-7B", None, True),
        ("lingshu-medical-mllm/Lingshu-32B", None, True),
        ("lingshu-medical-mllm/Lingshu-32B", "40Gi", False),  # the old default
        ("lingshu-medical-mllm/Lingshu-32B", "100G", True),
        ("example/other-model", None, False),  # unknown size: must be given
        ("example/other-model", "30Gi", True),
    ],
)
def test_download_volume_holds_the_checkpoint(
    repository: str, size: str | None, fits: bool
) -> None:
    values = download_values(download={"enabled": True, "repository": repository})
    values["model"]["download"]["emptyDirSizeLimit"] = size
    if not fits:
        with pytest.raises(helm_python.HelmError, match="emptyDirSizeLimit"):
            render(values)
        return
    (deployment,) = of_kind(manifests(render(values)), "Deployment")
    (model,) = [
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "model"
    ]
    limit = mebibytes(model["emptyDir"]["sizeLimit"])
    if repository in CHECKPOINT_GB:
        assert limit * 2**20 > CHECKPOINT_GB[repository] * 1e9 * 1.1
    elif size:
        assert limit == mebibytes(size)


@pytest.mark.parametrize("case", [*CASES, "download-to-empty-dir"])
def test_ephemeral_storage_request_covers_the_disk_backed_empty_dirs(case: str) -> None:
    docs = manifests(
        render(download_values()) if case == "download-to-empty-dir" else rendered_case(case)
    )
    for where, spec in pod_specs(docs):
        disk = sum(
            mebibytes(v["emptyDir"]["sizeLimit"])
            for v in spec["volumes"]
            if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"
        )
        for container in spec["containers"]:
            request = mebibytes(container["resources"]["requests"]["ephemeral-storage"])
            assert request >= disk, (case, where, container["name"])


# ---------- the download init container, run ----------


def download_script(values: dict[str, Any]) -> str:
    (deployment,) = of_kind(manifests(render(values)), "Deployment")
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert init["command"][:2] == ["sh", "-c"]
    return init["command"][2]


def run_download(script: str, root: Path, hf_exit: int = 0) -> subprocess.CompletedProcess:
    """The init container's script with the model mount under `root` and an `hf` stand-in that
    logs its call (the Hub) and writes a weights file."""
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    hf = bin_dir / "hf"
    hf.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {root}/hub-calls\n'
        'while [ "$1" != --local-dir ]; do shift; done\n'
        'mkdir -p "$2" && echo weights > "$2/model.safetensors"\n'
        f"exit {hf_exit}\n"
    )
    hf.chmod(0o755)
    script = script.replace("/models/", f"{root}/models/")
    return subprocess.run(
        ["sh", "-c", script],
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def hub_calls(root: Path) -> list[str]:
    calls = root / "hub-calls"
    return calls.read_text().splitlines() if calls.exists() else []


def test_download_skips_the_hub_once_the_weights_are_complete(tmp_path: Path) -> None:
    first = run_download(download_script(download_values()), tmp_path)
    assert first.returncode == 0, first.stderr
    assert hub_calls(tmp_path) == [
        "download lingshu-medical-mllm/Lingshu-7B --revision main "
        f"--local-dir {tmp_path}/models/Lingshu-7B"
    ]
    restart = run_download(download_script(download_values()), tmp_path)
    assert restart.returncode == 0 and len(hub_calls(tmp_path)) == 1, "a restart asked the Hub"
    assert "not contacting the Hub" in restart.stdout
    pinned = download_values(download={"enabled": True, "revision": "a" * 40})
    update = run_download(download_script(pinned), tmp_path)
    assert update.returncode == 0 and len(hub_calls(tmp_path)) == 2, "a new revision downloads"


def test_a_failed_download_leaves_no_marker(tmp_path: Path) -> None:
    failed = run_download(download_script(download_values()), tmp_path, hf_exit=1)
    assert failed.returncode != 0
    assert not (tmp_path / "models" / "Lingshu-7B" / ".lingshu-download").exists()
    retried = run_download(download_script(download_values()), tmp_path)
    assert retried.returncode == 0 and len(hub_calls(tmp_path)) == 2


# ---------- one cache claim per replica ----------


def test_per_replica_cache_is_a_statefulset_with_a_claim_per_pod() -> None:
    docs = manifests(rendered_case("per-replica-cache"))
    assert not of_kind(docs, "Deployment")
    statefulset = one(docs, "StatefulSet")
    (template,) = statefulset["spec"]["volumeClaimTemplates"]
    assert template["metadata"]["name"] == "model"
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert mebibytes(template["spec"]["resources"]["requests"]["storage"]) * 2**20 > 17e9
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    spec = statefulset["spec"]["template"]["spec"]
    assert "model" not in {v["name"] for v in spec["volumes"]}, "the claim template provides it"
    (init,) = spec["initContainers"]
    assert {"name": "model", "mountPath": "/models"} in init["volumeMounts"]


def test_per_replica_cache_in_multinode_mode_gives_every_pod_a_claim() -> None:
    values = multinode_values(
        model={
            "existingClaim": "",
            "perReplicaCache": {"enabled": True},
            "download": {"enabled": True, "repository": "lingshu-medical-mllm/Lingshu-32B"},
        }
    )
    lws = one(manifests(render(values)), "LeaderWorkerSet")
    (template,) = lws["spec"]["leaderWorkerTemplate"]["volumeClaimTemplates"]
    assert mebibytes(template["spec"]["resources"]["requests"]["storage"]) * 2**20 > 67e9
    for pod in lws_templates(lws):
        assert pod["spec"]["initContainers"][0]["name"] == "download-model"


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"perReplicaCache": {"enabled": True}}, "leave model.existingClaim empty"),
        ({"existingClaim": "", "perReplicaCache": {"enabled": True}}, "needs model.download"),
    ],
)
def test_per_replica_cache_needs_the_download_and_no_shared_claim(
    model: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmError, match=message):
        render({"model": model})


# ---------- audit ----------


def test_each_pod_writes_its_own_audit_file(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = manifests(rendered_case("everything"))
    assert "LINGSHU_AUDIT_LOG_FILE" not in config_env(docs)
    for where, spec in pod_specs(docs):
        (server,) = [c for c in spec["containers"] if c["name"] == "lingshu-server"]
        names = [e["name"] for e in server["env"]]
        audit = next(e["value"] for e in server["env"] if e["name"] == "LINGSHU_AUDIT_LOG_FILE")
        assert audit == "/var/log/lingshu/$(POD_NAME)/audit.jsonl", where
        # The kubelet expands $(POD_NAME) only from a variable defined before this one.
        assert names.index("POD_NAME") < names.index("LINGSHU_AUDIT_LOG_FILE")
        pod_name = next(e for e in server["env"] if e["name"] == "POD_NAME")
        assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        monkeypatch.setenv("LINGSHU_AUDIT_LOG_FILE", audit.replace("$(POD_NAME)", "pod-a"))
        assert str(Settings().audit_log_file) == "/var/log/lingshu/pod-a/audit.jsonl"
