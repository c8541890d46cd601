"""vLLM's AsyncEngineArgs from the settings: the typed flags, the server's own choices and
--engine-args, checked against vLLM's own field list and types before the engine loads."""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from lingshu_server.core.image_budget import PixelBudget
from lingshu_server.core.settings import Settings
from lingshu_server.engine.lora import LoraPlan

logger = logging.getLogger(__name__)

# Settings passed to the engine under the same name when set (None: vLLM's default).
TYPED_FLAGS = (
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "distributed_executor_backend",
    "dtype",
    "max_model_len",
    "gpu_memory_utilization",
    "max_num_seqs",
    "enforce_eager",
    "quantization",
    "kv_cache_dtype",
    "max_num_batched_tokens",
    "enable_prefix_caching",
    "enable_chunked_prefill",
    "seed",
    "mm_processor_cache_gb",
)
# Settings whose engine argument has another name.
RENAMED_FLAGS = {"swap_space": "kv_offloading_size"}
# Engine arguments the server derives from other settings -> what to use instead.
SERVER_SET = {
    "model": "--model",
    "tokenizer": "--model (the checkpoint's own tokenizer)",
    "served_model_name": "--served-model-name",
    "limit_mm_per_prompt": "--max-images-per-request and --max-videos-per-request",
    "mm_processor_kwargs": "--min-pixels and --max-pixels (and the per-image options)",
    "structured_outputs_config": "nothing: the server sets xgrammar for response_format",
    "enable_lora": "--lora-modules",
}
# Words of an engine argument's name that mark a value no log line may show (hf_token).
SECRET_WORDS = frozenset({"token", "secret", "password", "key"})


class EngineArgsError(ValueError):
    """The engine arguments cannot work; raised before the engine loads."""


def _flag(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def _fields() -> dict[str, dataclasses.Field[object]]:
    from vllm import AsyncEngineArgs

    return {field.name: field for field in dataclasses.fields(AsyncEngineArgs)}


def _refusal(name: str) -> str | None:
    """Why `name` may not come through --engine-args, if it may not."""
    if name in SERVER_SET:
        return f"'{name}' is set by the server; use {SERVER_SET[name]}"
    for setting in (*TYPED_FLAGS, *RENAMED_FLAGS):
        if name in (setting, RENAMED_FLAGS.get(setting)):
            return f"'{name}' has its own flag; use {_flag(setting)}"
    return None


def _type_error(field: dataclasses.Field[object], value: Any) -> str | None:
    """vLLM's declared type of `field` against a JSON value (strict: "10" is not an int)."""
    if isinstance(field.type, str):
        return None  # an unresolved annotation: vLLM's own checks judge the value
    try:
        adapter = TypeAdapter(field.type, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # a type pydantic cannot express; vLLM checks it later
        return None
    try:
        adapter.validate_json(json.dumps(value), strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{first['msg']} (got {json.dumps(value)[:80]})"
    except Exception:  # same as above, found only when validating
        return None
    return None


def _check_value(
    name: str, value: Any, fields: dict[str, dataclasses.Field[object]], where: str
) -> None:
    problem = _type_error(fields[name], value)
    if problem is not None:
        raise EngineArgsError(f"{where}: {problem}")
    if name == "quantization" and value is not None:
        from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

        if value not in QUANTIZATION_METHODS:
            close = difflib.get_close_matches(value, QUANTIZATION_METHODS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise EngineArgsError(
                f"{where}: unknown quantization method '{value}'{hint} (this vLLM knows "
                f"{', '.join(QUANTIZATION_METHODS)})"
            )


def check_engine_args(settings: Settings) -> None:
    """Refuse, with one line naming the culprit, engine arguments that cannot work: an unknown
    --engine-args field (with the closest real one), a field a flag or the server sets, or a
    value of the wrong type. Runs before anything loads."""
    fields = _fields()
    for setting in (*TYPED_FLAGS, *RENAMED_FLAGS):
        value = getattr(settings, setting)
        if value is not None:
            name = RENAMED_FLAGS.get(setting, setting)
            _check_value(name, value, fields, _flag(setting))
    if settings.swap_space is not None and _on_cpu():
        raise EngineArgsError(
            "--swap-space needs a GPU: vLLM's KV offloading runs on CUDA and XPU GPUs only "
            "(on a CPU the KV cache already lives in memory: VLLM_CPU_KVCACHE_SPACE sizes it)"
        )
    for name, value in settings.engine_args.items():
        refusal = _refusal(name)
        if refusal is not None:
            raise EngineArgsError(f"--engine-args: {refusal}")
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise EngineArgsError(
                f"--engine-args: '{name}' is not an engine argument of vLLM {_vllm()}{hint}"
            )
        _check_value(name, value, fields, f"--engine-args: '{name}'")


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _vllm() -> str:
    from lingshu_server.engine.vllm_engine import vllm_version

    return vllm_version()


def engine_kwargs(settings: Settings, image_budget: PixelBudget, lora: LoraPlan) -> dict[str, Any]:
    """Everything the engine is built with, as AsyncEngineArgs keyword arguments."""
    kwargs: dict[str, Any] = {
        "model": settings.model,
        "served_model_name": settings.served_model_names,
        "limit_mm_per_prompt": {
            "image": settings.max_images_per_request,
            "video": settings.max_videos_per_request,
        },
        # Structured output arrives as EBNF built by structured_output.py (compact unless the
        # client allows whitespace); xgrammar enforces it.
        "structured_outputs_config": {"backend": "xgrammar"},
        # Requests carry a priority: people 0, batch lines --batch-priority. With every
        # priority equal this is first come, first served.
        "scheduling_policy": "priority",
        # The processor's budget in the form current transformers reads (`size`); images
        # arrive already at the size it computes, so it does not resize them again. Video
        # frames arrive at qwen-vl-utils' size, the one the model was trained with, and must
        # stay so (transformers' video processor caps frames differently).
        "mm_processor_kwargs": {
            "size": {
                "shortest_edge": image_budget.min_pixels,
                "longest_edge": image_budget.max_pixels,
            },
            "videos_kwargs": {"do_resize": False},
        },
    }
    for setting in (*TYPED_FLAGS, *RENAMED_FLAGS):
        value = getattr(settings, setting)
        if value is not None:
            kwargs[RENAMED_FLAGS.get(setting, setting)] = value
    kwargs.update(lora.engine_kwargs(settings.engine_args))
    kwargs.update(settings.engine_args)
    _whole_prefills_on_cpu(kwargs)
    return kwargs


def _whole_prefills_on_cpu(kwargs: dict[str, Any]) -> None:
    """vLLM's CPU build kills its engine core when a seeded request's prompt is prefilled in
    chunks: the chunk's sampled token is discarded by rewinding the request's generator, and a
    CPU generator has no offset to rewind (gpu_model_runner._bookkeeping_sync, "CPU Generator
    does not use offset"). One request with `seed` and a prompt over the step's token budget
    is enough. Unless the operator chose the prefill budget, prefill whole prompts on CPU."""
    chosen = {"enable_chunked_prefill", "max_num_batched_tokens"} & kwargs.keys()
    if chosen or kwargs.get("max_model_len") is None or not _on_cpu():
        return
    kwargs["enable_chunked_prefill"] = False
    kwargs["max_num_batched_tokens"] = kwargs["max_model_len"]


def loggable(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Engine arguments fit for a log line: secrets masked, values as JSON would show them."""
    shown: dict[str, Any] = {}
    for name, value in kwargs.items():
        secret = SECRET_WORDS.intersection(name.lower().split("_"))
        if secret and value not in (None, False):
            shown[name] = "***"
        else:
            plain = isinstance(value, str | int | float | bool | None)
            shown[name] = value if plain else str(value)
    return shown


def resolved_config(vllm_config: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """The knobs operators tune, as the engine resolved them (defaults filled in), and each
    --engine-args field as the engine's configuration holds it."""
    return loggable({**_typed_knobs(vllm_config), **_resolved_extras(vllm_config, extra)})


# The resolved knobs that change what the model computes, not how much or how fast: the
# numbers (dtype, quantization, KV cache type) and how the layers are split across devices.
OUTPUT_KNOBS = (
    "dtype",
    "quantization",
    "kv_cache_dtype",
    "tensor_parallel_size",
    "pipeline_parallel_size",
)


def output_config(vllm_config: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """What of the engine's configuration decides its answers (part of system_fingerprint):
    OUTPUT_KNOBS as resolved, and every --engine-args field (the server cannot tell which of
    those change outputs, so it counts them all; secrets masked)."""
    knobs = _typed_knobs(vllm_config)
    knobs["pipeline_parallel_size"] = vllm_config.parallel_config.pipeline_parallel_size
    return loggable(
        {
            **{name: knobs[name] for name in OUTPUT_KNOBS},
            **_resolved_extras(vllm_config, extra),
        }
    )


def _resolved_extras(vllm_config: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """Each --engine-args field as the engine's configuration holds it."""
    configs: list[object] = [
        value for value in vars(vllm_config).values() if dataclasses.is_dataclass(value)
    ]
    configs.append(getattr(vllm_config.model_config, "multimodal_config", None))
    resolved = {}
    for name in extra:
        holder = next((c for c in configs if c is not None and hasattr(c, name)), None)
        resolved[name] = getattr(holder, name) if holder is not None else "(not in the config)"
    return resolved


def _typed_knobs(vllm_config: Any) -> dict[str, Any]:
    model, cache, scheduler = (
        vllm_config.model_config,
        vllm_config.cache_config,
        vllm_config.scheduler_config,
    )
    multimodal = getattr(model, "multimodal_config", None)
    lora = vllm_config.lora_config
    return {
        "max_model_len": model.max_model_len,
        "dtype": str(model.dtype).removeprefix("torch."),
        "quantization": model.quantization,
        "seed": model.seed,
        "kv_cache_dtype": cache.cache_dtype,
        "enable_prefix_caching": cache.enable_prefix_caching,
        "kv_offloading_size": cache.kv_offloading_size,
        "max_num_batched_tokens": scheduler.max_num_batched_tokens,
        "max_num_seqs": scheduler.max_num_seqs,
        "enable_chunked_prefill": scheduler.enable_chunked_prefill,
        "mm_processor_cache_gb": getattr(multimodal, "mm_processor_cache_gb", None),
        "tensor_parallel_size": vllm_config.parallel_config.tensor_parallel_size,
        "max_loras": lora.max_loras if lora is not None else 0,
        "max_lora_rank": lora.max_lora_rank if lora is not None else 0,
    }
