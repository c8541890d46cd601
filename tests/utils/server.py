"""Start a real lingshu-server process (the CPU demo model on vLLM) for a test session."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 420


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    process: subprocess.Popen
    port: int
    log_path: Path
    model: str
    # every distinct /health body seen while the server started (the loading stages)
    startup_statuses: list[dict] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_demo_server(
    log_path: Path, *extra_args: str, env: dict | None = None, cwd: Path | None = None
) -> RunningServer:
    return _start(log_path, ["demo", *extra_args], env, cwd)


def start_checkpoint_server(
    log_path: Path, model_dir: Path, *extra_args: str, env: dict | None = None
) -> RunningServer:
    """`lingshu-server serve` on another checkpoint, with the CPU settings `demo` uses."""
    args = [
        "serve",
        "--model",
        str(model_dir),
        "--served-model-name",
        "lingshu-demo",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.2",
        "--enforce-eager",
        *extra_args,
    ]
    return _start(log_path, args, {"VLLM_CPU_KVCACHE_SPACE": "1", **(env or {})})


def _start(
    log_path: Path, args: list[str], env: dict | None, cwd: Path | None = None
) -> RunningServer:
    port = free_port()
    cmd = [sys.executable, "-m", "lingshu_server", *args, "--port", str(port)]
    log = log_path.open("wb")
    process = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd
    )
    server = RunningServer(process, port, log_path, model="lingshu-demo")
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log_text()}")
        try:
            response = httpx.get(f"{server.base_url}/health", timeout=2)
            status = {k: v for k, v in response.json().items() if k != "elapsed_s"}
            if status not in server.startup_statuses:
                server.startup_statuses.append(status)
            if response.status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"server did not become healthy:\n{server.log_text()[-5000:]}")


class Restartable:
    """A session's server that a test may end (SIGTERM drain, engine death): `get` starts it
    the first time and again after it ended, so no test depends on the order tests run in."""

    def __init__(self, start: Callable[[], RunningServer]):
        self._start = start
        self._started: list[RunningServer] = []

    def get(self) -> RunningServer:
        if not self._started or self._started[-1].process.poll() is not None:
            self._started.append(self._start())
        return self._started[-1]

    def stop(self) -> None:
        for running in self._started:
            running.stop()
