"""LoRA adapters served beside the base model: checked at start-up (before the engine loads),
then handed to the engine by the name clients put in `model`."""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lingshu_server.core.settings import LoraModule, Settings

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
MAX_LORAS_IN_BATCH = 4  # default max_loras: adapters served in one batch
# The projections of the language model an adapter may change.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraModuleError(ValueError):
    """An adapter that cannot be served; raised before the engine loads."""


@dataclass(frozen=True, kw_only=True)
class Adapter:
    name: str  # what clients put in `model`
    path: str  # absolute directory
    parent: str  # the served base model it is listed under
    rank: int
    engine_id: int  # vLLM's lora_int_id, from 1


@dataclass(frozen=True)
class LoraPlan:
    adapters: tuple[Adapter, ...] = ()

    def engine_kwargs(self, explicit: dict[str, Any]) -> dict[str, Any]:
        """LoRA engine arguments: on, sized for the adapters (explicit --engine-args win)."""
        if not self.adapters:
            return {}
        rank = max(adapter.rank for adapter in self.adapters)
        # Adapters in one batch: each slot holds GPU memory for a rank-sized copy of every
        # projection; the others wait in CPU memory, all of them loaded at start.
        in_batch = min(len(self.adapters), MAX_LORAS_IN_BATCH)
        kwargs: dict[str, Any] = {
            "enable_lora": True,
            "max_lora_rank": next(r for r in allowed_ranks() if r >= rank),
            "max_loras": in_batch,
            "max_cpu_loras": max(len(self.adapters), explicit.get("max_loras") or in_batch),
        }
        return {k: v for k, v in kwargs.items() if k not in explicit}

    def by_name(self) -> dict[str, Adapter]:
        return {adapter.name: adapter for adapter in self.adapters}


def allowed_ranks() -> tuple[int, ...]:
    """The values vLLM accepts for max_lora_rank."""
    from vllm.config.lora import MaxLoRARanks

    return tuple(sorted(typing.get_args(MaxLoRARanks)))


def _model_dims(model_config: dict[str, Any]) -> dict[str, tuple[int, int]] | None:
    """(input, output) size of each projection of the language model, from config.json."""
    text = model_config.get("text_config") or model_config
    try:
        hidden = int(text["hidden_size"])
        heads = int(text["num_attention_heads"])
        kv_heads = int(text.get("num_key_value_heads", heads))
        head_dim = int(text.get("head_dim") or hidden // heads)
        inter = int(text["intermediate_size"])
    except (KeyError, TypeError, ValueError):
        return None
    q, kv = heads * head_dim, kv_heads * head_dim
    return {
        "q_proj": (hidden, q),
        "k_proj": (hidden, kv),
        "v_proj": (hidden, kv),
        "o_proj": (q, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }


def _read_config(module: LoraModule) -> dict[str, Any]:
    where = f"LoRA module '{module.name}'"
    if not module.path.exists():
        raise LoraModuleError(f"{where}: {module.path} does not exist")
    if not module.path.is_dir():
        raise LoraModuleError(f"{where}: {module.path} is not a directory")
    config_path = module.path / CONFIG_FILE
    if not config_path.is_file():
        raise LoraModuleError(
            f"{where}: {module.path} has no {CONFIG_FILE}; is it a PEFT LoRA adapter directory?"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise LoraModuleError(f"{where}: cannot read {config_path}: {exc}") from None
    if not isinstance(config, dict):
        raise LoraModuleError(f"{where}: {config_path} is not a JSON object")
    peft_type = str(config.get("peft_type") or "LORA").upper()
    if peft_type != "LORA":
        raise LoraModuleError(
            f"{where}: it is an {peft_type} adapter; only LoRA adapters are served"
        )
    if not any((module.path / name).is_file() for name in WEIGHT_FILES):
        raise LoraModuleError(f"{where}: {module.path} has no {' or '.join(WEIGHT_FILES)}")
    return config


def _tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Names and shapes from a safetensors header, without reading the weights."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as weights:
        return {name: list(weights.get_slice(name).get_shape()) for name in weights.keys()}


def _weights_rank(module: LoraModule, dims: dict[str, tuple[int, int]] | None) -> int | None:
    """The adapter's rank read from its weights, each checked against the model's sizes."""
    where = f"LoRA module '{module.name}'"
    weights = module.path / WEIGHT_FILES[0]
    if not weights.is_file():
        return None  # a .bin adapter: vLLM reads and checks it when it loads
    try:
        shapes = _tensor_shapes(weights)
    except Exception as exc:  # any unreadable file is the same problem
        raise LoraModuleError(f"{where}: cannot read {weights} ({type(exc).__name__})") from None
    rank = 0
    for name, shape in shapes.items():
        if "visual" in name.split("."):
            raise LoraModuleError(
                f"{where}: it changes the vision tower ({name}); only adapters of the "
                "language model are served"
            )
        projection = next((p for p in PROJECTIONS if f".{p}.lora_" in name), None)
        if projection is None or len(shape) != 2:
            continue
        if ".lora_A." in name:
            rank = max(rank, shape[0])
        if dims is None:
            continue
        expected_in, expected_out = dims[projection]
        size, expected = (shape[1], expected_in) if ".lora_A." in name else (shape[0], expected_out)
        if size != expected:
            raise LoraModuleError(
                f"{where}: {name} has size {size} where this model's {projection} has "
                f"{expected}; the adapter was trained for a model of another size"
            )
    return rank or None


def _check_base(module: LoraModule, config: dict[str, Any], settings: Settings) -> str:
    """The served model the adapter is listed under, if it was trained for this model."""
    served = settings.served_model_names
    if module.base_model_name is not None:
        if module.base_model_name not in served:
            raise LoraModuleError(
                f"LoRA module '{module.name}': base_model_name '{module.base_model_name}' is not "
                f"a served model name ({', '.join(served)})"
            )
        return module.base_model_name
    trained_on = config.get("base_model_name_or_path")
    if trained_on:
        ours = {Path(str(settings.model)).name.lower(), *(name.lower() for name in served)}
        if Path(str(trained_on)).name.lower() not in ours:
            raise LoraModuleError(
                f"LoRA module '{module.name}' was trained on '{trained_on}' "
                f"({CONFIG_FILE} base_model_name_or_path), not on this server's model "
                f"'{settings.model}'; if it does fit this model, give it in the JSON form with "
                f'"base_model_name": "{served[0]}"'
            )
    return served[0]


def _check_names(settings: Settings) -> None:
    seen = set(settings.served_model_names)
    for module in settings.lora_modules:
        if module.name in seen:
            raise LoraModuleError(
                f"LoRA module name '{module.name}' is used twice (adapters and served model "
                "names share the `model` field)"
            )
        seen.add(module.name)


def plan_adapters(settings: Settings, model_config: dict[str, Any] | None) -> LoraPlan:
    """Check every --lora-modules entry: the directory, its adapter_config.json and weights,
    the base model it was trained on, its rank and its tensor sizes against this model."""
    _check_names(settings)
    dims = _model_dims(model_config) if model_config is not None else None
    explicit_rank = settings.engine_args.get("max_lora_rank")
    ceiling = max(allowed_ranks())
    adapters = []
    for engine_id, module in enumerate(settings.lora_modules, start=1):
        config = _read_config(module)
        parent = _check_base(module, config, settings)
        declared = [config.get("r"), *(config.get("rank_pattern") or {}).values()]
        ranks = [r for r in declared if isinstance(r, int) and r > 0]
        rank = max([*ranks, _weights_rank(module, dims) or 0])
        if rank <= 0:
            raise LoraModuleError(f"LoRA module '{module.name}': {CONFIG_FILE} has no rank `r`")
        limit = explicit_rank if isinstance(explicit_rank, int) else ceiling
        if rank > limit:
            source = "max_lora_rank in --engine-args" if explicit_rank else "vLLM's largest"
            raise LoraModuleError(
                f"LoRA module '{module.name}' has rank {rank}, above {limit} ({source})"
            )
        adapters.append(
            Adapter(
                name=module.name,
                path=str(module.path.resolve()),
                parent=parent,
                rank=rank,
                engine_id=engine_id,
            )
        )
    return LoraPlan(tuple(adapters))
