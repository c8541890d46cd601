"""LoRA adapters for the demo model, made here with PEFT as a fine-tuning run would save them."""

from __future__ import annotations

import json
from pathlib import Path

# The language model's attention projections (the vision tower names its own qkv and proj).
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


def build_adapter(model_dir: Path, out_dir: Path, rank: int = 8, seed: int = 0) -> Path:
    """A rank-`rank` LoRA adapter with random (not zero) weights, so it changes the model's
    answers; saved by PEFT's save_pretrained (adapter_config.json + adapter_model.safetensors)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=TARGET_MODULES,
        init_lora_weights=False,  # PEFT's default leaves B at zero: an adapter that does nothing
    )
    get_peft_model(model, config).save_pretrained(out_dir)
    return out_dir


def edit_config(adapter_dir: Path, **changes: object) -> None:
    """Change fields of an adapter's adapter_config.json (None removes the field)."""
    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))
