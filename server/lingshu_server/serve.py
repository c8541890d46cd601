"""Run the app under uvicorn."""

from __future__ import annotations

import uvicorn

from lingshu_server.app import create_app
from lingshu_server.model_check import check_supported_model
from lingshu_server.settings import Settings


def serve(settings: Settings) -> None:
    # Refuse an unsupported checkpoint before uvicorn starts and the engine spends minutes loading.
    check_supported_model(settings.model)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )
