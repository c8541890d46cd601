# syntax=docker/dockerfile:1
#
# lingshu-server on vLLM, for NVIDIA GPUs.
#
#   docker build -t lingshu-server:0.1.0 .
#   docker run --gpus all --shm-size 16g -p 8000:8000 \
#     -v /srv/models:/models:ro -v "$PWD/api-keys:/etc/lingshu/api-keys/keys:ro" \
#     -e LINGSHU_MODEL=/models/Lingshu-7B -e LINGSHU_API_KEY_FILE=/etc/lingshu/api-keys/keys \
#     lingshu-server:0.1.0
#
# Base image: vLLM's official image, not a bare CUDA runtime image plus `pip install vllm`.
# vllm/vllm-openai:v0.32.0 already holds vllm==0.32.0 (the `gpu` extra's pin) together with the
# torch, CUDA runtime libraries, NCCL, FlashAttention/FlashInfer kernels and Ray that vLLM's CI
# tested it with. Re-creating that on nvidia/cuda:*-runtime means resolving the same multi-GB wheel
# set ourselves and owning every CUDA/torch/kernel version match; a mismatch only shows on a GPU.
# Our layers add a few pure-Python packages and this package on top, and install nothing that
# changes what the base image ships (see the constraints below).
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0
ARG PYTHON_BUILD_IMAGE=python:3.12-slim-bookworm

# ---- requirements: our runtime dependencies, read from pyproject.toml alone --------------------
# Copying only pyproject.toml keeps the dependency layer cached until the dependencies change.
FROM ${PYTHON_BUILD_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c "import pathlib, tomllib; \
deps = tomllib.loads(pathlib.Path('pyproject.toml').read_text())['project']['dependencies']; \
pathlib.Path('requirements.txt').write_text(''.join(d + '\n' for d in deps))"

# ---- wheel: the package itself (pure Python) --------------------------------------------------
FROM ${PYTHON_BUILD_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server/ server/
RUN python3 -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# ---- runtime ------------------------------------------------------------------------------------
FROM ${VLLM_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="lingshu-server" \
      org.opencontainers.image.description="OpenAI-compatible server for the Lingshu medical multimodal models (Qwen2.5-VL) on vLLM" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/vllm/vllm-openai:v0.32.0"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Dependencies first (cached until pyproject.toml changes). Every package the base image ships is
# pinned as a constraint, so pip may add packages but never up- or downgrade torch, vllm or their
# dependencies; a conflict fails the build instead of silently breaking the CUDA stack.
# PIP_BREAK_SYSTEM_PACKAGES: the base's Python is the image's only Python; installing into it is
# intended (older pip ignores the variable).
COPY --from=requirements /src/requirements.txt /tmp/requirements.txt
RUN python3 -m pip list --format=freeze > /tmp/base-constraints.txt \
    && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir \
        -r /tmp/requirements.txt -c /tmp/base-constraints.txt \
    && rm /tmp/requirements.txt /tmp/base-constraints.txt

# Then the package, without dependencies (they are above).
COPY --from=wheel /dist/ /tmp/dist/
RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist

# A non-root user with a numeric UID/GID (Kubernetes' runAsNonRoot can check a numeric USER).
# /models is where the weights are mounted, read-only: they are never part of the image.
# /var/lib/lingshu-server is where Compose mounts the stored-state volume (LINGSHU_STATE_DIR): a
# new named volume takes this folder's owner, so the server can write its database there.
RUN groupadd --gid 10001 lingshu \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/lingshu \
        --shell /usr/sbin/nologin lingshu \
    && mkdir -p /models \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/lingshu-server

# HOME holds every cache vLLM writes (HF_HOME, ~/.cache/vllm torch.compile cache, ~/.triton,
# ~/.config/vllm): mount a writable volume there when the root filesystem is read-only.
ENV HOME=/home/lingshu \
    HF_HOME=/home/lingshu/.cache/huggingface \
    PYTHONUNBUFFERED=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    LINGSHU_HOST=0.0.0.0 \
    LINGSHU_PORT=8000

WORKDIR /home/lingshu
USER 10001:10001
EXPOSE 8000

# /health answers 503 while the weights load: the start period covers a slow Lingshu-32B load.
# bash -c so the check follows LINGSHU_PORT; curl's exit codes are mapped to Docker's 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30m --retries=3 \
    CMD ["bash", "-c", "curl -fsS \"http://127.0.0.1:${LINGSHU_PORT}/health\" > /dev/null || exit 1"]

ENTRYPOINT ["lingshu-server"]
CMD ["serve"]
