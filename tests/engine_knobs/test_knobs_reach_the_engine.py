"""The typed flags and --engine-args of the guide's command reach vLLM: the start-up log's
`engine configuration` is read back from the engine's own resolved configuration."""

from __future__ import annotations

import json

import pytest

from tests.engine_knobs.conftest import KnobsServer

# The `knobs` server has engine arguments of its own (LoRA, cache knobs): a process of its own.
pytestmark = pytest.mark.e2e


def log_record(knobs: KnobsServer, message: str) -> dict:
    for line in knobs.server.log_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("message") == message:
                return record
    raise AssertionError(f"no {message!r} record in the log")


def test_the_engine_resolved_the_typed_flags_and_engine_args(knobs: KnobsServer):
    resolved = log_record(knobs, "engine configuration")
    assert resolved["seed"] == 7
    assert resolved["max_num_batched_tokens"] == 4096
    assert resolved["enable_prefix_caching"] is True
    assert resolved["mm_processor_cache_gb"] == 1.0
    assert resolved["max_logprobs"] == 30  # from --engine-args
    # sized for the one rank-8 adapter
    assert resolved["max_loras"] == 1 and resolved["max_lora_rank"] == 8
    # what the demo sets, and vLLM's defaults, filled in
    assert resolved["max_model_len"] == 8192
    assert resolved["enable_chunked_prefill"] is True
    assert resolved["kv_cache_dtype"] == "auto"


def test_the_engine_arguments_are_logged_as_passed(knobs: KnobsServer):
    passed = log_record(knobs, "engine arguments")
    assert passed["seed"] == 7
    assert passed["max_num_batched_tokens"] == 4096
    assert passed["enable_prefix_caching"] is True
    assert passed["max_logprobs"] == 30
    assert passed["enable_lora"] is True
    # flags left unset are vLLM's business: not passed at all
    assert "enable_chunked_prefill" not in passed and "kv_offloading_size" not in passed


def test_vllm_reports_the_cache_configuration_it_runs_with(knobs: KnobsServer):
    import httpx

    metrics = httpx.get(f"{knobs.server.base_url}/metrics", timeout=30).text
    info = next(line for line in metrics.splitlines() if line.startswith("vllm:cache_config_info"))
    assert 'enable_prefix_caching="True"' in info
