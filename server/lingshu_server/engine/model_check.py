"""Refuse checkpoints this server does not support before the engine spends minutes loading them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SUPPORTED_ARCHITECTURES = frozenset({"Qwen2_5_VLForConditionalGeneration"})
SUPPORTED_MODEL_TYPES = frozenset({"qwen2_5_vl"})


class UnsupportedModelError(Exception):
    """The checkpoint is not a Qwen2.5-VL model, or its config cannot be read."""


def _read_config(model: str) -> dict[str, Any]:
    path = Path(model)
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise UnsupportedModelError(f"{model} has no config.json; is it a model directory?")
    else:
        try:
            from huggingface_hub import hf_hub_download

            config_file = Path(hf_hub_download(model, "config.json"))
        except Exception as exc:  # offline, unknown id, private repo: all mean "can't check"
            raise UnsupportedModelError(
                f"cannot read config.json for {model!r}: not a local directory and not "
                f"resolvable from the Hugging Face cache/hub ({type(exc).__name__})"
            ) from exc
    try:
        return json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise UnsupportedModelError(f"cannot parse {config_file}: {exc}") from exc


def check_supported_model(model: str) -> dict[str, Any]:
    """The model config if it is a Qwen2.5-VL checkpoint; otherwise raise with a clear reason."""
    config = _read_config(model)
    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    if SUPPORTED_ARCHITECTURES.intersection(architectures) or model_type in SUPPORTED_MODEL_TYPES:
        return config
    found = ", ".join(architectures) or model_type or "unknown"
    raise UnsupportedModelError(
        f"unsupported model architecture {found} in {model}: lingshu-server serves Qwen2.5-VL "
        "checkpoints (Lingshu-7B, Lingshu-32B, Qwen2_5_VLForConditionalGeneration). "
        "InternVL-based models such as Lingshu-I-8B are not supported."
    )
