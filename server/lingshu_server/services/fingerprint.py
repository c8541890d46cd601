"""`system_fingerprint`: one string that names the configuration an answer came from.

Two answers with the same fingerprint and seed came from the same configuration: the same
checkpoint files (weights, config, tokenizer, chat template, generation defaults), this server's
version, the engine's version, dtype, quantization and the engine arguments that change outputs,
the server settings that change what the model sees of a request (the image budget, the
default CT window, the video frame cap), and, for a LoRA adapter named in `model`, the adapter's
files. Computed once at start-up; chat completions, completions and Responses carry it, and
`/v1/models` shows it per model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lingshu_server import __version__
from lingshu_server.core.image_budget import PixelBudget
from lingshu_server.core.settings import Settings

# How the image budget is applied; a new value when the same settings give other pixels.
# "message-budget": on the message, as qwen-vl-utils' min/max_pixels (one resize).
IMAGE_RESIZE_RECIPE = "message-budget"


def input_settings(settings: Settings, budget: PixelBudget) -> dict[str, Any]:
    """The server settings that change what the model sees of a request."""
    return {
        "image_resize": IMAGE_RESIZE_RECIPE,
        "min_pixels": budget.min_pixels,
        "max_pixels": budget.max_pixels,
        "low_detail_max_pixels": settings.low_detail_max_pixels,
        "dicom_default_ct_window": settings.dicom_default_ct_window,
        "max_video_frames": settings.max_video_frames,
    }


def _fingerprint(components: Mapping[str, Any]) -> str:
    canonical = json.dumps(components, sort_keys=True, separators=(",", ":"), default=str)
    return "fp_" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Fingerprints:
    """The base model's fingerprint and each adapter's, with what went into them."""

    base: str
    adapters: Mapping[str, str]
    components: Mapping[str, Any]

    @classmethod
    def compute(
        cls,
        *,
        checkpoint_sha256: str,
        engine: Mapping[str, Any],
        inputs: Mapping[str, Any],
        adapter_sha256: Mapping[str, str],
    ) -> Fingerprints:
        components = {
            "server": __version__,
            "checkpoint_sha256": checkpoint_sha256,
            "engine": dict(engine),
            "inputs": dict(inputs),
        }
        return cls(
            base=_fingerprint(components),
            adapters={
                name: _fingerprint({**components, "adapter_sha256": digest})
                for name, digest in adapter_sha256.items()
            },
            components=components,
        )

    def of(self, adapter: str | None) -> str:
        """The fingerprint of answers from the base model (None) or a LoRA adapter."""
        return self.base if adapter is None else self.adapters[adapter]
