"""Run the app under uvicorn, with a graceful drain on SIGTERM and a non-zero exit when the
engine dies (so Kubernetes restarts the pod)."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import socket
import sys
import time
from types import FrameType

import uvicorn

from lingshu_server.app import create_app
from lingshu_server.core.lifecycle import Lifecycle, Stage
from lingshu_server.core.settings import Settings
from lingshu_server.engine.engine_args import check_engine_args
from lingshu_server.engine.interface import EngineFactory
from lingshu_server.engine.lora import plan_adapters
from lingshu_server.engine.model_check import check_supported_model
from lingshu_server.engine.vllm_engine import VllmEngine
from lingshu_server.http.auth import insecure_listen_reason
from lingshu_server.http.connections import guarded_http_protocol
from lingshu_server.http.tls import tls_context_factory

logger = logging.getLogger(__name__)

DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Seconds uvicorn still gives open connections to close once the drain has ended.
MIN_CONNECTION_CLOSE_S = 1


class StartupRefused(Exception):
    """The configuration is unsafe or unusable; nothing was started."""


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT: fail readiness, refuse new requests (503), let in-flight
    ones finish up to the drain timeout, then stop and exit 0. A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_timeout: float):
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_timeout = drain_timeout
        self.exit_code = 0
        self._drain_task: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = self._drain_task is None and not self.should_exit
        if first and sig in DRAIN_SIGNALS and self._loop is not None and self.lifecycle.ready:
            logger.info("signal received: draining", extra={"fields": {"signal": sig}})
            self._loop.call_soon_threadsafe(self._start_drain)
            return
        # Not ready yet, or a second signal: stop now (uvicorn re-raises what we record).
        if sig == signal.SIGINT:
            self._captured_signals.append(sig)
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        # Our own request for this drain is not in flight; wait for everyone else's.
        started = time.monotonic()
        finished = await self.lifecycle.drain(self.drain_timeout)
        logger.info("drained" if finished else "drain timed out; stopping anyway")
        # uvicorn then waits for open connections up to timeout_graceful_shutdown: give it only
        # what is left of the one drain budget, so shutdown never takes two drain timeouts (the
        # orchestrator's grace period counts one).
        left = self.drain_timeout - (time.monotonic() - started)
        self.config.timeout_graceful_shutdown = max(MIN_CONNECTION_CLOSE_S, math.ceil(left))
        self.should_exit = True

    def fatal(self) -> None:
        """The engine died or failed to load: stop serving and exit non-zero."""
        self.exit_code = 1
        self.should_exit = True


def serve(settings: Settings) -> int:
    """Serve until stopped; the process exit code."""
    reason = insecure_listen_reason(settings)
    if reason:
        raise StartupRefused(reason)
    # Refuse an unsupported checkpoint, engine arguments that cannot work and adapters that do
    # not fit before the engine spends minutes loading.
    if settings.model is None:  # the CLI refuses to start without one
        raise StartupRefused("no model given: --model or LINGSHU_MODEL")
    model_config = check_supported_model(settings.model)
    check_engine_args(settings)
    plan_adapters(settings, model_config)
    server = http_server(settings)
    server.run()
    if server.lifecycle.stage in (Stage.ENGINE_DEAD, Stage.FAILED):
        server.exit_code = 1
    return server.exit_code


def http_server(
    settings: Settings, *, engine_factory: EngineFactory = VllmEngine
) -> DrainingServer:
    """The app under uvicorn as `serve` runs it: the guarded HTTP protocol, the drain."""
    holder: list[DrainingServer] = []
    app = create_app(settings, engine_factory=engine_factory, on_fatal=lambda: holder[0].fatal())
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=max(5, int(settings.drain_timeout)),
        http=guarded_http_protocol(
            settings.max_header_bytes, settings.header_timeout, settings.max_connections
        ),
        ssl_context_factory=tls_context_factory(settings),
    )
    server = DrainingServer(config, app.state.lifecycle, settings.drain_timeout)
    holder.append(server)
    return server


if __name__ == "__main__":
    sys.exit(serve(Settings()))
