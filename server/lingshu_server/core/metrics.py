"""Prometheus metrics: the front end's own (lingshu_*) beside vLLM's engine metrics.

Labels are bounded: routes are path templates (else "other"), statuses HTTP codes, formats a
fixed set, reasons a fixed set. No request ids and no user input ever become labels.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from lingshu_server.core.request_context import RequestContext

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
PREPROCESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "DICOM", "TIFF", "BMP", "GIF", "MPO"})
BATCH_STATUSES = (
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
)
REJECTION_REASONS = (
    "auth",
    "too_large",
    "timeout",
    "overloaded",
    "rate_limited",
    "bad_input",
    "draining",
)


def _exponential(start: float, factor: float, count: int) -> tuple[float, ...]:
    return tuple(start * factor**i for i in range(count))


class Metrics:
    """One registry per app, so tests and factories never share global state."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "lingshu_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "lingshu_request_duration_seconds",
            "Whole request time, streaming included.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.preprocess = Histogram(
            "lingshu_preprocess_seconds",
            "Front-end time per chat request before the engine: image fetch, decode, resize, "
            "chat template, tokenization.",
            buckets=PREPROCESS_BUCKETS,
            registry=r,
        )
        self.image_preprocess = Histogram(
            "lingshu_image_preprocess_seconds",
            "Decode and resize time per image, by input format.",
            ["format"],
            buckets=PREPROCESS_BUCKETS,
            registry=r,
        )
        self.image_bytes = Histogram(
            "lingshu_request_image_bytes",
            "Encoded image bytes per chat request with images.",
            buckets=_exponential(16 * 1024, 4, 9),
            registry=r,
        )
        self.image_pixels = Histogram(
            "lingshu_request_image_pixels",
            "Decoded image pixels per chat request with images (before resizing).",
            buckets=_exponential(64 * 1024, 4, 9),
            registry=r,
        )
        self.image_tokens = Histogram(
            "lingshu_request_image_tokens",
            "Image tokens per chat request with images.",
            buckets=_exponential(64, 2, 10),
            registry=r,
        )
        self.prompt_tokens_cached = Counter(
            "lingshu_prompt_tokens_cached",
            "Prompt tokens served from the engine's prefix cache (an earlier turn's, a shared "
            "system prompt), as the answers' usage reports them.",
            registry=r,
        )
        self.rejected = Counter(
            "lingshu_rejected_requests",
            "Requests turned away, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in REJECTION_REASONS:
            self.rejected.labels(reason)
        self.in_flight = Gauge(
            "lingshu_requests_in_flight", "Requests being served now.", registry=r
        )
        self.disconnects = Counter(
            "lingshu_client_disconnects",
            "Requests whose client went away before the answer was complete.",
            registry=r,
        )
        self.engine_healthy = Gauge(
            "lingshu_engine_healthy",
            "1 while the engine is loaded and alive; 0 while loading, draining out or dead.",
            registry=r,
        )
        self.engine_loading = Gauge(
            "lingshu_engine_loading",
            "1 while the model is loading (so alerts can tell loading from dead).",
            registry=r,
        )
        self.queued = Gauge(
            "lingshu_requests_queued",
            "Requests waiting in the front end for a generation slot (admission queue).",
            registry=r,
        )
        self.batches = Gauge(
            "lingshu_batches",
            "Batches in the database by status (every replica's; refreshed by the batch runner).",
            ["status"],
            registry=r,
        )
        self.batch_lines = Counter(
            "lingshu_batch_lines",
            "Batch lines this replica finished: completed (a 2xx answer, in the output file) or "
            "failed (in the error file).",
            ["outcome"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "lingshu_queue_depth",
            "Requests generating or waiting, by priority: interactive (people's requests) and "
            "batch (this replica's batch lines in flight and still to run).",
            ["priority"],
            registry=r,
        )
        self.build_info = Gauge(
            "lingshu_build_info",
            "Build and deployment facts (value 1).",
            ["version", "vllm_version", "model", "tensor_parallel_size"],
            registry=r,
        )

        for status in BATCH_STATUSES:
            self.batches.labels(status).set(0)
        for outcome in ("completed", "failed"):
            self.batch_lines.labels(outcome)
        for priority in ("interactive", "batch"):
            self.queue_depth.labels(priority).set(0)

    def record_request(self, ctx: RequestContext, latency_s: float) -> None:
        self.requests.labels(ctx.route, str(ctx.status)).inc()
        self.request_duration.labels(ctx.route).observe(latency_s)
        if ctx.rejection in REJECTION_REASONS:
            self.rejected.labels(ctx.rejection).inc()
        if ctx.client_disconnected:
            self.disconnects.inc()
        if ctx.cached_tokens:
            self.prompt_tokens_cached.inc(ctx.cached_tokens)

    def record_images(
        self, formats_seconds: list[tuple[str, float]], encoded: int, pixels: int, tokens: int
    ) -> None:
        for image_format, seconds in formats_seconds:
            label = image_format if image_format in IMAGE_FORMATS else "other"
            self.image_preprocess.labels(label).observe(seconds)
        self.image_bytes.observe(encoded)
        self.image_pixels.observe(pixels)
        self.image_tokens.observe(tokens)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
