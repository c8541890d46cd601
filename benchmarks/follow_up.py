"""A follow-up question, timed two ways on our server: by `previous_response_id` (the server
replays the stored chain, image included) against the same follow-up re-sent in full by the
client (the image's data URL again in the request).

Measures, over `--repeats` follow-ups each (medians), alternating the two kinds so that drift on
the machine hits both alike:
- time to first token (client side: request sent -> first event of the stream);
- the API process's CPU time per follow-up (the server process only; the engine core is its own
  process);
- bytes sent by the client per follow-up.

Every follow-up is about the same first answer (one image, stored), as a radiologist asks
several questions about one study. Run from the repository root:

    .venv/bin/python -m benchmarks.follow_up                     # ~2 minutes on 2 CPU cores
    .venv/bin/python -m benchmarks.follow_up --image-size 2048 --repeats 40 --json out.json
    .venv/bin/python -m benchmarks.follow_up --light             # the light vision tower

The API's CPU time is read from the kernel in clock ticks (10 ms): use enough repeats.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.compare import emit, progress
from benchmarks.images import encode_variant
from benchmarks.pacs_latency import time_to_first_token
from tests.utils.server import RunningServer, start_demo_server

WARMUP = 3
MAX_TOKENS = 8
QUESTION = "Is the cardiac silhouette enlarged?"


def first_event_seconds(http: httpx.Client, body: dict[str, Any]) -> float:
    return time_to_first_token(http, {**body, "stream": True}, path="/v1/responses")


def bodies(http: httpx.Client, model: str, image_size: int) -> dict[str, dict[str, Any]]:
    """The stored first turn, then each kind of follow-up's request body."""
    jpeg = encode_variant(image_size, image_size, "jpeg", seed=5, index=0)
    turn = {
        "role": "user",
        "content": [
            {
                "type": "input_image",
                "image_url": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode(),
            },
            {"type": "input_text", "text": "Describe the findings."},
        ],
    }
    common = {"model": model, "max_output_tokens": MAX_TOKENS, "temperature": 0}
    first = http.post("/v1/responses", json={**common, "input": [turn], "store": True})
    first.raise_for_status()
    answer = first.json()
    replayed = [
        {
            "role": "assistant",
            "content": [{"type": "output_text", "text": item["content"][0]["text"]}],
        }
        for item in answer["output"]
    ]
    return {
        "previous_response_id": {
            **common,
            "previous_response_id": answer["id"],
            "input": QUESTION,
            "store": False,
        },
        "re_sent_in_full": {
            **common,
            "input": [turn, *replayed, {"role": "user", "content": QUESTION}],
            "store": False,
        },
    }


def measure(
    server: RunningServer, repeats: int, image_size: int, *, api_pid: int | None = None
) -> dict[str, Any]:
    """`api_pid`: the process serving the API, when it is not the server's own process."""
    api = psutil.Process(api_pid or server.process.pid)
    results: dict[str, dict[str, list[float]]] = {}
    with httpx.Client(base_url=server.base_url, timeout=600) as http:
        kinds = bodies(http, server.model, image_size)
        for body in kinds.values():
            for _ in range(WARMUP):
                first_event_seconds(http, body)
        for _ in range(repeats):
            for name, body in kinds.items():  # alternating
                before = api.cpu_times()
                ttft = first_event_seconds(http, body)
                after = api.cpu_times()
                cpu = (after.user - before.user) + (after.system - before.system)
                entry = results.setdefault(name, {"ttft": [], "cpu": []})
                entry["ttft"].append(ttft)
                entry["cpu"].append(cpu)
    report: dict[str, Any] = {"image_size": image_size, "repeats": repeats, "results": {}}
    for name, entry in results.items():
        report["results"][name] = {
            "ttft_p50_ms": 1000 * statistics.median(entry["ttft"]),
            "api_cpu_ms": 1000 * statistics.mean(entry["cpu"]),
            "request_bytes": len(json.dumps(kinds[name])),
        }
    chained, full = (report["results"][k] for k in ("previous_response_id", "re_sent_in_full"))
    report["ratios"] = {
        "ttft": chained["ttft_p50_ms"] / full["ttft_p50_ms"],
        "api_cpu": chained["api_cpu_ms"] / full["api_cpu_ms"] if full["api_cpu_ms"] else None,
    }
    return report


def render(report: dict[str, Any]) -> str:
    rows = [
        f"Follow-up about one {report['image_size']}x{report['image_size']} JPEG, "
        f"{report['repeats']} repeats each",
        "",
        "| follow-up | TTFT p50 (ms) | API CPU (ms) | request bytes |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, r in report["results"].items():
        rows.append(
            f"| {name} | {r['ttft_p50_ms']:.0f} | {r['api_cpu_ms']:.1f} | {r['request_bytes']} |"
        )
    ratios = report["ratios"]
    cpu = f"{ratios['api_cpu']:.2f}x" if ratios["api_cpu"] is not None else "n/a"
    rows.append("")
    rows.append(f"previous_response_id / re-sent: TTFT {ratios['ttft']:.2f}x, API CPU {cpu}")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="follow-ups of each kind")
    parser.add_argument("--image-size", type=int, default=1024, help="the study's side, pixels")
    parser.add_argument("--light", action="store_true", help="the light demo model")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lingshu-follow-up-") as work:
        progress("starting the server (demo model) ...")
        server = start_demo_server(
            Path(work) / "server.log",
            *(["--light"] if args.light else []),
            "--state-dir",
            str(Path(work) / "state"),
        )
        try:
            report = measure(server, args.repeats, args.image_size)
        finally:
            server.stop()
    emit(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
