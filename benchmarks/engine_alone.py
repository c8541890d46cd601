"""The ceiling: vLLM's AsyncLLM in this process, no HTTP, fed pre-decoded images.

Run by `benchmarks.compare` as a child process (so the engine is torn down with it):

    python -m benchmarks.engine_alone --plan plan.json --out results.json

The plan names the AsyncEngineArgs and the cases. For each case the same requests as the HTTP
targets get (same messages, same image bytes) are built before the clock starts: the chat
template rendered and tokenized (one <|image_pad|> per image), the images decoded and resized as
our server prepares them (`lingshu_server.inputs.media.prepare_image`: the same pixels reach the
engine, DICOM included). The same closed loop then drives `AsyncLLM.generate` with streamed
deltas, timed as the load generator times an SSE stream. CPU seconds are this process's (the
engine's front half: input processing, detokenization, the loop), its engine-core child not
included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from benchmarks.loadgen import (
    WARMUP_INDEX_OFFSET,
    ImageSpec,
    LoadSpec,
    RequestRecord,
    Summary,
    TokenClock,
    closed_loop,
    process_cpu_seconds,
    request_messages,
    summarize,
)

# Sampling fields a checkpoint's generation_config.json may default, as our server applies them.
MODEL_DEFAULT_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def spec_to_dict(spec: LoadSpec) -> dict[str, Any]:
    data = asdict(spec)
    data["images"] = [str(image) for image in spec.images]
    data.pop("videos")
    return data


def spec_from_dict(data: dict[str, Any]) -> LoadSpec:
    images = tuple(ImageSpec.parse(text) for text in data.get("images", ()))
    return LoadSpec(**{**data, "images": images})


class PromptBuilder:
    def __init__(self, tokenizer: Any, template: str, min_pixels: int, max_pixels: int):
        from lingshu_server.core.image_budget import PixelBudget
        from lingshu_server.core.settings import Settings
        from lingshu_server.inputs.media import ImageLimits

        self.tokenizer = tokenizer
        self.template = template
        self.limits = ImageLimits.from_settings(Settings(), PixelBudget(min_pixels, max_pixels))

    def image(self, url: str) -> np.ndarray:
        """The image our server would hand the engine for this data URL (H x W x 3 uint8)."""
        from lingshu_server.inputs.dicom import DicomOptions
        from lingshu_server.inputs.media import decode_data_url, prepare_image

        budget = self.limits.budget(None, None, None)
        encoded = decode_data_url(url, "image")
        return prepare_image(encoded, self.limits, budget, DicomOptions(), "image").pixels

    def prompt(self, spec: LoadSpec, index: int, first_turn: bool = False) -> dict[str, Any]:
        images = []
        messages = request_messages(spec, index, first_turn)
        for message in messages:
            if isinstance(message["content"], list):
                for k, part in enumerate(message["content"]):
                    if part["type"] == "image_url":
                        images.append(self.image(part["image_url"]["url"]))
                        message["content"][k] = {"type": "image"}
        rendered = self.tokenizer.apply_chat_template(
            messages, chat_template=self.template, tokenize=False, add_generation_prompt=True
        )
        prompt: dict[str, Any] = {
            "prompt_token_ids": self.tokenizer.encode(rendered, add_special_tokens=False)
        }
        if images:
            prompt["multi_modal_data"] = {"image": images}
        return prompt

    def prompts(
        self, spec: LoadSpec, count: int, start: int = 0, first_turn: bool = False
    ) -> list[dict[str, Any]]:
        return [self.prompt(spec, start + i, first_turn) for i in range(count)]


async def _generate_one(
    engine: Any, prompt: dict[str, Any], params: Any, index: int
) -> RequestRecord:
    clock = TokenClock(RequestRecord(index))
    completion_tokens = 0
    try:
        async for output in engine.generate(prompt, params, f"bench-{uuid.uuid4().hex}"):
            if output.prompt_token_ids is not None and clock.record.prompt_tokens is None:
                clock.record.prompt_tokens = len(output.prompt_token_ids)
            choice = output.outputs[0]
            completion_tokens += len(choice.token_ids)
            if choice.text:
                clock.content()
    except Exception as exc:  # the engine's failures are recorded, as a server's 500 would be
        return clock.done(f"{type(exc).__name__}: {exc}"[:300])
    clock.record.completion_tokens = completion_tokens
    return clock.done()


async def run_case(
    engine: Any, builder: PromptBuilder, spec: LoadSpec, defaults: dict[str, Any]
) -> Summary:
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    params = SamplingParams(
        **{
            **defaults,
            "temperature": spec.temperature,
            "max_tokens": spec.max_tokens,
            "ignore_eos": spec.ignore_eos,
            "output_kind": RequestOutputKind.DELTA,
        }
    )
    prompts = builder.prompts(spec, spec.requests)
    unmeasured = [builder.prompts(spec, spec.warmup, start=WARMUP_INDEX_OFFSET)]
    if spec.followup:  # each conversation's first question, answered before the clock starts
        unmeasured = [
            builder.prompts(spec, spec.warmup, WARMUP_INDEX_OFFSET, first_turn=True),
            *unmeasured,
            builder.prompts(spec, spec.requests, first_turn=True),
        ]
    for batch in unmeasured:
        await closed_loop(
            spec.concurrency,
            len(batch),
            lambda i, batch=batch: _generate_one(engine, batch[i], params, i),
        )
    pid = os.getpid()
    cpu_before = process_cpu_seconds(pid)
    started = time.perf_counter()
    records = await closed_loop(
        spec.concurrency, len(prompts), lambda i: _generate_one(engine, prompts[i], params, i)
    )
    duration = time.perf_counter() - started
    cpu_after = process_cpu_seconds(pid)
    cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return summarize(records, spec.concurrency, duration, cpu)


async def run_plan(plan: dict[str, Any]) -> list[dict[str, Any]]:
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from lingshu_server.services.chat_prompt import load_chat_template

    kwargs = plan["engine"]
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
    try:
        tokenizer = engine.get_tokenizer()
        template = load_chat_template(kwargs["model"], tokenizer)
        size = kwargs["mm_processor_kwargs"]["size"]
        builder = PromptBuilder(tokenizer, template, size["shortest_edge"], size["longest_edge"])
        model_defaults = engine.model_config.get_diff_sampling_param()
        defaults = {k: v for k, v in model_defaults.items() if k in MODEL_DEFAULT_FIELDS}
        results = []
        for case in plan["cases"]:
            summary = await run_case(engine, builder, spec_from_dict(case["spec"]), defaults)
            _log(f"{case['name']}: {json.dumps(summary.to_dict())}")
            results.append({"case": case["name"], "summary": summary.to_dict()})
        return results
    finally:
        engine.shutdown()


def _log(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine_alone")
    parser.add_argument("--plan", required=True, help="JSON: {engine: kwargs, cases: [...]}")
    parser.add_argument("--out", required=True, help="where the results JSON goes")
    args = parser.parse_args(argv)
    with open(args.plan) as file:
        plan = json.load(file)
    results = asyncio.run(run_plan(plan))
    with open(args.out, "w") as file:
        json.dump(results, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
