"""The FastAPI application factory; the engine and services live on app.state.

The port opens at once; the engine loads in a worker thread while /health reports the stage.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from lingshu_server import __version__
from lingshu_server.core.cache_dir import default_cache_dir
from lingshu_server.core.image_budget import checkpoint_budget, server_budget
from lingshu_server.core.lifecycle import Lifecycle, Stage, watch_engine
from lingshu_server.core.logs import AuditLog
from lingshu_server.core.metrics import Metrics
from lingshu_server.core.quotas import RATE_LIMIT_HEADERS, LocalQuotaCounter
from lingshu_server.core.request_context import RequestContext
from lingshu_server.core.settings import Settings
from lingshu_server.engine.checkpoint_digest import checkpoint_digest, folder_digest
from lingshu_server.engine.interface import EngineFactory
from lingshu_server.engine.lora import plan_adapters
from lingshu_server.engine.model_check import UnsupportedModelError, check_supported_model
from lingshu_server.engine.vllm_engine import VllmEngine, vllm_version
from lingshu_server.http.auth import ApiKeyStore, AuthMiddleware, is_loopback
from lingshu_server.http.batch_routes import batch_routes
from lingshu_server.http.error_handlers import install_error_handlers
from lingshu_server.http.file_routes import FILES_PATH, files
from lingshu_server.http.identity import install_identity
from lingshu_server.http.limits import BodySizeLimitMiddleware, RateLimiter
from lingshu_server.http.openapi import install_openapi
from lingshu_server.http.pacs_forwarding import ForwardedCredentialMiddleware
from lingshu_server.http.playground import playground
from lingshu_server.http.quotas import QuotaMiddleware, TenantQuotas
from lingshu_server.http.ready_message import ready_message
from lingshu_server.http.routes import PROBE_PATHS, public, tokens, v1
from lingshu_server.http.stored_routes import stored
from lingshu_server.http.telemetry import TelemetryMiddleware
from lingshu_server.inputs.dicomweb import DicomWebSource
from lingshu_server.inputs.fhir_store import FhirServers
from lingshu_server.inputs.image_cache import PreparedImageCache
from lingshu_server.inputs.image_sources import ImageFetcher, ImageSourcePolicy
from lingshu_server.inputs.media import ImageLimits
from lingshu_server.inputs.pacs_auth import FHIR_FORWARD_HEADER, FORWARD_HEADER
from lingshu_server.inputs.processor_resize import ProcessorResize
from lingshu_server.inputs.video import VideoLimits
from lingshu_server.inputs.video_inputs import VideoInputs
from lingshu_server.services.admission import AdmissionController
from lingshu_server.services.batch_requests import BatchLines, LiveServices
from lingshu_server.services.batch_runner import BatchRunner
from lingshu_server.services.batches import BatchService
from lingshu_server.services.chat import ChatService
from lingshu_server.services.chat_prompt import (
    ChatPromptBuilder,
    load_chat_template,
    template_input_modalities,
    template_renderer,
    tokenizer_encoder,
)
from lingshu_server.services.completions import CompletionService
from lingshu_server.services.conversations import ConversationService
from lingshu_server.services.files import FileService
from lingshu_server.services.fingerprint import Fingerprints, input_settings
from lingshu_server.services.models import ServedModels
from lingshu_server.services.preview import PreviewService
from lingshu_server.services.report_drafts import ReportDrafts
from lingshu_server.services.reports import ReportService
from lingshu_server.services.response_history import ResponseHistory
from lingshu_server.services.responses import ResponsesService
from lingshu_server.services.runner import GenerationRunner
from lingshu_server.services.structured_output import StructuredOutput
from lingshu_server.services.tokenization import TokenizeService
from lingshu_server.services.tool_template import handles_tools
from lingshu_server.storage.batch_store import BatchStore
from lingshu_server.storage.conversation_store import ConversationStore
from lingshu_server.storage.database import Database
from lingshu_server.storage.file_store import FileStore
from lingshu_server.storage.quota_counter import DatabaseQuotaCounter
from lingshu_server.storage.report_draft_store import ReportDraftStore
from lingshu_server.storage.response_store import ResponseStore
from lingshu_server.storage.sweeper import SWEEP_INTERVAL_S, sweep_forever

logger = logging.getLogger(__name__)
T = TypeVar("T")


async def in_daemon_thread(fn: Callable[..., T], *args: object) -> T:
    """Run a slow blocking call without holding up process exit: a SIGTERM while weights load
    must not wait for the load to finish (asyncio's default executor would)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting task
            loop.call_soon_threadsafe(_set_exception, future, exc)
        else:
            loop.call_soon_threadsafe(_set_result, future, result)

    threading.Thread(target=run, name="engine-loader", daemon=True).start()
    return await future


def _set_result(future: asyncio.Future[T], result: T) -> None:
    if not future.cancelled():
        future.set_result(result)


def _set_exception(future: asyncio.Future[T], exc: BaseException) -> None:
    if not future.cancelled():
        future.set_exception(exc)


async def load_services(app: FastAPI, settings: Settings, engine_factory: EngineFactory) -> None:
    """Load the engine (in a thread, the port already open) and wire the chat service."""
    lifecycle: Lifecycle = app.state.lifecycle
    lifecycle.enter(Stage.CHECKING_MODEL)
    model = settings.model
    if model is None:  # the CLI refuses to start without one
        raise UnsupportedModelError("no model given: --model or LINGSHU_MODEL")
    model_config = await asyncio.to_thread(check_supported_model, model)
    lora = await asyncio.to_thread(plan_adapters, settings, model_config)
    checkpoint = await asyncio.to_thread(checkpoint_budget, model)
    budget, source = server_budget(settings.min_pixels, settings.max_pixels, checkpoint)
    low, high = budget.tokens
    logger.info(
        "image budget",
        extra={
            "fields": {
                "min_pixels": budget.min_pixels,
                "max_pixels": budget.max_pixels,
                "image_tokens": f"{low}..{high}",
                "source": source,
            }
        },
    )
    lifecycle.enter(Stage.LOADING_ENGINE)
    # A local checkpoint's files are hashed while the engine loads (a hub id's only once the
    # engine has fetched them); the hashes are cached, so later starts read no weights.
    cache_dir = default_cache_dir()
    digest = (
        asyncio.ensure_future(in_daemon_thread(checkpoint_digest, model, cache_dir))
        if Path(model).is_dir()
        else None
    )
    engine = await in_daemon_thread(engine_factory, settings, budget, lora)
    app.state.engine = engine
    if lora.adapters:
        await engine.load_adapters()
    checkpoint_sha256 = await (digest or in_daemon_thread(checkpoint_digest, model, cache_dir))
    adapter_sha256 = {
        adapter.name: await in_daemon_thread(folder_digest, Path(adapter.path), cache_dir)
        for adapter in lora.adapters
    }
    lifecycle.enter(Stage.PREPARING)
    template = load_chat_template(model, engine.tokenizer)
    logger.info(
        "tool calls",
        extra={
            "fields": {
                "template": "the checkpoint's"
                if handles_tools(template)
                else "built-in (Qwen2.5 tools section, Qwen2.5-VL turns)"
            }
        },
    )
    image_limits = ImageLimits.from_settings(settings, budget)
    videos = VideoInputs(
        pool=app.state.image_pool,
        limits=VideoLimits.from_settings(settings),
        max_videos=settings.max_videos_per_request,
        fetcher=app.state.image_fetcher,
        dicomweb=app.state.dicomweb,
        max_tokens_per_video=engine.max_tokens_per_visual_item,
    )
    render = template_renderer(engine.tokenizer, template)
    tokenize = tokenizer_encoder(engine.tokenizer)
    modalities = template_input_modalities(render, tokenize, engine.placeholder_ids)
    fingerprints = Fingerprints.compute(
        checkpoint_sha256=checkpoint_sha256,
        engine=engine.configuration,
        inputs=input_settings(settings, budget),
        adapter_sha256=adapter_sha256,
    )
    app.state.fingerprints = fingerprints  # the service-level value any output may carry
    logger.info(
        "model configuration",
        extra={
            "fields": {
                "system_fingerprint": fingerprints.base,
                "input_modalities": modalities,
                **fingerprints.components,
                "adapters": dict(fingerprints.adapters),
            }
        },
    )
    prompts = ChatPromptBuilder(
        render=render,
        tokenize=tokenize,
        pool=app.state.image_pool,
        limits=image_limits,
        max_images=settings.max_images_per_request,
        fetcher=app.state.image_fetcher,
        max_model_len=engine.max_model_len,
        dicomweb=app.state.dicomweb,
        videos=videos,
        image_cache=PreparedImageCache(settings.prepared_image_cache_mb * 1024 * 1024)
        if settings.prepared_image_cache_mb
        else None,
        input_modalities=modalities,
    )
    app.state.preview_service = PreviewService(
        prompts=prompts,
        videos=videos,
        limits=image_limits,
        processor_resize=await asyncio.to_thread(ProcessorResize, model, budget),
        pool=app.state.image_pool,
        metrics=app.state.metrics,
    )
    admission = AdmissionController(settings.max_concurrent_requests, settings.max_queued_requests)
    app.state.metrics.queued.set_function(lambda: admission.waiting)
    app.state.models = ServedModels(
        names=settings.served_model_names,
        adapters=lora.adapters,
        root=model,
        max_model_len=engine.max_model_len,
        created=app.state.started_at,
        fingerprints=fingerprints,
        input_modalities=modalities,
    )
    runner = GenerationRunner(
        engine=engine,
        prompts=prompts,
        models=app.state.models,
        max_tokens_cap=settings.max_tokens_cap,
        admission=admission,
        metrics=app.state.metrics,
        structured=StructuredOutput(app.state.image_pool),
        request_timeout=settings.request_timeout,
    )
    app.state.chat_service = ChatService(runner)
    app.state.responses_service = ResponsesService(
        runner, history=app.state.response_history, store_default=settings.store_responses
    )
    app.state.report_service = ReportService(
        runner=runner,
        prompts=prompts,
        dicomweb=app.state.dicomweb,
        fhir=app.state.fhir,
        drafts=ReportDrafts(
            ReportDraftStore(app.state.database, settings.report_draft_ttl), app.state.dicomweb
        ),
        pool=app.state.image_pool,
        model_path=model,
        weights_sha256=checkpoint_sha256,
        engine_version=vllm_version(),
        patient_id_system=settings.report_patient_id_system,
    )
    app.state.completion_service = CompletionService(
        engine=engine,
        models=app.state.models,
        pool=app.state.image_pool,
        max_tokens_cap=settings.max_tokens_cap,
        admission=admission,
        metrics=app.state.metrics,
        request_timeout=settings.request_timeout,
    )
    app.state.tokenize_service = TokenizeService(
        engine=engine,
        models=app.state.models,
        prompts=prompts,
        template=template,
        pool=app.state.image_pool,
        metrics=app.state.metrics,
    )
    app.state.batch_runner = _batch_runner(app, settings, admission)
    lifecycle.enter(Stage.READY)
    app.state.metrics.engine_loading.set(0)
    app.state.metrics.engine_healthy.set(1)
    message = ready_message(
        host=settings.host,
        port=settings.port,
        model=settings.served_model_names[0],
        playground=settings.playground,
        docs=app.docs_url is not None,
        api_keys=app.state.authenticator.enabled,
        tls=settings.tls_cert_file is not None,
        stored_responses=app.state.database.described if settings.store_responses else None,
        takes=modalities,
        fingerprint=fingerprints.base,
    )
    logger.info(
        "ready",
        extra={
            "fields": {
                "model": settings.model,
                "max_model_len": engine.max_model_len,
                **message.fields,
            },
            "text_lines": message.text_lines,
        },
    )


def _batch_runner(app: FastAPI, settings: Settings, admission: AdmissionController) -> BatchRunner:
    """The runner of batches, its lines through the live services at --batch-priority."""
    metrics: Metrics = app.state.metrics
    audit: AuditLog | None = app.state.audit
    runner = BatchRunner(
        store=app.state.batch_store,
        files=app.state.file_store,
        lines=BatchLines(
            LiveServices(
                chat=app.state.chat_service,
                responses=app.state.responses_service,
                completions=app.state.completion_service,
            ),
            priority=settings.batch_priority,
            on_start=_quota_charger(app.state.quotas),
            on_done=audit.write if audit is not None else None,
        ),
        # people keep at least half the generation slots: a batch line holds one while it runs
        max_in_flight=max(1, min(settings.batch_max_in_flight, admission.max_active // 2)),
        lease_s=settings.batch_lease_s,
        metrics=metrics,
    )
    metrics.queue_depth.labels("batch").set_function(lambda: runner.in_flight + runner.pending)
    metrics.queue_depth.labels("interactive").set_function(
        lambda: max(0, admission.active + admission.waiting - runner.in_flight)
    )
    return runner


def create_app(
    settings: Settings,
    *,
    engine_factory: EngineFactory = VllmEngine,
    on_fatal: Callable[[], None] | None = None,
) -> FastAPI:
    """`engine_factory` builds the engine (vLLM's by default; tests of the HTTP edge pass a
    fake). `on_fatal` is called when the engine fails to load or dies (the runner exits
    non-zero)."""

    def fatal() -> None:
        app.state.metrics.engine_healthy.set(0)
        app.state.metrics.engine_loading.set(0)
        if on_fatal is not None:
            on_fatal()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        background: list[asyncio.Task[None]] = []

        async def start() -> None:
            try:
                if settings.store_responses or settings.database_url:
                    await app.state.database.open()  # migrations, before any request uses it
                await load_services(app, settings, engine_factory)
            except Exception as exc:
                app.state.lifecycle.failure = f"{type(exc).__name__}: {exc}"
                app.state.lifecycle.enter(Stage.FAILED)
                logger.error("start-up failed", exc_info=exc)
                fatal()
                return
            background.append(
                asyncio.create_task(
                    watch_engine(app.state.engine.is_healthy, app.state.lifecycle, fatal)
                )
            )
            background.append(
                asyncio.create_task(
                    app.state.batch_runner.run_forever(app.state.database.has_state)
                )
            )

        background.append(asyncio.create_task(start()))
        background.append(
            asyncio.create_task(
                sweep_forever(app.state.database, min(SWEEP_INTERVAL_S, settings.store_ttl))
            )
        )
        signing_keys = app.state.signing_keys
        if signing_keys is not None:
            background.append(asyncio.create_task(signing_keys.keep_fresh()))
        shared_quotas = app.state.shared_quotas
        if shared_quotas is not None:
            shared_quotas.start()
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            # a running batch lets its lease go while the database is still open
            await asyncio.wait(background, timeout=3)
            if shared_quotas is not None:
                await shared_quotas.aclose()  # the tokens charged last, before the database goes
            await app.state.database.close()
            if signing_keys is not None:
                await signing_keys.aclose()
            await app.state.image_fetcher.aclose()
            await app.state.dicomweb.aclose()
            await app.state.fhir.aclose()
            app.state.image_pool.shutdown(wait=False, cancel_futures=True)
            engine = getattr(app.state, "engine", None)
            if engine is not None:
                engine.shutdown()

    docs = settings.docs if settings.docs is not None else is_loopback(settings.host)
    app = FastAPI(
        title="lingshu-server",
        version=__version__,
        description="OpenAI-compatible chat completions for the Lingshu medical models.",
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.state.settings = settings
    app.state.engine_factory = engine_factory
    app.state.started_at = int(time.time())
    app.state.lifecycle = Lifecycle()
    app.state.metrics = Metrics()
    app.state.metrics.build_info.labels(
        __version__,
        vllm_version(),
        settings.served_model_names[0] if settings.served_model_names else "",
        str(settings.tensor_parallel_size),
    ).set(1)
    app.state.metrics.engine_healthy.set(0)
    app.state.metrics.engine_loading.set(1)
    app.state.api_keys = ApiKeyStore(settings.api_keys, settings.api_key_file)
    # Stored state: the database opens at start-up when configured, else on first use.
    database = Database.from_settings(settings.database_url, settings.state_dir)
    app.state.database = database
    # Quotas: shared by the replicas through a configured database (the default SQLite serves
    # one replica, whose memory counts as well and costs nothing).
    app.state.shared_quotas = (
        DatabaseQuotaCounter(database) if settings.database_url and settings.tenant_quotas else None
    )
    install_identity(app, settings, quota_counter=app.state.shared_quotas or LocalQuotaCounter())
    app.state.rate_limiter = (
        RateLimiter(settings.rate_limit_per_key) if settings.rate_limit_per_key else None
    )
    app.state.image_pool = ThreadPoolExecutor(settings.image_workers, thread_name_prefix="image")
    app.state.image_fetcher = ImageFetcher(ImageSourcePolicy.from_settings(settings))
    app.state.dicomweb = DicomWebSource.from_settings(
        settings, app.state.image_pool, app.state.metrics.registry
    )
    app.state.fhir = FhirServers.from_settings(settings, app.state.metrics.registry)
    audit = AuditLog(settings.audit_log_file) if settings.audit_log_file else None
    app.state.audit = audit
    app.state.response_history = ResponseHistory(
        responses=ResponseStore(database, settings.store_ttl),
        conversations=ConversationStore(database, settings.store_ttl),
    )
    app.state.conversation_service = ConversationService(
        ConversationStore(database, settings.store_ttl)
    )
    app.state.file_store = FileStore(database, settings.file_ttl)
    # a batch line is a request: it may be as large as one
    app.state.file_service = FileService(
        app.state.file_store, max_line_bytes=settings.max_request_bytes
    )
    app.state.batch_store = BatchStore(database, app.state.file_store)
    app.state.batch_runner = None  # made once the services are
    app.state.batch_service = BatchService(
        app.state.batch_store, app.state.file_store, wake=lambda: _wake_runner(app)
    )

    install_error_handlers(app)
    app.include_router(v1)
    app.include_router(stored)
    app.include_router(files)
    app.include_router(batch_routes)
    app.include_router(tokens)
    app.include_router(public)
    if settings.playground:
        app.include_router(playground)
    install_openapi(app)
    # Outermost last: telemetry, CORS (so even a 401 carries its headers), the API key (from
    # the headers alone), then the body (size and read time), then the routes.
    forwarded = tuple(
        header
        for header, forwards in (
            (FORWARD_HEADER, app.state.dicomweb.forwards_credentials),
            (FHIR_FORWARD_HEADER, app.state.fhir.forwards_credentials),
        )
        if forwards
    )
    if forwarded:
        app.add_middleware(ForwardedCredentialMiddleware, headers=forwarded)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        read_timeout=settings.body_read_timeout,
        streamed={FILES_PATH: settings.max_file_bytes},
    )
    if app.state.quotas is not None:  # after the caller is known, before the body is read
        app.add_middleware(QuotaMiddleware, quotas=app.state.quotas)
    public_paths = set(PROBE_PATHS)
    if settings.playground:  # a static page holding no data; its API calls carry the key
        public_paths |= _paths(playground)
    public_paths |= {url for url in (app.openapi_url, app.docs_url, app.redoc_url) if url}
    if app.docs_url:
        public_paths.add(f"{app.docs_url}/oauth2-redirect")
    app.add_middleware(
        AuthMiddleware,
        authenticator=app.state.authenticator,
        public_paths=frozenset(public_paths),
        api_roles=frozenset(settings.oidc_required_roles),
        metrics_auth=settings.metrics_auth,
        metrics_role=settings.metrics_role,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-Request-Id",
                FORWARD_HEADER,
                FHIR_FORWARD_HEADER,
            ],
            expose_headers=["X-Request-Id", "Retry-After", *RATE_LIMIT_HEADERS],
        )
    app.add_middleware(
        TelemetryMiddleware, metrics=app.state.metrics, lifecycle=app.state.lifecycle, audit=audit
    )
    return app


def _quota_charger(quotas: TenantQuotas | None) -> Callable[[RequestContext], None] | None:
    """A batch line's tokens count against its caller's token quota, as a live request's do
    (the line is not refused for it: the batch runs on, below people, as the quota refills)."""
    if quotas is None:
        return None

    def charge_line(ctx: RequestContext) -> None:
        subject = ctx.tenant or ctx.identity
        quota = quotas.quota_for(subject) if subject else None
        if subject is not None and quota is not None:
            ctx.charge_tokens = functools.partial(quotas.counter.charge, subject, quota)

    return charge_line


def _wake_runner(app: FastAPI) -> None:
    runner: BatchRunner | None = app.state.batch_runner
    if runner is not None:
        runner.wake()


def _paths(router: APIRouter) -> set[str]:
    return {route.path for route in router.routes if isinstance(route, APIRoute)}
