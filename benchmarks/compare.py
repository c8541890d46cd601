"""Side by side, in one command: our server, vLLM's own OpenAI server and the engine alone, on
the same model directory and engine arguments, the same load, alternating repeats.

    python -m benchmarks.compare [--repeats 2] [--cases c16-jpeg512 c1-text] \
        [--requests-scale 1.0] [--smoke] [--out results.json] [--markdown]

Each repeat starts each target in turn (ours, vLLM's, the engine alone), warms it up, runs every
case against it and stops it, so slow drift on the machine hits all three alike. Prints one table
of medians over repeats with our ratios, then the issue's targets as PASS / FAIL. Server logs go
to a temporary folder named at the start (and again on failure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.engine_alone import spec_to_dict
from benchmarks.loadgen import Bodies, ImageSpec, LoadSpec, VideoSpec, run_load
from benchmarks.report import build_report, render_report
from benchmarks.targets import (
    ENGINE,
    OURS,
    READY_PATHS,
    TARGET_LABELS,
    TARGETS,
    VLLM,
    ChildProcess,
    EngineConfig,
    TargetFailed,
    engine_alone_command,
    engine_kwargs,
    free_port,
    ours_command,
    target_env,
    vllm_command,
)

JPEG_512 = ImageSpec(512, 512, "jpeg")
JPEG_1024 = ImageSpec(1024, 1024, "jpeg")
JPEG_2048 = ImageSpec(2048, 2048, "jpeg")
PNG_2048 = ImageSpec(2048, 2048, "png")
PNG16_2048 = ImageSpec(2048, 2048, "png16")  # a 12-bit radiograph in a 16-bit PNG
CT_512 = ImageSpec(512, 512, "dicom")  # one CT slice (vLLM's server gets it as an 8-bit PNG)
CLIP_480P = VideoSpec(854, 480, 10, 10)  # 10 s of H.264 at 10 fps: 20 frames at 2 per second


@dataclass(frozen=True)
class Case:
    name: str
    concurrency: int
    requests: int  # at --requests-scale 1: about 10-20 s per case on a 2-core machine
    images: tuple[ImageSpec, ...]
    purpose: str
    videos: tuple[VideoSpec, ...] = ()
    followup: bool = False


CASES = {
    case.name: case
    for case in (
        Case("c16-jpeg512", 16, 256, (JPEG_512,), "throughput, small JPEG"),
        # A 2048x2048 image is ~5,300 visual tokens: on 2 CPU cores the demo engine itself needs
        # ~1.8 s per image (the vision tower's full-attention block), so these run ~60 s each.
        Case("c16-jpeg2048", 16, 32, (JPEG_2048,), "throughput, large JPEG"),
        Case("c16-png2048", 16, 32, (PNG_2048,), "throughput, large PNG"),
        Case("c1-text", 1, 128, (), "latency, text only"),
        Case("c64-jpeg512", 64, 320, (JPEG_512,), "saturation"),
        # 20 frames of 476x840: 5,100 visual tokens per request
        Case("c4-video480p", 4, 16, (), "video, 10 s 480p H.264", (CLIP_480P,)),
        # One radiologist, one question at a time: latency.
        Case("c1-jpeg512", 1, 32, (JPEG_512,), "interactive, small JPEG"),
        Case("c1-jpeg2048", 1, 12, (JPEG_2048,), "interactive, large JPEG"),
        Case("c1-png16", 1, 12, (PNG16_2048,), "interactive, 16-bit grayscale PNG"),
        Case("c1-dicom-ct", 1, 32, (CT_512,), "interactive, CT DICOM slice"),
        Case(
            "c1-followup-jpeg1024",
            1,
            16,
            (JPEG_1024,),
            "interactive, the follow-up question with the image sent again",
            followup=True,
        ),
    )
}
# The light demo checkpoint: the GPU host's proportions (see `--model-variant`).
MODEL_VARIANTS = ("demo", "light")
SMOKE_CASES = ("c16-jpeg512", "c1-text")
SMOKE_REQUESTS = 8
SMOKE_WARMUP = 2


@dataclass
class Plan:
    config: EngineConfig
    cases: list[tuple[str, LoadSpec]]
    targets: list[str]
    repeats: int
    startup_timeout_s: float
    ours_args: list[str] = field(default_factory=list)
    vllm_args: list[str] = field(default_factory=list)
    vllm_python: str | None = None

    @property
    def image_cases(self) -> list[str]:
        return [name for name, spec in self.cases if spec.images]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description="Our server vs vLLM's OpenAI server vs the engine alone, same model and load.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=2, help="rounds of all targets")
    parser.add_argument(
        "--cases", nargs="+", choices=list(CASES), help="default: all (with --smoke: two)"
    )
    parser.add_argument(
        "--targets", nargs="+", choices=TARGETS, default=list(TARGETS), help="what to run"
    )
    parser.add_argument(
        "--requests-scale", type=float, default=1.0, help="multiplies each case's request count"
    )
    parser.add_argument(
        "--case-requests",
        action="append",
        default=[],
        metavar="CASE=N",
        help="request count for one case, overriding its default and the scale (repeatable)",
    )
    parser.add_argument("--warmup", type=int, default=4, help="unmeasured requests per case")
    parser.add_argument("--max-tokens", type=int, default=32, help="output tokens (ignore_eos)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"a quick check that everything starts, runs and stops: one repeat, "
        f"{SMOKE_REQUESTS} requests per case, cases {' '.join(SMOKE_CASES)} unless --cases",
    )
    parser.add_argument("--out", type=Path, help="write raw results and medians as JSON here")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--log-dir", type=Path, help="server logs (default: a new temp folder)")
    engine = parser.add_argument_group("model and engine (the same for every target)")
    engine.add_argument("--model", help="model directory (default: the CPU demo model)")
    engine.add_argument(
        "--model-variant",
        choices=MODEL_VARIANTS,
        default="demo",
        help="without --model: the demo checkpoint, or its light variant (no full-attention "
        "block in the vision tower, so the engine is not the bottleneck, as on a GPU host)",
    )
    engine.add_argument("--served-model-name", default="lingshu-demo")
    engine.add_argument(
        "--gpu",
        action="store_true",
        help="GPU host: drop the CPU-only settings (enforce_eager, gpu_memory_utilization 0.2, "
        "bfloat16, max_model_len 8192, VLLM_CPU_KVCACHE_SPACE)",
    )
    engine.add_argument("--tensor-parallel-size", type=int, default=1)
    engine.add_argument("--max-model-len", type=int, help="default: 8192 on CPU, model's on GPU")
    engine.add_argument("--gpu-memory-utilization", type=float, help="default: 0.2 CPU, 0.9 GPU")
    engine.add_argument("--dtype", help="default: bfloat16 on CPU, auto on GPU")
    engine.add_argument("--max-pixels", type=int, help="image pixel budget (default 12845056)")
    engine.add_argument(
        "--ours-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra flag for our server, e.g. --ours-arg=--image-workers=4 (repeatable)",
    )
    engine.add_argument(
        "--vllm-arg", action="append", default=[], metavar="ARG", help="extra flag for vLLM's"
    )
    engine.add_argument("--vllm-python", help="Python that runs vLLM's server (default: this one)")
    engine.add_argument("--startup-timeout", type=float, default=900.0, help="seconds per start")
    return parser


def _demo_model_dir(variant: str = "demo") -> str:
    from lingshu_server.demo_model import ensure_demo_model, ensure_light_demo_model

    return str(ensure_light_demo_model() if variant == "light" else ensure_demo_model())


def _case_requests(items: Sequence[str]) -> dict[str, int]:
    counts = {}
    for item in items:
        name, _, count = item.partition("=")
        if name not in CASES or not count.isdigit() or int(count) < 1:
            raise SystemExit(
                f"--case-requests {item!r}: expected CASE=N, CASE one of {list(CASES)}"
            )
        counts[name] = int(count)
    return counts


def plan_from_args(args: argparse.Namespace, model_dir: str | None = None) -> Plan:
    """The whole run, decided before anything starts. `model_dir` overrides the demo lookup."""
    model = args.model or model_dir or _demo_model_dir(args.model_variant)
    config = EngineConfig(model=model, served_model_name=args.served_model_name)
    if args.gpu:
        config = config.for_gpu()
    overrides = {
        "tensor_parallel_size": args.tensor_parallel_size,
        "max_model_len": args.max_model_len,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "dtype": args.dtype,
        "max_pixels": args.max_pixels,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    names = args.cases or (list(SMOKE_CASES) if args.smoke else list(CASES))
    fixed = _case_requests(args.case_requests)
    cases = []
    for name in names:
        case = CASES[name]
        requests = (
            SMOKE_REQUESTS if args.smoke else max(1, round(case.requests * args.requests_scale))
        )
        requests = fixed.get(name, requests)
        spec = LoadSpec(
            concurrency=case.concurrency,
            requests=requests,
            images=case.images,
            videos=case.videos,
            max_tokens=args.max_tokens,
            ignore_eos=True,
            # A seed per case: no image repeats across cases, so no case is served from the
            # multimodal and prefix caches that an earlier case filled.
            seed=list(CASES).index(name) + 1,
            warmup=SMOKE_WARMUP if args.smoke else args.warmup,
            followup=case.followup,
        )
        cases.append((name, spec))
    return Plan(
        config=config,
        cases=cases,
        targets=list(dict.fromkeys(args.targets)),
        repeats=1 if args.smoke else args.repeats,
        startup_timeout_s=args.startup_timeout,
        ours_args=list(args.ours_arg),
        vllm_args=list(args.vllm_arg),
        vllm_python=args.vllm_python,
    )


def emit(text: str) -> None:
    """The one place this CLI writes its results."""
    sys.stdout.write(text)
    sys.stdout.flush()


def progress(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _describe(summary: dict[str, Any]) -> str:
    ttft = summary["ttft_p50_s"]
    cpu = summary["api_cpu_s_per_req"]
    return (
        f"{summary['requests_per_s']:.2f} req/s, TTFT p50 "
        f"{'-' if ttft is None else f'{ttft * 1000:.0f} ms'}, API CPU "
        f"{'-' if cpu is None else f'{cpu * 1000:.0f} ms'}/req, {summary['errors']} errors"
    )


class Runner:
    def __init__(self, plan: Plan, log_dir: Path):
        self.plan = plan
        self.log_dir = log_dir
        self.runs: list[dict[str, Any]] = []
        self._bodies: dict[tuple[str, bool], Bodies] = {}

    def bodies(self, name: str, spec: LoadSpec, target: str) -> Bodies:
        # Built once (before any clock starts) and sent to a server in every repeat. vLLM's
        # server gets DICOM as the PNG a client would send it (it reads no DICOM).
        no_dicom = target == VLLM and any(image.fmt == "dicom" for image in spec.images)
        if (name, no_dicom) not in self._bodies:
            self._bodies[name, no_dicom] = Bodies.build(
                spec, self.plan.config.served_model_name, no_dicom=no_dicom
            )
        return self._bodies[name, no_dicom]

    def run(self) -> None:
        for name, spec in self.plan.cases:
            for target in set(self.plan.targets) - {ENGINE}:
                self.bodies(name, spec, target)
        for repeat in range(self.plan.repeats):
            for target in self.plan.targets:
                progress(f"[repeat {repeat + 1}/{self.plan.repeats}] {TARGET_LABELS[target]}")
                if target == ENGINE:
                    self._run_engine(repeat)
                else:
                    self._run_server(target, repeat)

    def _record(self, repeat: int, target: str, case: str, summary: dict[str, Any]) -> None:
        self.runs.append(
            {
                "repeat": repeat,
                "target": target,
                "case": case,
                "summary": summary,
                "load": os.getloadavg()[0],  # others' work on a shared machine, at the end
            }
        )
        progress(f"  {case}: {_describe(summary)}")

    def _run_server(self, target: str, repeat: int) -> None:
        config, port = self.plan.config, free_port()
        if target == OURS:
            cmd = ours_command(config, port, self.plan.ours_args)
        else:
            cmd = vllm_command(config, port, self.plan.vllm_args, self.plan.vllm_python)
        child = ChildProcess(
            target, cmd, self.log_dir / f"{target}-r{repeat + 1}.log", target_env(config)
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            started = time.monotonic()
            child.start().wait_ready(base_url + READY_PATHS[target], self.plan.startup_timeout_s)
            progress(f"  ready in {time.monotonic() - started:.0f} s (pid {child.pid})")
            for name, spec in self.plan.cases:
                summary = asyncio.run(
                    run_load(
                        base_url,
                        spec,
                        model=config.served_model_name,
                        api_pid=child.pid,
                        bodies=self.bodies(name, spec, target),
                    )
                )
                if child.exited() is not None:
                    raise child.failure("died during the run")
                self._record(repeat, target, name, summary.to_dict())
        finally:
            child.stop()

    def _run_engine(self, repeat: int) -> None:
        plan_path = self.log_dir / f"engine-r{repeat + 1}-plan.json"
        out_path = self.log_dir / f"engine-r{repeat + 1}-results.json"
        plan = {
            "engine": engine_kwargs(self.plan.config),
            # the engine-alone run feeds images only; video cases compare the two servers
            "cases": [
                {"name": n, "spec": spec_to_dict(s)} for n, s in self.plan.cases if not s.videos
            ],
        }
        plan_path.write_text(json.dumps(plan, indent=2))
        child = ChildProcess(
            ENGINE,
            engine_alone_command(plan_path, out_path),
            self.log_dir / f"engine-r{repeat + 1}.log",
            target_env(self.plan.config),
        )
        try:
            child.start()
            code = child.wait_exit(self.plan.startup_timeout_s + 3600)
            if code != 0 or not out_path.exists():
                raise child.failure(f"exited with {code}")
        finally:
            child.stop()
        for result in json.loads(out_path.read_text()):
            self._record(repeat, ENGINE, result["case"], result["summary"])


def _meta(plan: Plan, argv: Sequence[str]) -> dict[str, Any]:
    from lingshu_server.engine.vllm_engine import vllm_version

    return {
        "command": "python -m benchmarks.compare " + " ".join(argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "vllm": vllm_version(),
        "engine": engine_kwargs(plan.config),
        "cpu_mode": plan.config.cpu,
        "load_average": os.getloadavg(),
        "cases": {name: spec_to_dict(spec) for name, spec in plan.cases},
        "targets": plan.targets,
        "repeats": plan.repeats,
    }


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    plan = plan_from_args(args)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="lingshu-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    progress(f"logs: {log_dir}")
    signal.signal(signal.SIGTERM, _raise_interrupt)  # teardown runs on kill as on Ctrl-C
    runner = Runner(plan, log_dir)
    failure = None
    try:
        runner.run()
    except TargetFailed as exc:
        failure = str(exc)
    except KeyboardInterrupt:
        failure = "interrupted"
    report = build_report(runner.runs, plan.image_cases)
    if args.out:
        results = {"meta": _meta(plan, argv), "runs": runner.runs, **report}
        args.out.write_text(json.dumps(results, indent=2))
    if runner.runs:
        emit(render_report(report, markdown=args.markdown))
    if failure:
        progress(f"FAILED: {failure}\nlogs: {log_dir}")
        return 2
    progress(f"logs: {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
