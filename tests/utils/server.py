"""Start a real lingshu-server process (the CPU demo model on vLLM) for a test session."""

from __future__ import annotations

import json
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
# Set per test by tests/utils/tiers.py: the e2e test that may start an engine, or None (outside
# pytest, anything may).
ENGINE_ALLOWED_FOR: str | None = "outside pytest"
CURRENT_TEST = ""


def _check_engine_allowed() -> None:
    if ENGINE_ALLOWED_FOR is None:
        raise RuntimeError(
            f"{CURRENT_TEST} starts a vLLM engine but is not marked e2e: mark it "
            "`pytest.mark.e2e`, or give it the fake engine (tests/utils/tiers.py)"
        )


def wait_until_healthy(
    base_url: str,
    statuses: list[dict],
    failure: Callable[[], str | None],
    timeout_s: float = STARTUP_TIMEOUT_S,
    poll_s: float = 0.5,
    get: Callable[[str], httpx.Response] | None = None,
) -> bool:
    """Poll /health until 200 (True) or the timeout (False), recording every distinct status
    (the loading stages); `failure` names a reason to give up at once (the process ended).
    `get` fetches a URL (default: plain httpx; HTTPS with a client certificate needs its own)."""
    get = get or (lambda url: httpx.get(url, timeout=2))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reason = failure()
        if reason is not None:
            raise RuntimeError(reason)
        try:
            response = get(f"{base_url}/health")
            status = {k: v for k, v in response.json().items() if k != "elapsed_s"}
            if status not in statuses:
                statuses.append(status)
            if response.status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Sockets bound and never listening, held for the whole session (see dead_port).
_HELD: list[socket.socket] = []


def dead_port() -> int:
    """A loopback port where nothing answers (a connection is refused) for the whole session:
    bound by this process and never listened on, so no other server can take it meanwhile (a
    port merely found free may be a test server's by the time it is used)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    return sock.getsockname()[1]


@dataclass
class RunningServer:
    process: subprocess.Popen
    port: int
    log_path: Path
    model: str
    # every distinct /health body seen while the server started (the loading stages)
    startup_statuses: list[dict] = field(default_factory=list)
    # a front end of the shared engine process (SharedEngine) rather than a process of its own
    shared: SharedEngine | None = None
    name: str = ""
    args: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        if self.shared is not None:  # the front end stops; the engine serves the others
            self.shared.remove(self.name)
            return 0
        return terminate(self.process, timeout)


def terminate(process: subprocess.Popen, timeout: float) -> int:
    """SIGTERM (the server drains and exits), then SIGKILL after `timeout`; the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def start_demo_server(
    log_path: Path, *extra_args: str, env: dict | None = None, cwd: Path | None = None
) -> RunningServer:
    return _start(log_path, ["demo", *extra_args], env, cwd)


def start_checkpoint_server(
    log_path: Path, model_dir: Path, *extra_args: str, env: dict | None = None
) -> RunningServer:
    """`lingshu-server serve` on another checkpoint, with the CPU settings `demo` uses."""
    args = [*checkpoint_command(model_dir), *extra_args]
    return _start(log_path, args, {"VLLM_CPU_KVCACHE_SPACE": "1", **(env or {})})


def checkpoint_command(model_dir: Path) -> list[str]:
    """`serve` on another checkpoint under the demo's name, with the CPU settings `demo` uses."""
    return [
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
    ]


def _start(
    log_path: Path, args: list[str], env: dict | None, cwd: Path | None = None
) -> RunningServer:
    _check_engine_allowed()
    port = free_port()
    cmd = [sys.executable, "-m", "lingshu_server", *args, "--port", str(port)]
    log = log_path.open("wb")
    process = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd
    )
    server = RunningServer(process, port, log_path, model="lingshu-demo")

    def exited() -> str | None:
        if process.poll() is None:
            return None
        return f"server exited with {process.returncode}:\n{server.log_text()}"

    if wait_until_healthy(server.base_url, server.startup_statuses, exited):
        return server
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


class SharedEngine:
    """The test session's real engine: one `tests.utils.shared_engine` process (one vLLM engine)
    behind any number of front ends, each a `lingshu-server demo` configuration on its own port.
    Started on first use; started again if a test ended it (engine death), with the front ends
    asked for after that."""

    def __init__(self, log_path: Path, *engine_args: str):
        self.log_path = log_path
        self.engine_args = list(engine_args)
        self.process: subprocess.Popen | None = None
        self.frontends: dict[str, RunningServer] = {}
        self.starts = 0
        # the first front end of the engine process: its start-up saw the engine load
        self.first_frontend: RunningServer | None = None

    def _ensure_process(self) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            _check_engine_allowed()
            self.starts += 1
            log = self.log_path.open("ab")
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.utils.shared_engine", *self.engine_args],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"},
                cwd=Path(__file__).resolve().parents[2],
            )
            self.frontends.clear()
            self.first_frontend = None
        return self.process

    def _send(self, command: dict) -> None:
        process = self._ensure_process()
        assert process.stdin is not None
        process.stdin.write((json.dumps(command) + "\n").encode())
        process.stdin.flush()

    def frontend(self, name: str, *args: str) -> RunningServer:
        """The front end `name` with `args` (flags of `lingshu-server demo`), started unless it
        is already running with those flags."""
        running = self.frontends.get(name)
        if running is not None and running.process.poll() is None and running.args == list(args):
            if _healthy(running):
                return running
        if running is not None:
            self.remove(name)
        port = free_port()
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._send({"op": "add", "name": name, "args": [*self.engine_args, *args], "port": port})
        assert self.process is not None
        server = RunningServer(
            self.process,
            port,
            self.log_path,
            "lingshu-demo",
            shared=self,
            name=name,
            args=list(args),
        )
        process = self.process

        def failed() -> str | None:
            if process.poll() is not None:
                return f"shared engine exited:\n{server.log_text()[-5000:]}"
            refused = self._refusal(name, log_offset)
            return f"front end {name} refused: {refused}" if refused else None

        if wait_until_healthy(server.base_url, server.startup_statuses, failed, poll_s=0.2):
            self.frontends[name] = server
            self.first_frontend = self.first_frontend or server
            return server
        raise RuntimeError(f"front end {name} did not become healthy:\n{server.log_text()[-5000:]}")

    def _refusal(self, name: str, offset: int) -> str | None:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            for line in log.read().decode(errors="replace").splitlines():
                if '"front end refused"' in line and f'"frontend": "{name}"' in line:
                    return json.loads(line).get("error", line)
        return None

    def drain(self, name: str) -> None:
        """What SIGTERM does to a server process, to the front end `name` alone."""
        self._send({"op": "drain", "name": name})

    def remove(self, name: str) -> None:
        running = self.frontends.pop(name, None)
        if running is None or self.process is None or self.process.poll() is not None:
            return
        self._send({"op": "remove", "name": name})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _healthy(running):
            time.sleep(0.1)

    def stop(self, timeout: float = 60) -> int | None:
        if self.process is None:
            return None
        return terminate(self.process, timeout)


def _healthy(running: RunningServer) -> bool:
    try:
        return httpx.get(f"{running.base_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
