"""The locally built random-weight Qwen2.5-VL demo checkpoint (no inference engine needed)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from lingshu_server import demo_model
from lingshu_server.demo_model import (
    DEMO_MODEL_VERSION,
    SPECIAL_TOKENS,
    build_demo_model,
    ensure_demo_model,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("demo") / "model")


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_directory_holds_what_vllm_needs(model_dir: Path) -> None:
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.json",
        "preprocessor_config.json",
        "README.md",
    ):
        assert (model_dir / name).is_file(), name
    assert "random" in (model_dir / "README.md").read_text(encoding="utf-8").lower()


def test_config_architecture_and_token_ids_match_tokenizer(model_dir: Path, tokenizer) -> None:
    config = _json(model_dir / "config.json")
    assert config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    assert config["model_type"] == "qwen2_5_vl"
    ids = tokenizer.convert_tokens_to_ids
    assert config["image_token_id"] == ids("<|image_pad|>")
    assert config["video_token_id"] == ids("<|video_pad|>")
    assert config["vision_start_token_id"] == ids("<|vision_start|>")
    assert config["vision_end_token_id"] == ids("<|vision_end|>")

    text = config["text_config"]
    assert text["vocab_size"] == len(tokenizer)
    assert text["bos_token_id"] == ids("<|endoftext|>")
    assert text["eos_token_id"] == ids("<|im_end|>") == tokenizer.eos_token_id
    assert text["pad_token_id"] == ids("<|endoftext|>") == tokenizer.pad_token_id
    # head_dim 64 (CPU attention rejects 16); mrope sections cover head_dim / 2.
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    assert head_dim == 64
    assert sum(text["rope_parameters"]["mrope_section"]) == head_dim // 2
    vision = config["vision_config"]
    assert vision["out_hidden_size"] == text["hidden_size"]
    assert (vision["patch_size"], vision["spatial_merge_size"]) == (14, 2)

    generation = _json(model_dir / "generation_config.json")
    assert generation["eos_token_id"] == [ids("<|im_end|>"), ids("<|endoftext|>")]


def test_weights_are_bf16_and_sized_to_the_vocabulary(model_dir: Path, tokenizer) -> None:
    import torch
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        embed = f.get_tensor(next(k for k in keys if k.endswith("embed_tokens.weight")))
        lm_head = f.get_tensor("lm_head.weight")
    assert any(k.startswith("visual.") for k in keys)
    assert embed.dtype == torch.bfloat16
    assert embed.shape == lm_head.shape == (len(tokenizer), 128)


def test_special_tokens_encode_to_single_ids(tokenizer) -> None:
    seen = set()
    for token in SPECIAL_TOKENS:
        encoded = tokenizer.encode(token, add_special_tokens=False)
        assert len(encoded) == 1, (token, encoded)
        seen.add(encoded[0])
    assert len(seen) == len(SPECIAL_TOKENS)
    # No BOS is prepended, as with Qwen2.
    assert tokenizer.encode("<|im_start|>", add_special_tokens=True) == [
        tokenizer.convert_tokens_to_ids("<|im_start|>")
    ]


def test_text_round_trips(tokenizer) -> None:
    text = "Findings: The lungs are clear. Impression: 无急性病变 (no acute findings)."
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    # Trained vocabulary: common report words take fewer tokens than bytes.
    sentence = "Findings: The lungs are clear."
    assert len(tokenizer.encode(sentence)) < len(sentence) // 2


def test_chat_template_renders_qwen2_vl_layout(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "You are a radiologist."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image"},
                {"type": "text", "text": "Compare these two chest X-rays."},
            ],
        },
        {"role": "assistant", "content": "The second shows a new effusion."},
        {"role": "user", "content": "Impression?"},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    assert rendered == (
        "<|im_start|>system\nYou are a radiologist.<|im_end|>\n"
        f"<|im_start|>user\n{image}{image}Compare these two chest X-rays.<|im_end|>\n"
        "<|im_start|>assistant\nThe second shows a new effusion.<|im_end|>\n"
        "<|im_start|>user\nImpression?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert rendered.count("<|image_pad|>") == 2


def test_chat_template_default_system_prompt(model_dir: Path, tokenizer) -> None:
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=False
    )
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n"
    )
    assert _json(model_dir / "chat_template.json")["chat_template"] == tokenizer.chat_template


def test_image_processor_gives_one_token_per_28px(model_dir: Path) -> None:
    from PIL import Image
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(str(model_dir))
    assert type(processor).__name__.startswith("Qwen2VLImageProcessor")
    out = processor(images=[Image.new("RGB", (224, 224))], return_tensors="pt")
    ((t, h, w),) = out["image_grid_thw"].tolist()
    assert t * h * w // 4 == 64  # (224 / 28) ** 2 merged visual tokens
    assert out["pixel_values"].shape[0] == t * h * w


def test_ensure_builds_once_into_given_cache_dir(tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    path = ensure_demo_model(cache)
    assert path == cache / f"demo-qwen2_5_vl-{DEMO_MODEL_VERSION}"
    assert (path / "model.safetensors").is_file()
    assert sorted(p.name for p in cache.iterdir()) == [path.name]  # no temp dirs left behind
    mtime = (path / "model.safetensors").stat().st_mtime_ns

    def no_rebuild(*args, **kwargs):
        raise AssertionError("cached model was rebuilt")

    monkeypatch.setattr(demo_model, "build_demo_model", no_rebuild)
    assert ensure_demo_model(cache) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime

    # The default cache dir comes from $LINGSHU_CACHE_DIR.
    monkeypatch.setenv("LINGSHU_CACHE_DIR", str(cache))
    assert ensure_demo_model() == path


def test_ensure_keeps_the_copy_a_concurrent_builder_finished_first(
    tmp_path: Path, model_dir: Path, monkeypatch
) -> None:
    cache = tmp_path / "cache"
    target = cache / f"demo-qwen2_5_vl-{DEMO_MODEL_VERSION}"

    def racing_build(path: Path, seed: int = 0) -> Path:
        # Another process renames its finished copy into place while we are still building.
        shutil.copytree(model_dir, target)
        (target / "winner").write_text("other process", encoding="utf-8")
        (Path(path) / "config.json").write_text("{}", encoding="utf-8")
        return Path(path)

    monkeypatch.setattr(demo_model, "build_demo_model", racing_build)
    assert ensure_demo_model(cache) == target
    assert (target / "winner").is_file()
    assert sorted(p.name for p in cache.iterdir()) == [target.name]


def test_failed_build_leaves_no_cache_entry(tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"

    def crashing_build(path: Path, seed: int = 0) -> Path:
        (Path(path) / "config.json").write_text("{}", encoding="utf-8")
        raise RuntimeError("boom")

    monkeypatch.setattr(demo_model, "build_demo_model", crashing_build)
    with pytest.raises(RuntimeError, match="boom"):
        ensure_demo_model(cache)
    assert os.listdir(cache) == []
