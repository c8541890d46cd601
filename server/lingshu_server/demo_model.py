"""A tiny, random-weight Qwen2.5-VL checkpoint built locally for demos and tests.

The checkpoint has the real architecture (``Qwen2_5_VLForConditionalGeneration``), a real
byte-level BPE tokenizer with the Qwen2 special tokens and chat template, and a real
``Qwen2VLImageProcessor`` configuration, so vLLM loads and serves it exactly as it would serve
Lingshu-7B -- only the weights are noise and everything is small enough to run on a laptop CPU.
Nothing is downloaded: the tokenizer is trained on a built-in corpus and the weights come from a
seeded random initialisation.

Public API:

* :data:`DEMO_MODEL_VERSION` -- part of the cache key; bump it whenever the recipe changes.
* :func:`build_demo_model` -- write a complete model directory to a given path.
* :func:`ensure_demo_model` -- return the cached model directory, building it once if missing.
* :func:`derive_demo_model` -- the same checkpoint with other image limits (`size` form).
* :func:`ensure_light_demo_model` -- the same weights with a light vision tower (no
  full-attention block), shaped like a GPU host for benchmarks.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from lingshu_server.core.cache_dir import CACHE_DIR_ENV, default_cache_dir

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_DIR_ENV",
    "DEMO_MODEL_VERSION",
    "build_demo_model",
    "default_cache_dir",
    "derive_demo_model",
    "ensure_demo_model",
    "ensure_light_demo_model",
]

#: Part of the cache directory name: bump whenever the files written by the recipe change.
DEMO_MODEL_VERSION = "2"

# Qwen2 special tokens, in Qwen2's own order (ids follow the BPE vocabulary, contiguously).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Size of the learned BPE vocabulary (the 256 byte symbols included); the special tokens come on
# top. The built-in corpus is small, so the trainer may stop a little short of this.
_BPE_VOCAB_SIZE = 480

# Qwen2-VL / Qwen2.5-VL-Instruct's official chat template (as shipped in the models'
# tokenizer_config.json / chat_template.json).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A small English corpus in the style of radiology reports and medical VQA, for the BPE trainer.
_CORPUS: tuple[str, ...] = (
    "Findings: The lungs are clear. No pleural effusion or pneumothorax.",
    "Impression: No acute cardiopulmonary process.",
    "The heart size is normal. The mediastinal and hilar contours are unremarkable.",
    "There is no focal consolidation, pleural effusion, or pneumothorax.",
    "Mild cardiomegaly with small bilateral pleural effusions.",
    "Patchy opacity in the right lower lobe, concerning for pneumonia.",
    "Impression: Right lower lobe pneumonia. Recommend follow-up radiograph in six weeks.",
    "Degenerative changes of the thoracic spine. No acute osseous abnormality.",
    "Endotracheal tube terminates 4 cm above the carina. Nasogastric tube in the stomach.",
    "Findings: Left basilar atelectasis. Stable position of the right internal jugular catheter.",
    "The pulmonary vasculature is within normal limits. No pulmonary edema.",
    "CT of the head without contrast: no intracranial hemorrhage, mass effect or midline shift.",
    "The ventricles and sulci are normal in size for age.",
    "The gray-white differentiation is preserved.",
    "Axial CT of the abdomen shows a 2.3 cm hypodense lesion in the left lobe of the liver.",
    "The kidneys enhance symmetrically. No hydronephrosis or renal calculi.",
    "MRI of the brain: a small focus of restricted diffusion in the left frontal lobe, "
    "consistent with an acute infarct.",
    "Ultrasound of the gallbladder demonstrates multiple gallstones without wall thickening.",
    "Fundus photograph: the optic disc is pink with a cup-to-disc ratio of 0.3.",
    "Scattered microaneurysms and dot-blot hemorrhages, consistent with diabetic retinopathy.",
    "Histology shows atypical glandular cells with enlarged, hyperchromatic nuclei.",
    "Dermoscopy reveals an asymmetric pigmented lesion with irregular borders.",
    "Question: Is there a fracture in this image? Answer: No, there is no fracture.",
    "Question: Which organ is abnormal? Answer: The left lung shows a mass.",
    "Question: What imaging modality was used? Answer: This is a chest X-ray.",
    "Question: Is the heart enlarged? Answer: Yes, there is cardiomegaly.",
    "Please describe the findings in this radiograph and give an impression.",
    "You are a helpful assistant. Please answer the medical question based on the image.",
    "Generate a report for the given images, including both findings and impressions.",
    "Return the report in the following format: Findings: {} Impression: {}.",
    "Compared with the prior study, the nodule in the right upper lobe is unchanged.",
    "A 1.2 cm pulmonary nodule is noted; CT follow-up in 3 to 6 months is advised.",
    "Frontal and lateral views of the chest were obtained.",
    "Portable AP view of the chest. Low lung volumes. Bibasilar opacities likely atelectasis.",
    "The patient is a 67-year-old man with shortness of breath and fever.",
    "There is a displaced fracture of the distal radius with dorsal angulation.",
    "Joint spaces are preserved. Soft tissues are unremarkable.",
    "Impression: 1. No evidence of pulmonary embolism. 2. Small hiatal hernia.",
    "Hello! How can I help you today? I can describe medical images and answer questions.",
    "The quick brown fox jumps over the lazy dog. 0123456789 (){}[]<>:;,.!?-+=*/%&$#@",
)

# CLIP normalisation constants, as used by Qwen2-VL / Qwen2.5-VL.
_IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
_IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]

_README = """\
# Lingshu-server demo model (random weights)

This directory was generated by `lingshu_server.demo_model`
(recipe version {version}, seed {seed}).

It is a **tiny Qwen2.5-VL checkpoint with random weights**: the architecture
(`Qwen2_5_VLForConditionalGeneration`), tokenizer (a byte-level BPE with the Qwen2 special tokens
and chat template) and image processor (`Qwen2VLImageProcessor`) are real, so vLLM loads and serves
it like Lingshu-7B, but its output is noise. Use it to exercise the serving pipeline (requests,
images, streaming, metrics), never to judge answers.

- text: hidden {hidden}, {layers} layers, {heads} heads ({kv_heads} KV head), head_dim {head_dim},
  mrope sections {mrope}
- vision: depth {v_depth}, hidden {v_hidden}, patch 14, spatial merge 2 (one token per 28x28 pixels)
- vocabulary: {vocab} tokens
"""


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def _is_complete(path: Path) -> bool:
    return path.is_dir() and all(
        (path / name).is_file()
        for name in (
            "config.json",
            "tokenizer.json",
            "preprocessor_config.json",
            "model.safetensors",
        )
    )


def ensure_demo_model(cache_dir: Path | None = None) -> Path:
    """Return ``cache_dir / "demo-qwen2_5_vl-<version>"``, building it first if it is missing.

    The model is built in a temporary sibling directory and renamed into place, so an interrupted
    build never leaves a half-written cache entry, and concurrent builders do not clash: whoever
    renames first wins and the others discard their copy.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / f"demo-qwen2_5_vl-{DEMO_MODEL_VERSION}"
    if _is_complete(target):
        logger.debug("Demo model found in cache at %s", target)
        return target
    if target.exists():
        raise RuntimeError(
            f"{target} exists but is not a complete demo model; remove it and try again"
        )

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=cache_dir))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache entry should be readable
        build_demo_model(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first (renaming onto a non-empty directory fails).
            if not _is_complete(target):
                raise
            logger.info("Demo model was built concurrently at %s; using that copy", target)
        else:
            logger.info("Demo model cached at %s", target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


def build_demo_model(target: Path, seed: int = 0) -> Path:
    """Write a complete tiny Qwen2.5-VL model directory at ``target`` and return it.

    ``target`` is created if needed; files already there are overwritten. The result is a
    deterministic function of ``seed`` and :data:`DEMO_MODEL_VERSION`.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    logger.info("Building random-weight demo Qwen2.5-VL model in %s (seed %d)", target, seed)

    tokenizer = _build_tokenizer()
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    vocab_size = len(tokenizer)
    _save_tokenizer(tokenizer, target)
    logger.debug("Tokenizer: %d tokens", vocab_size)

    config = _build_config(vocab_size, ids)
    _save_weights(config, target, seed)
    _save_generation_config(target, ids)
    _save_preprocessor_config(target)
    text = _text_config(config)
    vision = config.vision_config
    (target / "README.md").write_text(
        _README.format(
            version=DEMO_MODEL_VERSION,
            seed=seed,
            hidden=text.hidden_size,
            layers=text.num_hidden_layers,
            heads=text.num_attention_heads,
            kv_heads=text.num_key_value_heads,
            head_dim=text.hidden_size // text.num_attention_heads,
            mrope=_MROPE_SECTION,
            v_depth=vision.depth,
            v_hidden=vision.hidden_size,
            vocab=vocab_size,
        ),
        encoding="utf-8",
    )
    logger.info("Demo model built in %.1f s", time.monotonic() - started)
    return target


def _build_tokenizer() -> Any:
    """Train a byte-level BPE on the built-in corpus and wrap it as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(list(_CORPUS), trainer=trainer)
    # Special tokens get the ids right after the learned vocabulary, in SPECIAL_TOKENS order.
    tok.add_special_tokens(list(SPECIAL_TOKENS))

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=[
            t for t in SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")
        ],
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )


def _save_tokenizer(tokenizer: Any, target: Path) -> None:
    tokenizer.save_pretrained(str(target))
    # Make sure the template sits in tokenizer_config.json (older transformers versions read it
    # only there; newer ones may save it as chat_template.jinja), and in chat_template.json for
    # processors that look there.
    cfg_path = target / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _write_json(target / "chat_template.json", {"chat_template": CHAT_TEMPLATE})


_TEXT = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,  # head_dim 64: vLLM's CPU attention rejects head_dim 16
    "num_key_value_heads": 1,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "use_sliding_window": False,
    "sliding_window": 32768,
    "max_window_layers": 2,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
}
# Temporal, height and width sections of the multimodal rotary embedding (sum = head_dim / 2).
_MROPE_SECTION = [8, 12, 12]

_VISION = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "in_channels": 3,
    "hidden_act": "silu",
    "out_hidden_size": 128,  # = text hidden size
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [1],
    "tokens_per_second": 2,
    "initializer_range": 0.02,
}


def _build_config(vocab_size: int, ids: dict[str, int]) -> Any:
    from transformers import Qwen2_5_VLConfig

    # transformers 5 keeps the language model's fields in text_config and the rotary settings in
    # rope_parameters ("mrope" is the default rope with mrope_section set).
    rope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": list(_MROPE_SECTION)}
    text = dict(
        _TEXT,
        vocab_size=vocab_size,
        rope_parameters=rope,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(_VISION),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    return config


def _text_config(config: Any) -> Any:
    return getattr(config, "text_config", None) or config


def _save_weights(config: Any, target: Path, seed: int) -> None:
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model = model.bfloat16().eval()
    n_params = sum(p.numel() for p in model.parameters())
    logger.debug("Random-weight model: %d parameters", n_params)
    model.save_pretrained(str(target), safe_serialization=True)
    # save_pretrained writes generation_config.json from the model config; ours replaces it.


def _save_generation_config(target: Path, ids: dict[str, int]) -> None:
    # The ids part of Qwen2.5-VL-Instruct's generation_config.json. Its sampling defaults
    # (temperature 0.1, top_k 1, ...) are left out on purpose: vLLM applies generation_config
    # defaults to every request, and the demo model should sample as plainly as possible.
    _write_json(
        target / "generation_config.json",
        {
            "bos_token_id": ids["<|endoftext|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        },
    )


def derive_demo_model(target: Path, *, min_pixels: int, max_pixels: int) -> Path:
    """The demo checkpoint with other image limits, written in current transformers' form
    (`size.shortest_edge`/`size.longest_edge`, no `min_pixels`/`max_pixels` keys).

    Every other file is a symlink to the cached demo model, so this costs nothing to make.
    """
    target = Path(target)
    _link_demo_files(ensure_demo_model(), target, keep={"preprocessor_config.json"})
    _save_preprocessor_config(target, min_pixels, max_pixels, size_form_only=True)
    return target


#: The light variant's vision tower: window attention only. The demo's one full-attention block
#: costs ~150 ms per 1,280-token image on a CPU core and makes the engine the bottleneck, where a
#: GPU runs the vision tower in milliseconds and the front end limits throughput.
LIGHT_VISION: dict[str, list[int]] = {"fullatt_block_indexes": []}


def ensure_light_demo_model(cache_dir: Path | None = None) -> Path:
    """The demo checkpoint with a light vision tower (`LIGHT_VISION`), cached beside it.

    The weights are the demo's (the full-attention block has the same parameters as a window
    block), so only config.json differs; every other file is a symlink to the demo model.
    """
    source = ensure_demo_model(cache_dir)
    target = source.with_name(source.name + "-light")
    if _is_complete(target):
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=source.parent))
    try:
        os.chmod(tmp, 0o755)
        _link_demo_files(source, tmp, keep={"config.json", "README.md"})
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        config["vision_config"].update(LIGHT_VISION)
        _write_json(tmp / "config.json", config)
        readme = (source / "README.md").read_text(encoding="utf-8")
        (tmp / "README.md").write_text(
            readme + "- light variant: no full-attention block in the vision tower "
            "(window attention only)\n",
            encoding="utf-8",
        )
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_complete(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _link_demo_files(source: Path, target: Path, keep: set[str]) -> None:
    """Symlink every file of `source` into `target`, except the names in `keep`."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name not in keep and not (target / item.name).exists():
            (target / item.name).symlink_to(item)


def _save_preprocessor_config(
    target: Path,
    min_pixels: int = 4 * 28 * 28,  # 3136
    max_pixels: int = 16384 * 28 * 28,  # 12845056
    size_form_only: bool = False,
) -> None:
    limits: dict[str, Any] = {"size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}}
    if not size_form_only:  # the older form, as Qwen2.5-VL's own checkpoints ship it
        limits = {"min_pixels": min_pixels, "max_pixels": max_pixels, **limits}
    _write_json(
        target / "preprocessor_config.json",
        {
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2_5_VLProcessor",
            "do_resize": True,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "do_convert_rgb": True,
            "image_mean": _IMAGE_MEAN,
            "image_std": _IMAGE_STD,
            "resample": 3,
            **limits,
            "patch_size": 14,
            "temporal_patch_size": 2,
            "merge_size": 2,
        },
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
