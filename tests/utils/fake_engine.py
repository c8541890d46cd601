"""A stand-in for vLLM's engine behind the same `Engine` interface, for tests of the HTTP edge.

It has the checkpoint's real tokenizer and chat template (transformers loads them from the
checkpoint directory), so prompts, token counts and `/tokenize` are the server's own; the image
path runs for real up to the engine boundary. What the engine decides (which tokens come next,
grammars, prefix caching) it does not pretend to: its answer is a deterministic walk through
ordinary vocabulary tokens, seeded by the prompt, so a test can predict it but never mistake it
for the model's. Tests whose truth depends on the engine are marked `e2e` and use the real one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lingshu_server.core.errors import EngineUnavailableError, InternalServerError
from lingshu_server.core.image_budget import PixelBudget, resized
from lingshu_server.core.settings import Settings
from lingshu_server.engine.interface import (
    Candidate,
    ChoiceDelta,
    EngineStep,
    SamplingOptions,
    TokenLogprob,
)
from lingshu_server.engine.lora import LoraPlan
from lingshu_server.engine.token_bytes import TokenBytes

MERGE = 28  # pixels per visual token side (patch 14, spatial merge 2)
TEMPORAL_PATCH = 2  # video frames per temporal token


def placeholder_ids(tokenizer: Any) -> dict[str, int]:
    """The single token a prompt holds per image and per video, by the Qwen2-VL names."""
    return {kind: tokenizer.convert_tokens_to_ids(f"<|{kind}_pad|>") for kind in ("image", "video")}


class FakeEngine:
    """An `engine.interface.Engine`; the class itself is the app's `EngineFactory`."""

    default_step_delay_s = 0.0

    def __init__(self, settings: Settings, image_budget: PixelBudget, lora: LoraPlan):
        from transformers import AutoTokenizer

        model_dir = Path(str(settings.model))
        config = json.loads((model_dir / "config.json").read_text())
        text_config = config.get("text_config", config)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.max_model_len: int = settings.max_model_len or text_config["max_position_embeddings"]
        self.vocab_size: int = max(len(self.tokenizer), text_config["vocab_size"])
        self.placeholder_ids = {
            "image": config["image_token_id"],
            "video": config["video_token_id"],
        }
        self.max_tokens_per_visual_item: int = image_budget.tokens[1]
        self.configuration = {"engine": "fake", "dtype": settings.dtype}
        self.sampling_defaults = {"temperature": 1.0, "top_p": 1.0}
        self._token_bytes = TokenBytes(self.tokenizer)
        self.image_budget = image_budget
        self.adapters = {adapter.name for adapter in lora.adapters}
        special = set(self.tokenizer.all_special_ids) | set(self.tokenizer.added_tokens_decoder)
        # ordinary tokens that decode to printable text on their own
        self._answer_ids = [
            i
            for i in range(len(self.tokenizer))
            if i not in special and self.tokenizer.decode([i]).strip().isprintable()
        ]
        self.requests: list[str] = []  # request ids, in the order they reached the engine
        self.priorities: dict[str, int] = {}  # each request's scheduling priority
        self.aborted: list[str] = []
        self.alive = True
        # a test may slow each step down to watch a stream (a launched process: its spec's)
        self.step_delay_s = FakeEngine.default_step_delay_s
        # a test may make the next generation fail after this many steps (a mid-stream error)
        self.fail_next_after_steps: int | None = None

    @staticmethod
    def metrics_exposition() -> bytes:
        return b""

    async def load_adapters(self) -> None:
        return None

    def _visual_tokens(self, image: np.ndarray) -> int:
        height, width = image.shape[:2]
        width, height = resized(width, height, self.image_budget)
        return (width // MERGE) * (height // MERGE)

    def _expanded(
        self, prompt: list[int], images: Sequence[np.ndarray], videos: Sequence[Any]
    ) -> list[int]:
        """The prompt as the engine sees it: each placeholder repeated once per visual token."""
        image_counts = iter(self._visual_tokens(image) for image in images)
        video_counts = iter(
            (len(frames) // TEMPORAL_PATCH)
            * (frames.shape[1] // MERGE)
            * (frames.shape[2] // MERGE)
            for frames, _metadata in videos
        )
        expanded: list[int] = []
        for token in prompt:
            if token == self.placeholder_ids["image"]:
                expanded += [token] * next(image_counts, 1)
            elif token == self.placeholder_ids["video"]:
                expanded += [token] * next(video_counts, 1)
            else:
                expanded.append(token)
        return expanded

    def answer_ids(self, prompt: Sequence[int], index: int, count: int) -> list[int]:
        """The tokens choice `index` answers to `prompt`: the same every time."""
        seed = hashlib.sha256(f"{index}:{list(prompt)}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(seed[:8], "little"))
        picks = rng.integers(0, len(self._answer_ids), size=count)
        return [self._answer_ids[int(i)] for i in picks]

    def _candidate(self, token_id: int, logprob: float) -> Candidate:
        text = self.tokenizer.decode([token_id])
        return Candidate(token=text, logprob=logprob, bytes=self._token_bytes(token_id))

    def _logprob(self, token_id: int, num_top: int) -> TokenLogprob:
        chosen = self._candidate(token_id, -0.5)
        top = [chosen] + [
            self._candidate(alt, -2.0 - rank)
            for rank, alt in enumerate(self._answer_ids[: max(0, num_top - 1)])
        ]
        return TokenLogprob(
            token=chosen.token, logprob=chosen.logprob, bytes=chosen.bytes, top=top[:num_top]
        )

    async def generate(
        self,
        prompt_token_ids: list[int],
        images: Sequence[np.ndarray],
        options: SamplingOptions,
        request_id: str,
        videos: Sequence[tuple[np.ndarray, dict[str, Any]]] = (),
        adapter: str | None = None,
        image_ids: Sequence[str | None] = (),
    ) -> AsyncIterator[EngineStep]:
        if not self.alive:
            raise EngineUnavailableError("the inference engine is not running")
        self.requests.append(request_id)
        self.priorities[request_id] = options.priority
        fail_after, self.fail_next_after_steps = self.fail_next_after_steps, None
        prompt = self._expanded(prompt_token_ids, images, videos)
        answers = [self.answer_ids(prompt, i, options.max_tokens) for i in range(options.n)]
        texts = ["" for _ in answers]
        done = [False for _ in answers]
        prompt_logprobs = None
        if options.prompt_logprobs is not None:
            prompt_logprobs = [None] + [
                self._logprob(t, options.prompt_logprobs) for t in prompt[1:]
            ]
        if options.max_tokens == 0:  # completions' echo of the prompt alone
            yield EngineStep(
                prompt_tokens=len(prompt),
                prompt_token_ids=prompt,
                choices=[
                    ChoiceDelta(
                        index=i, text="", token_ids=[], logprobs=None, finish_reason="length"
                    )
                    for i in range(options.n)
                ],
                finished=True,
                prompt_logprobs=prompt_logprobs,
            )
            return
        try:
            for step in range(options.max_tokens):
                if self.step_delay_s:
                    await asyncio.sleep(self.step_delay_s)
                else:
                    await asyncio.sleep(0)
                if not self.alive:
                    raise EngineUnavailableError("the inference engine is not running")
                if fail_after is not None and step >= fail_after:
                    raise InternalServerError("generation failed")
                choices = []
                for i, ids in enumerate(answers):
                    if done[i]:
                        continue
                    token_id = ids[step]
                    piece = self.tokenizer.decode([token_id])
                    finish = "length" if step == options.max_tokens - 1 else None
                    stop = next((s for s in options.stop if s in texts[i] + piece), None)
                    if stop is not None:
                        piece = (texts[i] + piece).split(stop, 1)[0][len(texts[i]) :]
                        finish = "stop"
                    texts[i] += piece
                    done[i] = finish is not None
                    choices.append(
                        ChoiceDelta(
                            index=i,
                            text=piece,
                            token_ids=[token_id],
                            logprobs=[self._logprob(token_id, options.logprobs)]
                            if options.logprobs is not None
                            else None,
                            finish_reason=finish,
                        )
                    )
                yield EngineStep(
                    prompt_tokens=len(prompt),
                    prompt_token_ids=prompt,
                    choices=choices,
                    finished=all(done),
                    prompt_logprobs=prompt_logprobs if step == 0 else None,
                )
                if all(done):
                    return
        except (asyncio.CancelledError, GeneratorExit):
            self.aborted.append(request_id)
            raise

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def is_healthy(self) -> bool:
        return self.alive

    def kill(self) -> None:
        """The engine dies: health checks fail and every generation ends with 503."""
        self.alive = False

    def shutdown(self) -> None:
        self.alive = False
