"""Completions: prompts (text or token ids) -> engine -> text, as OpenAI's legacy API and vLLM
serve it: `n` choices per prompt, `echo`, legacy `logprobs`, streaming."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from lingshu_server.core.errors import ContextLengthExceededError, InvalidRequestError
from lingshu_server.core.metrics import Metrics
from lingshu_server.engine.interface import Engine, EngineStep, TokenLogprob
from lingshu_server.protocol.common import Usage, now
from lingshu_server.protocol.completions import (
    DEFAULT_MAX_TOKENS,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    CompletionRequest,
    text_completion_id,
)
from lingshu_server.services.admission import AdmissionController
from lingshu_server.services.chat_prompt import TRIM_AFTER_CHARS, release_memory, tokens_at_least
from lingshu_server.services.generation import (
    EngineRun,
    deadline_after,
    merged,
    start_run,
    step_tokens,
    timeout_of,
)
from lingshu_server.services.models import ServedModels
from lingshu_server.services.request_records import (
    note_cached,
    note_disconnect,
    note_usage,
    record_text_prompt,
)
from lingshu_server.services.sampling import sampling_options
from lingshu_server.services.streaming import FLUSH, guarded_events, sse


@dataclass
class TextPrompt:
    token_ids: list[int]
    text: str  # as sent, or the token ids decoded (what `echo` returns)


@dataclass
class _Choice:
    """What one choice has returned so far."""

    prompt: int
    started: bool = False
    chars: int = 0  # characters of text returned, where the next token's text_offset starts
    tokens: int = 0  # generated tokens
    finished: bool = False


@dataclass
class _Piece:
    """One choice's share of one engine step, as it goes to the client."""

    index: int
    text: str = ""
    logprobs: list[TokenLogprob | None] = field(default_factory=list)
    token_strings: list[str] = field(default_factory=list)  # beside logprobs, for None entries
    prompt_token_ids: list[int] | None = None
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None


def check_token_ids(ids: list[int], vocab_size: int, param: str) -> None:
    bad = next((token for token in ids if token < 0 or token >= vocab_size), None)
    if bad is not None:
        raise InvalidRequestError(
            f"Token id {bad} is out of vocabulary (this model's ids are 0 to {vocab_size - 1})",
            param=param,
            code="invalid_token_id",
        )


def legacy_logprobs(piece: _Piece, start: int, num_top: int) -> CompletionLogprobs:
    """OpenAI's legacy shape. The top alternatives include the chosen token, as OpenAI's do;
    text_offset counts from the start of the choice's text (the prompt's, when echoed)."""
    tokens: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    offset = start
    for token, entry in zip(piece.token_strings, piece.logprobs, strict=True):
        tokens.append(token)
        offsets.append(offset)
        offset += len(token)
        if entry is None:
            values.append(None)
            tops.append(None)
            continue
        values.append(entry.logprob)
        top = {candidate.token: candidate.logprob for candidate in entry.top[:num_top]}
        # the chosen token's own logprob, even where another token has the same text
        top[entry.token] = entry.logprob
        tops.append(top)
    return CompletionLogprobs(
        tokens=tokens, token_logprobs=values, top_logprobs=tops, text_offset=offsets
    )


class _Choices:
    """Turns engine steps of every prompt into pieces, choice by choice: the echoed prompt
    first (with its logprobs), then the generated text."""

    def __init__(
        self,
        request: CompletionRequest,
        prompts: list[TextPrompt],
        token_text: Callable[[int], str],
    ):
        self._request = request
        self._prompts = prompts
        self._token_text = token_text
        n = request.num_choices
        self.choices = [_Choice(prompt=i // n) for i in range(len(prompts) * n)]
        self._prompt_logprobs: dict[int, list[TokenLogprob | None]] = {}
        self._cached_tokens: dict[int, int] = {}  # per prompt, from its first step

    def pieces(self, prompt_index: int, step: EngineStep) -> list[_Piece]:
        if step.prompt_logprobs is not None:
            self._prompt_logprobs[prompt_index] = step.prompt_logprobs
        if prompt_index not in self._cached_tokens:
            self._cached_tokens[prompt_index] = step.cached_tokens
            note_cached(step.cached_tokens)
        pieces = []
        for delta in step.choices:
            index = prompt_index * self._request.num_choices + delta.index
            choice = self.choices[index]
            piece = _Piece(index=index)
            if not choice.started:
                self._start(choice, piece)
            if not self._request.echo_only:
                piece.text += delta.text
                piece.token_ids = list(delta.token_ids)
                if self._request.logprobs is not None and delta.logprobs:
                    piece.logprobs.extend(delta.logprobs)
                    piece.token_strings.extend(entry.token for entry in delta.logprobs)
                choice.tokens += len(delta.token_ids)
            if delta.finish_reason is not None:
                piece.finish_reason = delta.finish_reason
                choice.finished = True
            pieces.append(piece)
        return pieces

    def _start(self, choice: _Choice, piece: _Piece) -> None:
        """A choice's first piece: the prompt's ids (return_token_ids) and the echo."""
        choice.started = True
        prompt = self._prompts[choice.prompt]
        if self._request.return_token_ids:
            piece.prompt_token_ids = prompt.token_ids
        if not self._request.echo:
            return
        piece.text = prompt.text
        if self._request.logprobs is not None:
            entries = self._prompt_logprobs.get(choice.prompt) or [None] * len(prompt.token_ids)
            piece.logprobs.extend(entries)
            piece.token_strings.extend(
                entry.token if entry is not None else self._token_text(token_id)
                for token_id, entry in zip(prompt.token_ids, entries, strict=True)
            )

    def unfinished(self) -> list[_Piece]:
        """Choices the deadline cut off: finish_reason length, as if max_tokens were reached."""
        pieces = []
        for index, choice in enumerate(self.choices):
            if not choice.finished:
                choice.finished = True
                pieces.append(_Piece(index=index, finish_reason="length"))
        return pieces

    def wire(self, piece: _Piece) -> CompletionChoice:
        """A piece as OpenAI's choice object; advances the choice's text offset."""
        choice = self.choices[piece.index]
        logprobs = None
        if self._request.logprobs is not None:
            logprobs = legacy_logprobs(piece, choice.chars, self._request.logprobs)
        choice.chars += len(piece.text)
        ids = self._request.return_token_ids
        return CompletionChoice(
            index=piece.index,
            text=piece.text,
            logprobs=logprobs,
            finish_reason=piece.finish_reason,
            prompt_token_ids=piece.prompt_token_ids,
            token_ids=piece.token_ids if ids else None,
        )

    def usage(self) -> Usage:
        prompt_tokens = sum(len(prompt.token_ids) for prompt in self._prompts)
        completion_tokens = sum(choice.tokens for choice in self.choices)
        return Usage.of(prompt_tokens, completion_tokens, sum(self._cached_tokens.values()))


def _merge_pieces(pieces: list[_Piece]) -> _Piece:
    whole = _Piece(index=pieces[0].index)
    for piece in pieces:
        whole.text += piece.text
        whole.logprobs.extend(piece.logprobs)
        whole.token_strings.extend(piece.token_strings)
        whole.prompt_token_ids = whole.prompt_token_ids or piece.prompt_token_ids
        whole.token_ids.extend(piece.token_ids)
        whole.finish_reason = piece.finish_reason or whole.finish_reason
    return whole


@dataclass(kw_only=True)
class _Started:
    model: str
    fingerprint: str  # the answer's system_fingerprint
    run: EngineRun[tuple[int, EngineStep]]
    first: tuple[int, EngineStep] | None
    choices: _Choices


class CompletionService:
    def __init__(
        self,
        *,
        engine: Engine,
        models: ServedModels,
        pool: Executor,
        max_tokens_cap: int,
        admission: AdmissionController,
        metrics: Metrics,
        request_timeout: float | None = None,
    ):
        self._engine = engine
        self._models = models
        self._pool = pool
        self._max_tokens_cap = max_tokens_cap
        self._admission = admission
        self._metrics = metrics
        self._request_timeout = request_timeout

    async def _prompts(self, request: CompletionRequest) -> list[TextPrompt]:
        """Tokenized and checked in the worker pool: token ids in the vocabulary, every prompt
        shorter than the context."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self._prepare_prompts, request
        )

    def _prepare_prompts(self, request: CompletionRequest) -> list[TextPrompt]:
        tokenizer = self._engine.tokenizer
        prompts = []
        single = len(request.prompts) == 1 and request.prompts[0] is request.prompt
        for i, prompt in enumerate(request.prompts):
            param = "prompt" if single else f"prompt[{i}]"
            if isinstance(prompt, str):
                ids = self._tokenize(prompt, request.add_special_tokens, param)
                prompts.append(TextPrompt(ids, prompt))
            else:
                check_token_ids(prompt, self._engine.vocab_size, param)
                self._check_length(len(prompt), param)
                text = tokenizer.decode(prompt) if request.echo else ""
                prompts.append(TextPrompt(list(prompt), text))
        if sum(len(p.text) for p in prompts) > TRIM_AFTER_CHARS:
            release_memory()
        return prompts

    def _tokenize(self, text: str, add_special_tokens: bool, param: str) -> list[int]:
        tokenizer = self._engine.tokenizer
        limit = self._engine.max_model_len

        def encode(piece: str) -> list[int]:
            return tokenizer.encode(piece, add_special_tokens=False)

        if len(text) > limit:  # only then can the text overflow the context: count it first
            at_least = tokens_at_least([text], encode, limit)
            if at_least >= limit:
                release_memory()
                self._check_length(at_least, param, at_least=True)
        ids = tokenizer.encode(text, add_special_tokens=add_special_tokens)
        self._check_length(len(ids), param)
        return ids

    def _check_length(self, tokens: int, param: str, at_least: bool = False) -> None:
        limit = self._engine.max_model_len
        if tokens >= limit:
            count = f"more than {tokens}" if at_least else f"{tokens}"
            raise ContextLengthExceededError(
                f"This model's maximum context length is {limit} tokens. However, the prompt "
                f"has {count} tokens, and at least one more is needed to answer.",
                param=param,
            )

    async def _start(self, request: CompletionRequest) -> _Started:
        model = self._models.resolve(request.model)
        options = sampling_options(
            request,
            self._max_tokens_cap,
            logprobs=request.logprobs,
            prompt_logprobs=request.logprobs if request.echo else None,
            default_max_tokens=DEFAULT_MAX_TOKENS,
        )
        deadline = deadline_after(timeout_of(request.request_timeout, self._request_timeout))
        request_id = text_completion_id()
        prompts: list[TextPrompt] = []

        async def prepare() -> AsyncGenerator[tuple[int, EngineStep], None]:
            started = time.perf_counter()
            prompts.extend(await self._prompts(request))
            record_text_prompt(self._metrics, sum(len(p.token_ids) for p in prompts), started)
            runs = [
                self._engine.generate(
                    prompt.token_ids, [], options, f"{request_id}-{i}", adapter=model.adapter
                )
                for i, prompt in enumerate(prompts)
            ]
            return merged(runs)

        run, first = await start_run(
            self._admission,
            request_id,
            deadline,
            prepare,
            tokens_of=lambda indexed: step_tokens(indexed[1]),
        )
        choices = _Choices(request, prompts, self._token_text)
        return _Started(
            model=model.name, fingerprint=model.fingerprint, run=run, first=first, choices=choices
        )

    def _token_text(self, token_id: int) -> str:
        return self._engine.tokenizer.decode([token_id])

    async def complete(self, request: CompletionRequest) -> Completion:
        started = await self._start(request)
        run, choices = started.run, started.choices
        collected: list[list[_Piece]] = [[] for _ in choices.choices]
        item = started.first
        try:
            while item is not None:
                for piece in choices.pieces(*item):
                    collected[piece.index].append(piece)
                item = await run.next()
        except asyncio.CancelledError:
            note_disconnect()
            raise
        finally:
            await run.close()
        for piece in choices.unfinished():
            collected[piece.index].append(piece)
        usage = choices.usage()
        note_usage(usage.completion_tokens)
        return Completion(
            id=run.request_id,
            created=now(),
            model=started.model,
            system_fingerprint=started.fingerprint,
            choices=[choices.wire(_merge_pieces(pieces)) for pieces in collected],
            usage=usage,
        )

    async def stream(self, request: CompletionRequest) -> AsyncIterator[str]:
        """Validate and start; the returned iterator yields OpenAI's text_completion events."""
        started = await self._start(request)
        return guarded_events(self._events(request, started), started.run)

    async def _events(self, request: CompletionRequest, started: _Started) -> AsyncIterator[str]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        # as chat: "usage": null on every chunk when usage was asked for, else no usage key
        exclude = None if include_usage else {"usage"}
        header: dict[str, Any] = {
            "id": started.run.request_id,
            "created": now(),
            "model": started.model,
            "system_fingerprint": started.fingerprint,
        }
        choices = started.choices

        def chunk(piece: _Piece) -> str:
            body = CompletionChunk(**header, choices=[choices.wire(piece)])
            return sse(body.model_dump_json(exclude=exclude))

        item = started.first
        while item is not None:
            for piece in choices.pieces(*item):
                if piece.text or piece.logprobs or piece.token_ids or piece.finish_reason:
                    yield chunk(piece)
            yield FLUSH  # this step's events go out together, now
            item = await started.run.next()
        for piece in choices.unfinished():
            yield chunk(piece)
        usage = choices.usage()
        note_usage(usage.completion_tokens)
        if include_usage:
            yield sse(CompletionChunk(**header, choices=[], usage=usage).model_dump_json())
