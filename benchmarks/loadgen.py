"""Closed-loop load generator for OpenAI-compatible chat completions with images.

C concurrent clients send N streaming requests in total; each client sends its next request as
soon as its previous one finishes. Every request carries its own synthetic image(s) (see
`benchmarks.images`), built and base64-encoded before the clock starts, so the client's own work
is not measured. Records time to first token (the first non-empty content delta), the gaps
between content deltas, end-to-end latency and errors (non-200 answers, SSE error events,
transport failures), and the API server process's CPU seconds per request.

    python -m benchmarks.loadgen --url http://127.0.0.1:8000 --concurrency 16 --requests 64 \
        --image 512x512:jpeg --max-tokens 32 --json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil

from benchmarks.images import FORMATS, MIME_TYPES, encode_variant
from benchmarks.videos import encode_clip

WARMUP_INDEX_OFFSET = 1_000_000  # warm-up requests use images the measured ones never repeat
MAX_ERROR_SAMPLES = 5
_FORMAT_CHOICES = "|".join(FORMATS)

# The multi-turn case: the client sends the whole conversation again, the image included.
FIRST_ANSWER = (
    "Findings: a rounded opacity in the right lower zone, no pleural effusion. "
    "Impression: possible consolidation."
)


@dataclass(frozen=True)
class ImageSpec:
    width: int
    height: int
    fmt: str  # "jpeg" or "png"

    @classmethod
    def parse(cls, text: str) -> ImageSpec:
        """`512x512:jpeg` (format defaults to jpeg; png16: 16-bit grayscale PNG; dicom: CT)."""
        size, _, fmt = text.lower().partition(":")
        fmt = fmt or "jpeg"
        bad = ValueError(f"image spec {text!r}: expected WIDTHxHEIGHT[:{_FORMAT_CHOICES}]")
        try:
            width, height = (int(part) for part in size.split("x"))
        except ValueError:
            raise bad from None
        if fmt not in FORMATS or width < 1 or height < 1:
            raise bad
        return cls(width, height, fmt)

    def __str__(self) -> str:
        return f"{self.width}x{self.height}:{self.fmt}"


@dataclass(frozen=True)
class VideoSpec:
    """An H.264 MP4 clip: `seconds` at `fps`, `width` x `height`."""

    width: int
    height: int
    seconds: int
    fps: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}:{self.seconds}s@{self.fps}"


@dataclass(frozen=True)
class LoadSpec:
    """One load: C concurrent clients, N requests, K images and V videos per request (none:
    text only)."""

    concurrency: int
    requests: int
    images: tuple[ImageSpec, ...] = ()
    videos: tuple[VideoSpec, ...] = ()
    max_tokens: int = 32
    ignore_eos: bool = True
    temperature: float = 0.0  # greedy: every target generates the same tokens
    seed: int = 0
    warmup: int = 0  # requests sent (and not measured) before the clock starts
    # Measure follow-ups: each request's first question (same image) is answered, unmeasured,
    # before the clock starts; the measured request re-sends the image with the conversation.
    followup: bool = False


def request_text(index: int) -> str:
    # Unique per request so that prefix caching cannot skip a text-only prompt.
    return f"Request {index}: describe the findings in this image and give an impression."


def request_images(spec: LoadSpec, index: int) -> list[tuple[bytes, str]]:
    """The encoded images of request `index` with their MIME types, all distinct."""
    count = len(spec.images)
    return [
        (
            encode_variant(image.width, image.height, image.fmt, spec.seed, index * count + k),
            MIME_TYPES[image.fmt],
        )
        for k, image in enumerate(spec.images)
    ]


def dicom_as_png(data: bytes) -> bytes:
    """What a client of a server without DICOM support sends instead: the slice windowed as
    our server windows it by default, as an 8-bit PNG (the same size, so the same tokens)."""
    import io

    from lingshu_server.core.settings import Settings
    from lingshu_server.inputs.dicom import DicomOptions, dicom_to_image

    image = dicom_to_image(data, DicomOptions(), Settings().dicom_default_ct_window, "image")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def request_videos(spec: LoadSpec, index: int) -> list[bytes]:
    """The MP4 clips of request `index`, all distinct."""
    count = len(spec.videos)
    return [
        encode_clip(
            video.width, video.height, video.seconds, video.fps, spec.seed, index * count + k
        )
        for k, video in enumerate(spec.videos)
    ]


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def request_messages(
    spec: LoadSpec, index: int, first_turn: bool = False, no_dicom: bool = False
) -> list[dict[str, Any]]:
    """The chat messages of request `index`: its images and videos as base64 data URLs, then
    its text; for a follow-up case (unless `first_turn`), the answer and a second question.
    `no_dicom`: DICOM images as the 8-bit PNG a client would send a server without DICOM."""
    text = request_text(index)
    content: str | list[dict[str, Any]] = text
    if spec.images or spec.videos:
        images = request_images(spec, index)
        if no_dicom:
            images = [
                (dicom_as_png(data), "image/png") if mime == MIME_TYPES["dicom"] else (data, mime)
                for data, mime in images
            ]
        content = [
            {"type": "image_url", "image_url": {"url": _data_url(data, mime)}}
            for data, mime in images
        ]
        content += [
            {"type": "video_url", "video_url": {"url": _data_url(data, "video/mp4")}}
            for data in request_videos(spec, index)
        ]
        content.append({"type": "text", "text": text})
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if spec.followup and not first_turn:
        messages += [
            {"role": "assistant", "content": FIRST_ANSWER},
            {"role": "user", "content": f"Follow-up {index}: how large is the opacity?"},
        ]
    return messages


def request_body(
    spec: LoadSpec, model: str, index: int, first_turn: bool = False, no_dicom: bool = False
) -> bytes:
    """The JSON body of request `index` (see `request_messages`)."""
    body = {
        "model": model,
        "messages": request_messages(spec, index, first_turn, no_dicom),
        "max_tokens": spec.max_tokens,
        "temperature": spec.temperature,
        "ignore_eos": spec.ignore_eos,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return json.dumps(body).encode()


def build_bodies(
    spec: LoadSpec,
    model: str,
    count: int,
    start: int = 0,
    first_turn: bool = False,
    no_dicom: bool = False,
) -> list[bytes]:
    return [request_body(spec, model, start + i, first_turn, no_dicom) for i in range(count)]


@dataclass
class Bodies:
    """Every body one target gets in one case, built before any clock starts: the measured
    requests, the warm-up, and for a follow-up case the first questions of both."""

    measured: list[bytes]
    warmup: list[bytes]
    priming: list[bytes] = field(default_factory=list)  # sent, unmeasured, before `measured`
    warmup_priming: list[bytes] = field(default_factory=list)

    @classmethod
    def build(cls, spec: LoadSpec, model: str, no_dicom: bool = False) -> Bodies:
        def bodies(count: int, start: int = 0, first_turn: bool = False) -> list[bytes]:
            return build_bodies(spec, model, count, start, first_turn, no_dicom)

        bodies_ = cls(bodies(spec.requests), bodies(spec.warmup, WARMUP_INDEX_OFFSET))
        if spec.followup:
            bodies_.priming = bodies(spec.requests, first_turn=True)
            bodies_.warmup_priming = bodies(spec.warmup, WARMUP_INDEX_OFFSET, first_turn=True)
        return bodies_


@dataclass
class RequestRecord:
    index: int
    ok: bool = False
    error: str | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class TokenClock:
    """Times one request: call `content()` at each non-empty content delta, `done()` at the end."""

    def __init__(self, record: RequestRecord):
        self.record = record
        self.start = time.perf_counter()
        self.last: float | None = None

    def content(self) -> None:
        now = time.perf_counter()
        if self.last is None:
            self.record.ttft_s = now - self.start
        else:
            self.record.itl_s.append(now - self.last)
        self.last = now

    def done(self, error: str | None = None) -> RequestRecord:
        record = self.record
        record.e2e_s = time.perf_counter() - self.start
        if error is None and record.ttft_s is None:
            error = "the stream carried no content"
        record.error, record.ok = error, error is None
        return record


@dataclass
class Summary:
    requests: int
    concurrency: int
    ok: int
    errors: int
    duration_s: float
    requests_per_s: float
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    itl_p50_s: float | None
    e2e_p50_s: float | None
    e2e_p99_s: float | None
    api_cpu_s_per_req: float | None
    prompt_tokens_mean: float | None
    completion_tokens_mean: float | None
    error_samples: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SUMMARY_FIELDS = tuple(Summary.__dataclass_fields__)


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarize(
    records: Sequence[RequestRecord],
    concurrency: int,
    duration_s: float,
    cpu_seconds: float | None,
) -> Summary:
    good = [r for r in records if r.ok]
    bad = [r for r in records if not r.ok]
    ttfts = [r.ttft_s for r in good if r.ttft_s is not None]
    e2es = [r.e2e_s for r in good if r.e2e_s is not None]
    gaps = [gap for r in good for gap in r.itl_s]
    samples = list(dict.fromkeys(r.error or "" for r in bad))[:MAX_ERROR_SAMPLES]
    return Summary(
        requests=len(records),
        concurrency=concurrency,
        ok=len(good),
        errors=len(bad),
        duration_s=duration_s,
        requests_per_s=len(good) / duration_s if duration_s > 0 else 0.0,
        ttft_p50_s=_percentile(ttfts, 50),
        ttft_p99_s=_percentile(ttfts, 99),
        itl_p50_s=_percentile(gaps, 50),
        e2e_p50_s=_percentile(e2es, 50),
        e2e_p99_s=_percentile(e2es, 99),
        api_cpu_s_per_req=cpu_seconds / len(records)
        if cpu_seconds is not None and records
        else None,
        prompt_tokens_mean=_mean([r.prompt_tokens for r in good if r.prompt_tokens is not None]),
        completion_tokens_mean=_mean(
            [r.completion_tokens for r in good if r.completion_tokens is not None]
        ),
        error_samples=samples,
    )


async def closed_loop(
    concurrency: int, count: int, send: Callable[[int], Awaitable[RequestRecord]]
) -> list[RequestRecord]:
    """Run `send(i)` for i in 0..count-1 from `concurrency` workers, each starting its next
    request when its previous one ends. Records come back in index order."""
    pending = iter(range(count))
    records: list[RequestRecord] = []

    async def worker() -> None:
        for index in pending:  # the shared iterator hands each index to one worker
            records.append(await send(index))

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))
    return sorted(records, key=lambda r: r.index)


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of one process (its threads included, its children not)."""
    if pid is None:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def listener_pid(base_url: str) -> int | None:
    """The PID listening on the URL's port on this machine, if it can be seen."""
    port = urlsplit(base_url).port
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn.pid
    except psutil.Error:
        return None
    return None


def _auth_headers(api_key: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


async def _stream_one(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], index: int
) -> RequestRecord:
    clock = TokenClock(RequestRecord(index))
    try:
        async with client.stream("POST", url, content=body, headers=headers) as response:
            if response.status_code != 200:
                detail = (await response.aread())[:300].decode(errors="replace")
                return clock.done(f"HTTP {response.status_code}: {detail}")
            error = None
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    error = f"SSE error: {json.dumps(event['error'])[:300]}"
                    continue
                if any((c.get("delta") or {}).get("content") for c in event.get("choices") or ()):
                    clock.content()
                usage = event.get("usage")
                if usage:
                    clock.record.prompt_tokens = usage.get("prompt_tokens")
                    clock.record.completion_tokens = usage.get("completion_tokens")
            return clock.done(error)
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        return clock.done(f"{type(exc).__name__}: {exc}"[:300])


async def first_model_id(client: httpx.AsyncClient, base_url: str, api_key: str | None) -> str:
    response = await client.get(f"{base_url}/v1/models", headers=_auth_headers(api_key))
    response.raise_for_status()
    return response.json()["data"][0]["id"]


async def send_bodies(
    client: httpx.AsyncClient,
    base_url: str,
    bodies: Sequence[bytes],
    concurrency: int,
    api_key: str | None = None,
) -> list[RequestRecord]:
    url, headers = f"{base_url}/v1/chat/completions", _auth_headers(api_key)
    return await closed_loop(
        concurrency, len(bodies), lambda i: _stream_one(client, url, bodies[i], headers, i)
    )


async def run_load(
    base_url: str,
    spec: LoadSpec,
    *,
    model: str | None = None,
    api_pid: int | None = None,
    api_key: str | None = None,
    bodies: Bodies | None = None,
    timeout_s: float = 600.0,
) -> Summary:
    """Warm up, then run the measured load; `bodies` may be pre-built with `Bodies.build`."""
    base_url = base_url.rstrip("/")
    limits = httpx.Limits(max_connections=spec.concurrency + 4, max_keepalive_connections=None)
    timeout = httpx.Timeout(timeout_s, connect=30.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        model = model or await first_model_id(client, base_url, api_key)
        if bodies is None:
            bodies = Bodies.build(spec, model)

        async def send(batch: Sequence[bytes]) -> list[RequestRecord]:
            return await send_bodies(client, base_url, batch, spec.concurrency, api_key)

        for batch in (bodies.warmup_priming, bodies.warmup, bodies.priming):
            if batch:
                await send(batch)
        cpu_before = process_cpu_seconds(api_pid)
        started = time.perf_counter()
        records = await send(bodies.measured)
        duration = time.perf_counter() - started
        cpu_after = process_cpu_seconds(api_pid)
    cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return summarize(records, spec.concurrency, duration, cpu)


def format_summary(summary: Summary) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.1f} ms"

    cpu = summary.api_cpu_s_per_req
    lines = [
        f"requests      {summary.ok}/{summary.requests} ok, {summary.errors} errors, "
        f"concurrency {summary.concurrency}, {summary.duration_s:.2f} s",
        f"throughput    {summary.requests_per_s:.2f} req/s",
        f"TTFT          p50 {ms(summary.ttft_p50_s)}, p99 {ms(summary.ttft_p99_s)}",
        f"ITL           p50 {ms(summary.itl_p50_s)}",
        f"end-to-end    p50 {ms(summary.e2e_p50_s)}, p99 {ms(summary.e2e_p99_s)}",
        f"API CPU       {'-' if cpu is None else f'{cpu * 1000:.1f} ms'} per request",
        f"tokens        prompt {summary.prompt_tokens_mean}, "
        f"completion {summary.completion_tokens_mean} (means)",
    ]
    lines += [f"error         {sample}" for sample in summary.error_samples]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.loadgen",
        description="Closed-loop streaming load against an OpenAI-compatible chat endpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument("--model", help="model name (default: the first of /v1/models)")
    parser.add_argument("--concurrency", "-c", type=int, default=16, help="concurrent clients")
    parser.add_argument("--requests", "-n", type=int, default=64, help="measured requests")
    parser.add_argument(
        "--image",
        action="append",
        type=ImageSpec.parse,
        default=[],
        metavar="WxH:FMT",
        help=f"an image in every request ({_FORMAT_CHOICES}); repeat for several; none: text only",
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic images")
    parser.add_argument("--warmup", type=int, default=4, help="unmeasured requests first")
    parser.add_argument(
        "--followup",
        action="store_true",
        help="measure follow-up questions: each conversation's first question is sent "
        "(unmeasured) first, then the conversation again with the image",
    )
    parser.add_argument(
        "--api-pid",
        type=int,
        help="PID of the API server process for CPU accounting (default: the process "
        "listening on the URL's port, if visible)",
    )
    parser.add_argument("--api-key", help="sent as Authorization: Bearer")
    parser.add_argument("--timeout", type=float, default=600.0, help="per-request seconds")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = LoadSpec(
        concurrency=args.concurrency,
        requests=args.requests,
        images=tuple(args.image),
        max_tokens=args.max_tokens,
        ignore_eos=args.ignore_eos,
        temperature=args.temperature,
        seed=args.seed,
        warmup=args.warmup,
        followup=args.followup,
    )
    api_pid = args.api_pid if args.api_pid is not None else listener_pid(args.url)
    summary = asyncio.run(
        run_load(
            args.url,
            spec,
            model=args.model,
            api_pid=api_pid,
            api_key=args.api_key,
            timeout_s=args.timeout,
        )
    )
    if args.json:
        sys.stdout.write(json.dumps(summary.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(format_summary(summary))
    return 0 if summary.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
