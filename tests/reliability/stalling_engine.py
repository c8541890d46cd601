"""A stand-in for vLLM's engine, for the one fault the real engine cannot show on demand: a
step that never comes. Everything else (HTTP, auth, chat template, tokenizer, deadlines,
disconnect handling) is the real server's code, run in this process under uvicorn."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from lingshu_server.app import create_app
from lingshu_server.core.settings import Settings
from lingshu_server.engine.interface import ChoiceDelta, EngineStep, SamplingOptions
from lingshu_server.http.connections import guarded_http_protocol
from tests.utils.fake_engine import placeholder_ids


@dataclass
class StallingEngine:
    """Streams `min_tokens` one-token steps for each choice, then stalls for good. Records
    when each generation was closed (the server aborting it)."""

    tokenizer: Any
    max_model_len: int = 8192
    max_tokens_per_visual_item: int = 16384
    configuration: dict[str, Any] = field(default_factory=lambda: {"engine": "stalling"})
    sampling_defaults: dict[str, float] = field(default_factory=dict)
    closed_at: list[float] = field(default_factory=list)
    started: int = 0

    @property
    def placeholder_ids(self) -> dict[str, int]:
        return placeholder_ids(self.tokenizer)

    async def generate(
        self,
        prompt_token_ids: list[int],
        images: list[Any],
        options: SamplingOptions,
        request_id: str,
        videos: Sequence[Any] = (),
        adapter: str | None = None,
        image_ids: Sequence[str | None] = (),
    ) -> AsyncIterator[EngineStep]:
        self.started += 1
        try:
            for _ in range(options.min_tokens):
                choices = [
                    ChoiceDelta(index=i, text="x", token_ids=[0], logprobs=None, finish_reason=None)
                    for i in range(options.n)
                ]
                yield EngineStep(
                    prompt_tokens=len(prompt_token_ids), choices=choices, finished=False
                )
            await asyncio.Event().wait()  # the stalled step
        finally:
            self.closed_at.append(time.monotonic())

    async def abort(self, request_id: str) -> None:
        pass

    async def is_healthy(self) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def _factory(engine: StallingEngine) -> Any:
    class Factory:
        def __call__(self, *_settings_budget_lora: object) -> StallingEngine:
            return engine

        @staticmethod
        def metrics_exposition() -> bytes:
            return b""

    return Factory()


@dataclass
class InProcessServer:
    base_url: str
    engine: StallingEngine


@contextmanager
def stalling_server(model_dir: str, api_key: str) -> Iterator[InProcessServer]:
    from transformers import AutoTokenizer

    engine = StallingEngine(AutoTokenizer.from_pretrained(model_dir))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(model=model_dir, api_keys=api_key, port=port)
    if True:
        app = create_app(settings, engine_factory=_factory(engine))
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            http=guarded_http_protocol(
                settings.max_header_bytes, settings.header_timeout, settings.max_connections
            ),
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        try:
            yield InProcessServer(base_url, engine)
        finally:
            server.should_exit = True
            thread.join(30)
