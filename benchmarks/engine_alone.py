"""The ceiling: vLLM's AsyncLLM in this process, no HTTP, fed pre-decoded images.

Run by `benchmarks.compare` as a child process (so the engine is torn down with it):

    python -m benchmarks.engine_alone --plan plan.json --out results.json

The plan names the AsyncEngineArgs and the cases. For each case the same requests as the HTTP
targets get (same text, same image bytes) are built before the clock starts: the chat template
rendered and tokenized (one <|image_pad|> per image), the images decoded and resized to the pixel
budget. The same closed loop then drives `AsyncLLM.generate` with streamed deltas, timed as the
load generator times an SSE stream. CPU seconds are this process's (the engine's front half:
input processing, detokenization, the loop), its engine-core child not included.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from PIL import Image

from benchmarks.loadgen import (
    WARMUP_INDEX_OFFSET,
    ImageSpec,
    LoadSpec,
    RequestRecord,
    Summary,
    TokenClock,
    closed_loop,
    process_cpu_seconds,
    request_images,
    request_text,
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


def decode_to_budget(data: bytes, min_pixels: int, max_pixels: int) -> Image.Image:
    """Decode and resize once to the Qwen2.5-VL pixel budget (the engine then leaves it as is)."""
    from qwen_vl_utils import smart_resize

    image = Image.open(io.BytesIO(data))
    image = image.convert("RGB")
    height, width = smart_resize(
        image.height, image.width, factor=28, min_pixels=min_pixels, max_pixels=max_pixels
    )
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return image


class PromptBuilder:
    def __init__(self, tokenizer: Any, template: str, min_pixels: int, max_pixels: int):
        self.tokenizer = tokenizer
        self.template = template
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels

    def prompt(self, spec: LoadSpec, index: int) -> dict[str, Any]:
        text = request_text(index)
        content: str | list[dict[str, Any]] = text
        if spec.images:
            content = [{"type": "image"} for _ in spec.images] + [{"type": "text", "text": text}]
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}],
            chat_template=self.template,
            tokenize=False,
            add_generation_prompt=True,
        )
        prompt: dict[str, Any] = {
            "prompt_token_ids": self.tokenizer.encode(rendered, add_special_tokens=False)
        }
        if spec.images:
            prompt["multi_modal_data"] = {
                "image": [
                    decode_to_budget(data, self.min_pixels, self.max_pixels)
                    for data, _ in request_images(spec, index)
                ]
            }
        return prompt

    def prompts(self, spec: LoadSpec, count: int, start: int = 0) -> list[dict[str, Any]]:
        return [self.prompt(spec, start + i) for i in range(count)]


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
    if spec.warmup:
        warm = builder.prompts(spec, spec.warmup, start=WARMUP_INDEX_OFFSET)
        await closed_loop(
            spec.concurrency, len(warm), lambda i: _generate_one(engine, warm[i], params, i)
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

    from lingshu_server.services.chat import load_chat_template

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
