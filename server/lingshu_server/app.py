"""The FastAPI application factory; the engine and services live on app.state."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from lingshu_server import __version__
from lingshu_server.chat import (
    ChatPromptBuilder,
    load_chat_template,
    template_renderer,
    tokenizer_encoder,
)
from lingshu_server.engine import Engine
from lingshu_server.errors import install_error_handlers
from lingshu_server.image_sources import ImageFetcher, ImageSourcePolicy
from lingshu_server.media import ImageLimits
from lingshu_server.model_check import check_supported_model
from lingshu_server.routes import router
from lingshu_server.serving import ChatService
from lingshu_server.settings import Settings

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        check_supported_model(settings.model)
        started = time.monotonic()
        logger.info("loading model %s", settings.model)
        engine = Engine(settings)
        logger.info(
            "engine ready in %.1f s (max_model_len %d)",
            time.monotonic() - started,
            engine.max_model_len,
        )
        pool = ThreadPoolExecutor(settings.image_workers, thread_name_prefix="image")
        fetcher = ImageFetcher(ImageSourcePolicy.from_settings(settings))
        template = load_chat_template(settings.model, engine.tokenizer)
        prompts = ChatPromptBuilder(
            template_renderer(engine.tokenizer, template),
            tokenizer_encoder(engine.tokenizer),
            pool,
            ImageLimits.from_settings(settings),
            settings.max_images_per_request,
            fetcher,
        )
        app.state.engine = engine
        app.state.chat_service = ChatService(
            engine, prompts, settings.served_model_names, settings.max_tokens_cap
        )
        try:
            yield
        finally:
            await fetcher.aclose()
            pool.shutdown(wait=False, cancel_futures=True)
            engine.shutdown()

    app = FastAPI(title="lingshu-server", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.started_at = int(time.time())
    install_error_handlers(app)
    app.include_router(router)
    return app
