"""Engine arguments and LoRA adapters that cannot work are refused at start-up, before the engine
loads, with one line naming the culprit and exit code 2: the checks in process for every case,
and through the real command line for the exit code and the one line."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from lingshu_server import serve as serve_module
from lingshu_server.cli import main
from lingshu_server.core.image_budget import PixelBudget
from lingshu_server.core.settings import Settings
from lingshu_server.demo_model import ensure_demo_model
from lingshu_server.engine.engine_args import EngineArgsError, check_engine_args, engine_kwargs
from lingshu_server.engine.lora import LoraModuleError, LoraPlan, plan_adapters
from lingshu_server.engine.model_check import check_supported_model
from tests.engine_knobs.conftest import ADAPTER
from tests.utils.in_process_care import process_logging_kept
from tests.utils.lora import edit_config


def demo_settings(**values) -> Settings:
    return Settings(model=str(ensure_demo_model()), served_model_name=["lingshu-demo"], **values)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"engine_args": {"max_num_batched_tokenz": 4096}},
            "'max_num_batched_tokenz' is not an engine argument of vLLM 0.32.0; "
            "did you mean 'max_num_batched_tokens'?",
        ),
        ({"engine_args": {"no_such_thing": 1}}, "'no_such_thing' is not an engine argument"),
        (
            {"engine_args": {"max_num_batched_tokens": 4096}},
            "has its own flag; use --max-num-batched-tokens",
        ),
        ({"engine_args": {"seed": 1}}, "'seed' has its own flag; use --seed"),
        ({"engine_args": {"swap_space": 4}}, "use --swap-space"),
        ({"engine_args": {"kv_offloading_size": 4}}, "use --swap-space"),
        ({"engine_args": {"tensor_parallel_size": 2}}, "use --tensor-parallel-size"),
        (
            {"engine_args": {"limit_mm_per_prompt": {"image": 9}}},
            "is set by the server; use --max-images-per-request and --max-videos-per-request",
        ),
        ({"engine_args": {"mm_processor_kwargs": {}}}, "use --min-pixels and --max-pixels"),
        ({"engine_args": {"enable_lora": True}}, "use --lora-modules"),
        ({"engine_args": {"model": "/elsewhere"}}, "use --model"),
        ({"engine_args": {"max_logprobs": "40"}}, "'max_logprobs': Input should be a valid int"),
        ({"engine_args": {"disable_log_stats": "yes"}}, "'disable_log_stats': Input should be"),
        ({"kv_cache_dtype": "fp9"}, "--kv-cache-dtype: Input should be 'auto'"),
        ({"quantization": "awk"}, "unknown quantization method 'awk'; did you mean 'awq'?"),
        ({"swap_space": 4}, "--swap-space needs a GPU"),
    ],
)
def test_engine_args_that_cannot_work(values, expected):
    with pytest.raises(EngineArgsError) as caught:
        check_engine_args(demo_settings(**values))
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_engine_args_that_work_reach_the_engine_arguments():
    settings = demo_settings(
        engine_args={"max_logprobs": 30, "disable_log_stats": True},
        seed=3,
        kv_cache_dtype="fp8",
        enable_chunked_prefill=False,
        quantization="fp8",
    )
    check_engine_args(settings)
    kwargs = engine_kwargs(settings, PixelBudget(3136, 1003520), LoraPlan())
    assert kwargs["max_logprobs"] == 30 and kwargs["disable_log_stats"] is True
    assert kwargs["seed"] == 3 and kwargs["kv_cache_dtype"] == "fp8"
    assert kwargs["enable_chunked_prefill"] is False and kwargs["quantization"] == "fp8"
    assert "enable_prefix_caching" not in kwargs  # unset: vLLM's default
    assert "enable_lora" not in kwargs


@pytest.fixture
def adapter(adapter_workdir: Path, tmp_path: Path) -> Path:
    """A copy of the session's PEFT adapter that a test may break."""
    return Path(shutil.copytree(adapter_workdir / ADAPTER, tmp_path / ADAPTER))


def plan(*modules: str, **values) -> LoraPlan:
    settings = demo_settings(lora_modules=list(modules), **values)
    return plan_adapters(settings, check_supported_model(settings.model))


def test_a_peft_adapter_is_planned_and_sizes_the_engine(adapter: Path):
    planned = plan(f"{ADAPTER}={adapter}")
    (only,) = planned.adapters
    assert (only.name, only.parent, only.rank) == (ADAPTER, "lingshu-demo", 8)
    assert planned.engine_kwargs({}) == {
        "enable_lora": True,
        "max_lora_rank": 8,
        "max_loras": 1,
        "max_cpu_loras": 1,
    }
    # vLLM's JSON form, with the parent named
    form = json.dumps({"name": "b", "path": str(adapter), "base_model_name": "lingshu-demo"})
    assert plan(form).adapters[0].parent == "lingshu-demo"


def test_ranks_round_up_to_what_vllm_allows(adapter: Path, tmp_path: Path):
    other = Path(shutil.copytree(adapter, tmp_path / "other"))
    edit_config(other, r=10)
    planned = plan(f"a={adapter}", f"b={other}")
    assert planned.engine_kwargs({})["max_lora_rank"] == 16
    assert planned.engine_kwargs({"max_loras": 2}) == {
        "enable_lora": True,
        "max_lora_rank": 16,
        "max_cpu_loras": 2,
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("missing", "does not exist"),
        ("file", "is not a directory"),
        ("no-config", "has no adapter_config.json"),
        ("no-weights", "has no adapter_model.safetensors or adapter_model.bin"),
        ("not-lora", "it is an IA3 adapter; only LoRA adapters are served"),
        ("other-base", "was trained on 'Qwen/Qwen2.5-VL-7B-Instruct'"),
        ("other-size", "the adapter was trained for a model of another size"),
        ("vision", "it changes the vision tower"),
    ],
)
def test_adapters_that_cannot_be_served(adapter: Path, change: str, expected: str):
    path = adapter
    if change == "missing":
        path = adapter.parent / "nowhere"
    elif change == "file":
        path = adapter / "adapter_config.json"
    elif change == "no-config":
        (adapter / "adapter_config.json").unlink()
    elif change == "no-weights":
        (adapter / "adapter_model.safetensors").unlink()
    elif change == "not-lora":
        edit_config(adapter, peft_type="IA3")
    elif change == "other-base":
        edit_config(adapter, base_model_name_or_path="Qwen/Qwen2.5-VL-7B-Instruct")
    else:
        rewrite_weights(adapter, change)
    with pytest.raises(LoraModuleError) as caught:
        plan(f"{ADAPTER}={path}")
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert ADAPTER in str(caught.value)


def rewrite_weights(adapter: Path, change: str) -> None:
    """The adapter's weights for a wider model, or with a vision tower tensor added."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(adapter / "adapter_model.safetensors")
    if change == "other-size":
        weights = {
            name: torch.zeros(t.shape[0], 2 * t.shape[1]) if ".lora_A." in name else t
            for name, t in weights.items()
        }
    else:
        vision = "base_model.model.model.visual.blocks.0.attn.qkv.lora_A.weight"
        weights[vision] = torch.zeros(8, 32)
    save_file(weights, adapter / "adapter_model.safetensors")


def test_other_base_is_served_when_the_operator_names_the_parent(adapter: Path):
    edit_config(adapter, base_model_name_or_path="Qwen/Qwen2.5-VL-7B-Instruct")
    form = json.dumps({"name": ADAPTER, "path": str(adapter), "base_model_name": "lingshu-demo"})
    assert plan(form).adapters[0].parent == "lingshu-demo"
    wrong = json.dumps({"name": ADAPTER, "path": str(adapter), "base_model_name": "Lingshu-7B"})
    with pytest.raises(LoraModuleError, match="'Lingshu-7B' is not a served model name"):
        plan(wrong)


def test_names_must_be_unique(adapter: Path):
    with pytest.raises(LoraModuleError, match="'lingshu-demo' is used twice"):
        plan(f"lingshu-demo={adapter}")
    with pytest.raises(LoraModuleError, match="'a' is used twice"):
        plan(f"a={adapter}", f"a={adapter}")


def test_rank_over_the_chosen_maximum(adapter: Path):
    with pytest.raises(LoraModuleError, match="has rank 8, above 1"):
        plan(f"{ADAPTER}={adapter}", engine_args={"max_lora_rank": 1})
    edit_config(adapter, r=1024)
    with pytest.raises(LoraModuleError, match="has rank 1024, above 512"):
        plan(f"{ADAPTER}={adapter}")


def test_malformed_entries_are_settings_errors():
    for entry in ("no-equals-sign", "=path", '{"name": "a"'):
        with pytest.raises(ValueError, match="lora_modules"):
            demo_settings(lora_modules=[entry])
    with pytest.raises(ValueError, match="engine_args"):
        demo_settings(engine_args="{not json")
    with pytest.raises(ValueError, match="engine_args must be a JSON object"):
        demo_settings(engine_args="[1, 2]")


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """`lingshu-server demo ARGS` as the command line runs it, in this process: what it prints
    and its exit code. Nothing may get as far as starting a server (or loading an engine)."""

    def never_serve(*_: object, **__: object) -> None:
        raise AssertionError("the command line got past its start-up checks")

    monkeypatch.setattr(serve_module, "http_server", never_serve)

    def run(*args: str, env: dict[str, str] | None = None) -> CliResult:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        with process_logging_kept():
            code = main(["demo", *args, "--port", "1"])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def assert_refused_before_loading(result: CliResult, expected: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("lingshu-server:")]
    assert lines == [f"lingshu-server: {expected}"], result.stderr[-2000:]
    # nothing was loaded: the engine never logged its arguments
    assert "engine arguments" not in result.stdout + result.stderr


def test_command_line_refuses_an_unknown_engine_argument(run_cli):
    result = run_cli("--engine-args", '{"max_num_batched_tokenz": 4096}')
    assert_refused_before_loading(
        result,
        "--engine-args: 'max_num_batched_tokenz' is not an engine argument of vLLM 0.32.0; "
        "did you mean 'max_num_batched_tokens'?",
    )


def test_environment_lora_module_that_does_not_exist(run_cli, tmp_path: Path):
    missing = tmp_path / "missing-adapter"
    result = run_cli(env={"LINGSHU_LORA_MODULES": f"chest={missing}"})
    assert_refused_before_loading(result, f"LoRA module 'chest': {missing} does not exist")


def test_command_line_refuses_engine_args_that_are_not_json(run_cli):
    result = run_cli("--engine-args", "max_logprobs=30")
    assert result.returncode == 2
    assert "engine_args is not valid JSON" in result.stderr
