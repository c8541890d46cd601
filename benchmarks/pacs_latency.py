"""PACS questions, timed: a local Orthanc (DICOMweb, basic auth) and our server on the demo model.

Measures, over `--repeats` requests each (medians):
- time to first token (TTFT, client side: request sent -> first SSE event) for one CT instance
  and for a 4-slice series by DICOMweb reference, fetched from the PACS (each repeat as a new
  caller, so nothing comes from the cache) and as a follow-up question (from the cache);
- the same CT slice sent as a base64 DICOM data URL, for comparison;
- the API process's CPU time per image (the server process only; the engine core is its own
  process), by reference vs. base64.

The CT slices are synthetic 512x512 16-bit CT images (tests/utils/ct_series.py), about 0.5 MB
each, like a real axial CT slice. Run from the repository root:

    .venv/bin/python -m benchmarks.pacs_latency              # ~1 minute on 2 CPU cores
    .venv/bin/python -m benchmarks.pacs_latency --repeats 60 --json results.json

The API's CPU time is read from the kernel in clock ticks (10 ms): use enough repeats.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.compare import emit, progress
from tests.utils.ct_series import CtSeries, synthetic_ct_series
from tests.utils.orthanc import start_orthanc
from tests.utils.server import RunningServer, start_demo_server

USER, PASSWORD = "lingshu", "benchmark-secret"
WARMUP = 4
QUESTION = "Describe the findings."


def body(image_url: dict[str, Any]) -> dict[str, Any]:
    content = [{"type": "image_url", "image_url": image_url}, {"type": "text", "text": QUESTION}]
    return {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 1,
        "stream": True,
    }


def time_to_first_token(
    http: httpx.Client,
    payload: dict[str, Any],
    key: str | None = None,
    path: str = "/v1/chat/completions",
) -> float:
    """Seconds from sending a streamed request to its first SSE event; the rest is drained."""
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with http.stream("POST", path, json=payload, headers=headers) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"request failed: {response.status_code} {response.text[:300]}")
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                first = time.perf_counter() - started
                break
        else:
            raise RuntimeError("the stream ended without an event")
        for _ in lines:  # drain, so the next request starts clean
            pass
    return first


class Measure:
    """Runs one kind of request `repeats` times: TTFT each, and the API process's CPU in all."""

    def __init__(self, server: RunningServer, http: httpx.Client):
        self.api = psutil.Process(server.process.pid)
        self.http = http
        self.results: dict[str, dict[str, float]] = {}

    def run(
        self,
        name: str,
        repeats: int,
        images: int,
        make: Callable[[int], tuple[dict[str, Any], str]],
    ) -> None:
        """`make(i)` -> (request body, API key) of repeat i."""
        prepared = [make(i) for i in range(repeats)]  # base64 encoding is the client's work
        before = self.api.cpu_times()
        ttft = [time_to_first_token(self.http, payload, key) for payload, key in prepared]
        after = self.api.cpu_times()
        cpu = (after.user - before.user) + (after.system - before.system)
        self.results[name] = {
            "ttft_p50_ms": 1000 * statistics.median(ttft),
            "ttft_min_ms": 1000 * min(ttft),
            "api_cpu_ms_per_image": 1000 * cpu / (repeats * images),
            "repeats": repeats,
        }
        progress(f"  {name}: {self.results[name]}")


def run(repeats: int, work: Path) -> dict[str, Any]:
    series = synthetic_ct_series(count=24, size=512, name="benchmark-ct")
    orthanc = start_orthanc(work / "orthanc", {USER: PASSWORD})
    server: RunningServer | None = None
    try:
        orthanc.upload(series.shuffled())
        credentials = work / "pacs-credentials"
        credentials.write_text(f"{USER}:{PASSWORD}\n")
        keys = [f"benchmark-key-{i:03d}" for i in range(2 * repeats + WARMUP + 1)]
        progress("starting the server (demo model) ...")
        server = start_demo_server(
            work / "server.log",
            "--dicomweb-urls",
            orthanc.dicomweb_url,
            "--dicomweb-auth",
            f"basic:{credentials}",
            "--api-keys",
            ",".join(keys),
        )
        return measure(server, orthanc.dicomweb_url, series, keys, repeats)
    finally:
        if server is not None:
            server.stop()
        orthanc.stop()


def measure(
    server: RunningServer,
    base: str,
    series: CtSeries,
    keys: list[str],
    repeats: int,
    warmup: int = WARMUP,
) -> dict[str, Any]:
    """`keys`: API keys the server accepts, at least 2 x repeats + warmup + 1 (a new key is a
    new caller, whose instances are not cached yet)."""
    series_url = f"{base}/studies/{series.study_uid}/series/{series.series_uid}"

    def instance(i: int) -> str:
        return f"{series_url}/instances/{series.slices[i % len(series.slices)].sop_uid}"

    def as_base64(i: int) -> str:
        data = series.slices[i % len(series.slices)].data
        return "data:application/dicom;base64," + base64.b64encode(data).decode()

    fresh = iter(keys)  # a new API key is a new caller: nothing of theirs is cached
    follow_up = next(fresh)
    with httpx.Client(base_url=server.base_url, timeout=300) as http:
        m = Measure(server, http)
        progress("warming up ...")
        for i in range(warmup):
            time_to_first_token(http, body({"url": as_base64(i)}), follow_up)
            time_to_first_token(http, body({"url": instance(i)}), next(fresh))
        progress("measuring ...")
        four = {"url": series_url, "dicom": {"slices": 4}}
        cases: list[tuple[str, int, Callable[[int], tuple[dict[str, Any], str]]]] = [
            ("ct_instance_base64", 1, lambda i: (body({"url": as_base64(i)}), follow_up)),
            ("ct_instance_pacs", 1, lambda i: (body({"url": instance(i)}), next(fresh))),
            ("ct_instance_pacs_cached", 1, lambda i: (body({"url": instance(0)}), follow_up)),
            ("ct_series_4_pacs", 4, lambda i: (body(four), next(fresh))),
            ("ct_series_4_pacs_cached", 4, lambda i: (body(four), follow_up)),
        ]
        for name, images, make in cases:
            m.run(name, repeats, images, make)
    first = series.slices[0]
    return {"slice": {"size": first.size, "bytes": len(first.data)}, "results": m.results}


def render(report: dict[str, Any]) -> str:
    rows = [
        "| request | TTFT p50 (ms) | TTFT min (ms) | API CPU per image (ms) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, r in report["results"].items():
        rows.append(
            f"| {name} | {r['ttft_p50_ms']:.0f} | {r['ttft_min_ms']:.0f} "
            f"| {r['api_cpu_ms_per_image']:.1f} |"
        )
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="requests per measurement")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lingshu-pacs-bench-") as work:
        report = run(args.repeats, Path(work))
    emit(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
