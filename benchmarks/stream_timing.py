"""Do streamed tokens reach the client as they are made? Our server, vLLM's server and the
engine alone, the same model, engine arguments and requests, alternating repeats.

    python -m benchmarks.stream_timing --model-variant light --repeats 2 --markdown

Each target's AsyncLLM runs with `benchmarks.stream_probe` installed, which notes when the
engine core made each step's tokens (its own timestamp) and when the AsyncLLM process received
them. The client (a raw HTTP/1.1 socket reader, so no client library batches what arrives)
asks for `return_token_ids`, so each SSE event says how many tokens it carries, and notes when
each socket read returned. For every token: its arrival gap after the previous token of its
request, and its lateness, arrival minus the time the engine core made it (one monotonic clock
for every process on the machine). The engine alone reads its `AsyncLLM.generate` stream in
the same process: its "arrival" is when the consumer got the output.

Text-only prompts (distinct, so nothing comes from the prefix cache), `--max-tokens` tokens
each with `ignore_eos`, greedy; for each concurrency `--requests` requests in a closed loop
after `--warmup` unmeasured ones. Percentiles pool the tokens of every repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from benchmarks.compare import MODEL_VARIANTS, _demo_model_dir, emit, progress
from benchmarks.loadgen import ImageSpec, LoadSpec, request_messages
from benchmarks.stream_probe import install, read_log
from benchmarks.targets import (
    ENGINE,
    OURS,
    READY_PATHS,
    TARGET_LABELS,
    TARGETS,
    ChildProcess,
    EngineConfig,
    engine_kwargs,
    free_port,
    ours_command,
    target_env,
    vllm_command,
)

LATE_S = 0.050  # "arrived late": more than this after the engine core made the token
WARMUP_OFFSET = 100_000  # warm-up requests' indexes, apart from the measured ones
T = TypeVar("T")


@dataclass
class Arrival:
    """One SSE event (or, for the engine alone, one output) that carried tokens."""

    at: float  # time.monotonic() when the read that completed it returned
    tokens: int


@dataclass
class StreamRecord:
    request_id: str = ""
    arrivals: list[Arrival] = field(default_factory=list)
    reads: int = 0  # socket reads that returned data
    error: str | None = None


# --- the client -------------------------------------------------------------------------------


class ChunkedEvents:
    """HTTP/1.1 chunked transfer decoding, then SSE events (`data: ...` blocks), incrementally."""

    def __init__(self) -> None:
        self._raw = b""
        self._body = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._raw += data
        while True:
            line_end = self._raw.find(b"\r\n")
            if line_end < 0:
                break
            size = int(self._raw[:line_end].split(b";")[0], 16)
            if len(self._raw) < line_end + 2 + size + 2:
                break
            start = line_end + 2
            self._body += self._raw[start : start + size]
            self._raw = self._raw[start + size + 2 :]
        *events, self._body = self._body.split(b"\n\n")
        return events


async def stream_chat(host: str, port: int, body: bytes) -> StreamRecord:
    record = StreamRecord()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\n"
            + f"Host: {host}:{port}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0] or b"chunked" not in head.lower():
            record.error = head.split(b"\r\n", 1)[0].decode(errors="replace")
            return record
        decoder = ChunkedEvents()
        while data := await reader.read(1 << 16):
            now = time.monotonic()
            record.reads += 1
            for event in decoder.feed(data):
                _note_event(record, event, now)
    finally:
        writer.close()
    return record


def _note_event(record: StreamRecord, event: bytes, now: float) -> None:
    payload = event.partition(b"data: ")[2]
    if not payload or payload == b"[DONE]":
        return
    chunk = json.loads(payload)
    if "error" in chunk:
        record.error = str(chunk["error"].get("message"))[:200]
        return
    record.request_id = record.request_id or chunk.get("id", "")
    tokens = sum(len(choice.get("token_ids") or ()) for choice in chunk.get("choices", ()))
    if tokens:
        record.arrivals.append(Arrival(now, tokens))


def chat_body(model: str, spec: LoadSpec, index: int) -> bytes:
    return json.dumps(
        {
            "model": model,
            "messages": request_messages(spec, index),
            "max_tokens": spec.max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "return_token_ids": True,
        }
    ).encode()


async def closed_loop(
    concurrency: int, items: Sequence[T], send: Callable[[T], Awaitable[StreamRecord]]
) -> list[StreamRecord]:
    """`send` each item, from `concurrency` workers that each start their next when their
    previous one ends."""
    pending = iter(items)
    records: list[StreamRecord] = []

    async def worker() -> None:
        for item in pending:
            records.append(await send(item))

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(items))))))
    return records


# --- the figures ------------------------------------------------------------------------------


Steps = dict[str, list[tuple[int, float, float, float]]]  # benchmarks.stream_probe.read_log
STAGES = ("client", "decoded", "processed")


def token_timings(records: Sequence[StreamRecord], made: Steps) -> dict[str, list[float]]:
    """Per token: its gap after the previous token of its request at the client, and its
    lateness (time since the engine core made it) at each stage: when the AsyncLLM process
    decoded the engine core's message, when it processed it, when the client got it."""
    timings: dict[str, list[float]] = {"gaps": [], **{stage: [] for stage in STAGES}}
    for record in records:
        steps = made.get(record.request_id) or next(
            (v for k, v in made.items() if k.startswith(record.request_id)), []
        )
        per_token = [step[1:] for step in steps for _ in range(step[0])]
        arrivals = [a.at for a in record.arrivals for _ in range(a.tokens)]
        timings["gaps"] += [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
        for at, (made_at, decoded, processed) in zip(arrivals, per_token, strict=False):
            timings["client"].append(at - made_at)
            timings["decoded"].append(decoded - made_at)
            timings["processed"].append(processed - made_at)
    return timings


def summarize(timings: dict[str, list[float]], records: Sequence[StreamRecord]) -> dict[str, Any]:
    def ms(values: list[float], q: float) -> float | None:
        return round(1000 * float(np.percentile(values, q)), 1) if values else None

    def late_share(values: list[float]) -> float | None:
        return round(sum(1 for v in values if v > LATE_S) / len(values), 3) if values else None

    late = timings["client"]
    events = sum(len(r.arrivals) for r in records)
    reads = sum(r.reads for r in records)
    return {
        "requests": len(records),
        "errors": sum(1 for r in records if r.error),
        "tokens": len(late),
        "gap_p50_ms": ms(timings["gaps"], 50),
        "gap_p99_ms": ms(timings["gaps"], 99),
        "late_p50_ms": ms(late, 50),
        "late_p99_ms": ms(late, 99),
        "late_share": late_share(late),
        "processed_late_p99_ms": ms(timings["processed"], 99),
        "processed_late_share": late_share(timings["processed"]),
        "decoded_late_p99_ms": ms(timings["decoded"], 99),
        "tokens_per_event": round(len(late) / events, 2) if events else None,
        "events_per_read": round(events / reads, 2) if reads else None,
    }


# --- the targets ------------------------------------------------------------------------------


@dataclass
class Plan:
    config: EngineConfig
    concurrencies: list[int]
    requests: int
    warmup: int
    max_tokens: int
    ours_args: list[str]
    vllm_args: list[str]
    images: tuple[ImageSpec, ...] = ()  # in every request (distinct images)

    def spec(self, concurrency: int, seed: int) -> LoadSpec:
        return LoadSpec(
            concurrency=concurrency,
            requests=self.requests,
            images=self.images,
            max_tokens=self.max_tokens,
            ignore_eos=True,
            seed=seed,
        )


@dataclass
class Run:
    """One concurrency level against one target: the client's records, the probe's steps."""

    records: list[StreamRecord]
    made: Steps
    load: float  # the machine's load average at the end


@dataclass
class Pooled:
    """The runs of one target and concurrency over every repeat."""

    records: list[StreamRecord] = field(default_factory=list)
    timings: dict[str, list[float]] = field(default_factory=dict)

    def add(self, records: list[StreamRecord], timings: dict[str, list[float]]) -> None:
        self.records += records
        for key, values in timings.items():
            self.timings.setdefault(key, []).extend(values)


def probed(cmd: list[str], log: Path) -> list[str]:
    """`python -m MODULE ARGS` as `python -m benchmarks.stream_probe LOG MODULE ARGS`."""
    assert cmd[1] == "-m"
    return [cmd[0], "-m", "benchmarks.stream_probe", str(log), *cmd[2:]]


async def run_against_server(plan: Plan, port: int, probe: Path) -> dict[int, Run]:
    results = {}
    model = plan.config.served_model_name

    async def send(body: bytes) -> StreamRecord:
        return await stream_chat("127.0.0.1", port, body)

    for concurrency in plan.concurrencies:
        spec = plan.spec(concurrency, seed=concurrency)
        warm = [chat_body(model, spec, WARMUP_OFFSET + i) for i in range(plan.warmup)]
        await closed_loop(concurrency, warm, send)
        nonce = uuid.uuid4().hex[:6]  # no prompt repeats across repeats (prefix cache)
        bodies = [
            chat_body(model, spec, i).replace(b"Request ", f"Request {nonce}-".encode(), 1)
            for i in range(plan.requests)
        ]
        records = await closed_loop(concurrency, bodies, send)
        results[concurrency] = Run(records, read_log(str(probe)), os.getloadavg()[0])
    return results


def run_server(target: str, plan: Plan, log_dir: Path, repeat: int) -> dict[int, Run]:
    port = free_port()
    probe = log_dir / f"{target}-r{repeat + 1}-probe.txt"
    if target == OURS:
        cmd = ours_command(plan.config, port, plan.ours_args)
    else:
        cmd = vllm_command(plan.config, port, plan.vllm_args)
    child = ChildProcess(
        target, probed(cmd, probe), log_dir / f"{target}-r{repeat + 1}.log", target_env(plan.config)
    )
    try:
        child.start().wait_ready(f"http://127.0.0.1:{port}{READY_PATHS[target]}", 900)
        return asyncio.run(run_against_server(plan, port, probe))
    finally:
        child.stop()


# --- the engine alone (a child process: `--engine-plan`) --------------------------------------


async def engine_alone(plan: dict[str, Any], probe: str) -> dict[str, Any]:
    from vllm import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind, SamplingParams
    from vllm.v1.engine.async_llm import AsyncLLM

    from benchmarks.engine_alone import PromptBuilder
    from lingshu_server.services.chat_prompt import load_chat_template

    install(probe)
    kwargs = plan["engine"]
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
    try:
        tokenizer = engine.get_tokenizer()
        size = kwargs["mm_processor_kwargs"]["size"]
        builder = PromptBuilder(
            tokenizer,
            load_chat_template(kwargs["model"], tokenizer),
            size["shortest_edge"],
            size["longest_edge"],
        )
        params = SamplingParams(
            temperature=0,
            max_tokens=plan["max_tokens"],
            ignore_eos=True,
            output_kind=RequestOutputKind.DELTA,
        )

        async def one(prompt: dict[str, Any]) -> StreamRecord:
            record = StreamRecord(request_id=f"bench-{uuid.uuid4().hex}")
            async for output in engine.generate(prompt, params, record.request_id):
                tokens = len(output.outputs[0].token_ids)
                if tokens:
                    record.arrivals.append(Arrival(time.monotonic(), tokens))
            return record

        results = {}
        for concurrency in plan["concurrencies"]:
            spec = LoadSpec(
                concurrency=concurrency,
                requests=plan["requests"],
                images=tuple(ImageSpec.parse(image) for image in plan["images"]),
                max_tokens=plan["max_tokens"],
                seed=concurrency,
            )
            warm = builder.prompts(spec, plan["warmup"], start=WARMUP_OFFSET)
            await closed_loop(concurrency, warm, one)
            # distinct from every other run's prompts (the prefix cache)
            start = plan["nonce"] + 1000 * concurrency
            prompts = builder.prompts(spec, plan["requests"], start=start)
            records = await closed_loop(concurrency, prompts, one)
            results[str(concurrency)] = {
                "records": [asdict(r) for r in records],
                "load": os.getloadavg()[0],
            }
        return results
    finally:
        engine.shutdown()


def run_engine(plan: Plan, log_dir: Path, repeat: int) -> dict[int, Run]:
    probe = log_dir / f"engine-r{repeat + 1}-probe.txt"
    plan_path = log_dir / f"engine-r{repeat + 1}-plan.json"
    out_path = log_dir / f"engine-r{repeat + 1}-results.json"
    plan_path.write_text(
        json.dumps(
            {
                "engine": engine_kwargs(plan.config),
                "concurrencies": plan.concurrencies,
                "requests": plan.requests,
                "warmup": plan.warmup,
                "max_tokens": plan.max_tokens,
                "images": [str(image) for image in plan.images],
                "nonce": 1_000_000 * (repeat + 1),
            }
        )
    )
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.stream_timing",
        "--engine-plan",
        str(plan_path),
        "--engine-out",
        str(out_path),
        "--engine-probe",
        str(probe),
    ]
    child = ChildProcess(
        ENGINE, cmd, log_dir / f"engine-r{repeat + 1}.log", target_env(plan.config)
    )
    try:
        child.start()
        code = child.wait_exit(3600)
        if code != 0:
            raise child.failure(f"exited with {code}")
    finally:
        child.stop()
    made = read_log(str(probe))
    results = {}
    for concurrency, entry in json.loads(out_path.read_text()).items():
        records = [
            StreamRecord(
                request_id=r["request_id"],
                arrivals=[Arrival(**a) for a in r["arrivals"]],
                reads=len(r["arrivals"]),
            )
            for r in entry["records"]
        ]
        results[int(concurrency)] = Run(records, made, entry["load"])
    return results


def set_client_priority(priority: str) -> str:
    """On a shared machine a reader of normal priority is itself late to read when the cores
    are busy, and its delay would be charged to the server it reads: so the client reads at
    real-time priority (it uses little CPU), and every child it starts is reset to normal."""
    if priority == "normal":
        return "normal"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(10))
    except (OSError, AttributeError) as exc:  # no CAP_SYS_NICE, or not Linux
        return f"normal (real-time refused: {type(exc).__name__})"
    return "real-time (SCHED_FIFO, children reset to normal)"


# --- the command ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stream_timing",
        description="When streamed tokens reach the client, against when the engine made them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 16])
    parser.add_argument(
        "--requests", type=int, default=32, help="measured requests per concurrency"
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="WxH[:FMT]",
        help="an image in every request, e.g. 512x512:jpeg (repeatable; default: text only)",
    )
    parser.add_argument(
        "--client-priority",
        choices=("realtime", "normal"),
        default="realtime",
        help="the reading client's scheduling (realtime: SCHED_FIFO, its children normal)",
    )
    parser.add_argument("--model", help="model directory (default: the demo model)")
    parser.add_argument("--model-variant", choices=MODEL_VARIANTS, default="light")
    parser.add_argument("--ours-arg", action="append", default=[], metavar="ARG")
    parser.add_argument("--vllm-arg", action="append", default=[], metavar="ARG")
    parser.add_argument("--log-dir", type=Path)
    parser.add_argument("--out", type=Path, help="the figures as JSON")
    parser.add_argument("--markdown", action="store_true")
    # the engine-alone child
    parser.add_argument("--engine-plan", help=argparse.SUPPRESS)
    parser.add_argument("--engine-out", help=argparse.SUPPRESS)
    parser.add_argument("--engine-probe", help=argparse.SUPPRESS)
    return parser


COLUMNS = (
    ("tokens", "tokens"),
    ("gap_p50_ms", "gap p50 ms"),
    ("gap_p99_ms", "gap p99 ms"),
    ("late_p50_ms", "late p50 ms"),
    ("late_p99_ms", "late p99 ms"),
    ("late_share", "> 50 ms late"),
    ("processed_late_p99_ms", "AsyncLLM late p99 ms"),
    ("processed_late_share", "AsyncLLM > 50 ms late"),
    ("decoded_late_p99_ms", "ZMQ late p99 ms"),
    ("tokens_per_event", "tokens/event"),
    ("events_per_read", "events/read"),
    ("errors", "errors"),
)


def render(rows: list[dict[str, Any]], markdown: bool) -> str:
    head = ["clients", "target", *(label for _, label in COLUMNS)]
    lines = [
        [str(r["clients"]), TARGET_LABELS[r["target"]], *(str(r[k]) for k, _ in COLUMNS)]
        for r in rows
    ]
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out) + "\n"
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=True)]
    return (
        "\n".join(
            "  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True))
            for line in [head, *lines]
        )
        + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.engine_plan:
        plan_data = json.loads(Path(args.engine_plan).read_text())
        figures = asyncio.run(engine_alone(plan_data, args.engine_probe))
        Path(args.engine_out).write_text(json.dumps(figures))
        return 0
    model = args.model or _demo_model_dir(args.model_variant)
    plan = Plan(
        config=EngineConfig(model=model),
        concurrencies=args.concurrency,
        requests=args.requests,
        warmup=args.warmup,
        max_tokens=args.max_tokens,
        ours_args=args.ours_arg,
        vllm_args=args.vllm_arg,
        images=tuple(ImageSpec.parse(image) for image in args.image),
    )
    progress(f"client priority: {set_client_priority(args.client_priority)}")
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="stream-timing-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    progress(f"logs: {log_dir}")
    pooled: dict[tuple[int, str], Pooled] = {}
    loads: list[float] = []
    for repeat in range(args.repeats):
        for target in args.targets:
            progress(f"[repeat {repeat + 1}/{args.repeats}] {TARGET_LABELS[target]}")
            if target == ENGINE:
                results = run_engine(plan, log_dir, repeat)
            else:
                results = run_server(target, plan, log_dir, repeat)
            for concurrency, run in results.items():
                timings = token_timings(run.records, run.made)
                slot = pooled.setdefault((concurrency, target), Pooled())
                slot.add(run.records, timings)
                loads.append(run.load)
                progress(f"  {concurrency} clients: {summarize(timings, run.records)}")
    rows = [
        {"clients": c, "target": t, **summarize(slot.timings, slot.records)}
        for (c, t), slot in sorted(
            pooled.items(), key=lambda item: (item[0][0], TARGETS.index(item[0][1]))
        )
    ]
    emit(render(rows, args.markdown))
    median = float(np.median(loads))
    emit(
        f"load average during the runs: {min(loads):.1f} to {max(loads):.1f}, median {median:.1f}\n"
    )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "command": "python -m benchmarks.stream_timing "
                    + " ".join(argv or sys.argv[1:]),
                    "rows": rows,
                    "loads": loads,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
