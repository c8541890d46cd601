"""One radiologist at the console while a night's batch runs on the same server: the time to
first token of their requests with a 1,000-line batch running, against the same requests on
the idle server, and the batch's own progress (lines/s) meanwhile.

Batch lines run at --batch-priority, a bounded number at once (--batch-max-in-flight): the
interactive request overtakes the batch lines waiting for the engine and shares each engine step
with the ones running. Run from the repository root:

    .venv/bin/python -m benchmarks.batch_priority                   # ~3 minutes on 2 CPU cores
    .venv/bin/python -m benchmarks.batch_priority --requests 40 --lines 1000 --json out.json
    .venv/bin/python -m benchmarks.batch_priority --server-args "--batch-max-in-flight 4"

The idle phase runs first; then the batch starts and, once it is under way, the same requests
run again. The batch is cancelled at the end (its finished lines kept): the run does not wait
for all its lines.
"""

from __future__ import annotations

import argparse
import base64
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.compare import emit, progress
from benchmarks.images import encode_variant
from benchmarks.pacs_latency import time_to_first_token
from tests.utils.server import RunningServer, start_demo_server

WARMUP = 3


def interactive_body(model: str, index: int) -> dict[str, Any]:
    jpeg = encode_variant(512, 512, "jpeg", seed=7, index=index % 4)
    image = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    return {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image}},
                    {"type": "text", "text": f"Findings for study {index}?"},
                ],
            }
        ],
        "max_tokens": 16,
        "temperature": 0,
        "stream": True,
    }


def batch_file(model: str, lines: int, max_tokens: int) -> bytes:
    out = []
    for i in range(lines):
        body = {
            "model": model,
            "messages": [{"role": "user", "content": f"Draft a report for study {i}."}],
            "max_tokens": max_tokens,
        }
        out.append(
            json.dumps(
                {
                    "custom_id": f"s{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                }
            )
        )
    return ("\n".join(out) + "\n").encode()


def ttfts(http: httpx.Client, model: str, count: int) -> list[float]:
    return [time_to_first_token(http, interactive_body(model, i)) for i in range(count)]


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"ttft_p50_ms": 1000 * statistics.median(ordered), "ttft_p99_ms": 1000 * p99}


def measure(server: RunningServer, requests: int, lines: int, max_tokens: int) -> dict[str, Any]:
    with httpx.Client(base_url=server.base_url, timeout=600) as http:
        ttfts(http, server.model, WARMUP)
        progress(f"idle: {requests} interactive requests ...")
        idle = ttfts(http, server.model, requests)
        upload = http.post(
            "/v1/files",
            files={"file": ("night.jsonl", batch_file(server.model, lines, max_tokens))},
            data={"purpose": "batch"},
        )
        upload.raise_for_status()
        batch = http.post(
            "/v1/batches",
            json={
                "input_file_id": upload.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        ).json()
        while http.get(f"/v1/batches/{batch['id']}").json()["request_counts"]["completed"] < 8:
            time.sleep(0.2)  # the batch under way: lines in flight, more waiting
        started = http.get(f"/v1/batches/{batch['id']}").json()["request_counts"]
        began = time.perf_counter()
        progress(f"with the {lines}-line batch running: {requests} interactive requests ...")
        busy = ttfts(http, server.model, requests)
        elapsed = time.perf_counter() - began
        ended = http.get(f"/v1/batches/{batch['id']}").json()["request_counts"]
        http.post(f"/v1/batches/{batch['id']}/cancel")
    done = (ended["completed"] + ended["failed"]) - (started["completed"] + started["failed"])
    report = {
        "requests": requests,
        "batch_lines": lines,
        "batch_line_max_tokens": max_tokens,
        "idle": summary(idle),
        "with_batch": summary(busy),
        "batch_lines_per_s": done / elapsed,
    }
    report["ratio_p50"] = report["with_batch"]["ttft_p50_ms"] / report["idle"]["ttft_p50_ms"]
    report["ratio_p99"] = report["with_batch"]["ttft_p99_ms"] / report["idle"]["ttft_p99_ms"]
    return report


def render(report: dict[str, Any]) -> str:
    idle, busy = report["idle"], report["with_batch"]
    return "\n".join(
        [
            f"One interactive client (512x512 JPEG, 16 tokens), {report['requests']} requests "
            f"each; a {report['batch_lines']}-line batch ({report['batch_line_max_tokens']} "
            "tokens a line)",
            "",
            "| interactive | TTFT p50 (ms) | TTFT p99 (ms) |",
            "| --- | ---: | ---: |",
            f"| idle server | {idle['ttft_p50_ms']:.0f} | {idle['ttft_p99_ms']:.0f} |",
            f"| batch running | {busy['ttft_p50_ms']:.0f} | {busy['ttft_p99_ms']:.0f} |",
            "",
            f"with batch / idle: p50 {report['ratio_p50']:.2f}x, p99 {report['ratio_p99']:.2f}x; "
            f"the batch meanwhile: {report['batch_lines_per_s']:.2f} lines/s",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30, help="interactive requests a phase")
    parser.add_argument("--lines", type=int, default=1000, help="lines in the batch")
    parser.add_argument("--line-tokens", type=int, default=32, help="max_tokens of a batch line")
    parser.add_argument("--server-args", default="", help="more `lingshu-server demo` flags")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lingshu-batch-priority-") as work:
        progress("starting the server (demo model) ...")
        server = start_demo_server(
            Path(work) / "server.log",
            "--state-dir",
            str(Path(work) / "state"),
            *shlex.split(args.server_args),
        )
        try:
            report = measure(server, args.requests, args.lines, args.line_tokens)
        finally:
            server.stop()
    emit(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
