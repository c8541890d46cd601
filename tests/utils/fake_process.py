"""The real app on the fake engine (tests/utils/fake_engine) in a process of its own: a server a
test may kill -9, run twice beside itself (replicas), or start in a mount namespace of its own.

Everything but the engine is the server's: the settings read from the command line as
`lingshu-server demo ARGS` reads them (tests/utils/in_process.demo_command_settings), JSON log
lines, `serve.http_server` under uvicorn with its drain and its exit code. Fault injection on
the fake engine is sound where the engine decides nothing: storage faults.

A cold Python start imports torch, transformers and vLLM's configuration: seconds of CPU each
time. So one launcher process imports all of it once and forks a fresh server process per
start (a fork of a process that ran nothing but imports, no thread but the main one). The
test process speaks to the launcher in JSON lines on its stdin and stdout:

    {"op": "start", "servers": [{"args": [...], "log": "/path", "tmpfs": null}, ...]}
                                                  -> {"pids": [123, ...]}
    {"op": "poll", "pid": 123}                    -> {"returncode": null}

The servers of one "start" are forked first and then let go together (as replicas a deployment
starts at once): their start-ups race for real.

Each server dies with the launcher (PR_SET_PDEATHSIG), and the launcher with the end of its
stdin (the test process gone).

    python -m tests.utils.fake_process   # the launcher
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.utils.server import RunningServer, free_port, wait_until_healthy

STARTUP_TIMEOUT_S = 60
ROOT = Path(__file__).resolve().parents[2]  # the repository: `-m tests.utils...` from there
PR_SET_PDEATHSIG = 1
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


@dataclass(frozen=True)
class Tmpfs:
    """A tmpfs of `size_bytes` mounted on `path` in the server's own mount namespace (a small
    disk that fills up); the test process reaches it through /proc/PID/root."""

    path: Path
    size_bytes: int


class ForkedProcess:
    """A server the launcher forked, with the parts of subprocess.Popen's interface that
    tests/utils/server (RunningServer, terminate, Restartable) use."""

    def __init__(self, launcher: Launcher, pid: int):
        self._launcher = launcher
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._launcher.request({"op": "poll", "pid": self.pid})["returncode"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"server {self.pid}", timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Launcher:
    """The test process's side of the launcher (see the module's text)."""

    def __init__(self, log_path: Path) -> None:
        """`log_path`: the launcher's own output (what its imports say)."""
        with log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.utils.fake_process"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
                text=True,
            )
        self._lock = threading.Lock()

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        with self._lock:
            self._process.stdin.write(json.dumps(message) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fake-process launcher exited ({self._process.poll()})")
        return json.loads(line)

    def start(
        self,
        log_path: Path,
        *cli_args: str,
        tmpfs: Tmpfs | None = None,
        wait: bool = True,
        step_delay_s: float = 0.0,
    ) -> RunningServer:
        """`lingshu-server demo ARGS` on the fake engine in a new process; healthy unless
        `wait` is false. `step_delay_s`: each token takes that long (work stays in flight)."""
        return self.start_together(
            [(log_path, cli_args)], tmpfs=tmpfs, wait=wait, step_delay_s=step_delay_s
        )[0]

    def start_together(
        self,
        servers: list[tuple[Path, Sequence[str]]],
        *,
        tmpfs: Tmpfs | None = None,
        wait: bool = True,
        step_delay_s: float = 0.0,
    ) -> list[RunningServer]:
        """Servers (each its log and its `demo` arguments) whose start-ups begin at the same
        moment; healthy unless `wait` is false."""
        ports = [free_port() for _ in servers]
        space = None if tmpfs is None else [str(tmpfs.path), tmpfs.size_bytes]
        specs = [
            {
                "args": [*args, "--port", str(port)],
                "log": str(log),
                "tmpfs": space,
                "step_delay_s": step_delay_s,
            }
            for (log, args), port in zip(servers, ports, strict=True)
        ]
        pids = self.request({"op": "start", "servers": specs})["pids"]
        started = [
            RunningServer(ForkedProcess(self, pid), port, log, model="lingshu-demo")  # Popen enough
            for pid, port, (log, _) in zip(pids, ports, servers, strict=True)
        ]
        if wait:
            for server in started:
                wait_healthy(server)
        return started

    def close(self) -> None:
        """End the launcher, and with it every server it started (their parent-death
        signal)."""
        self._process.kill()
        self._process.wait()


def wait_healthy(server: RunningServer) -> None:
    def exited() -> str | None:
        if server.process.poll() is None:
            return None
        return f"server exited with {server.process.returncode}:\n{server.log_text()[-5000:]}"

    if not wait_until_healthy(
        server.base_url, server.startup_statuses, exited, STARTUP_TIMEOUT_S, 0.05
    ):
        server.process.kill()
        raise RuntimeError(f"server did not become healthy:\n{server.log_text()[-5000:]}")


# ---------- the launcher process ----------


def _libc_call(name: str, *args: Any) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{name}: {os.strerror(error)}")


def _own_tmpfs(path: Path, size_bytes: int) -> None:
    """As `unshare -rm` then `mount -t tmpfs -o size=N tmpfs PATH`: a user namespace (no root
    needed) in which this process is root, a mount namespace, and a small disk on PATH."""
    uid, gid = os.getuid(), os.getgid()
    _libc_call("unshare", CLONE_NEWUSER | CLONE_NEWNS)
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
    Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
    _libc_call("mount", b"none", b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None)
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size_bytes},mode=0700".encode()
    _libc_call("mount", b"tmpfs", str(path).encode(), b"tmpfs", ctypes.c_ulong(0), options)


def _serve(
    launcher: int,
    args: list[str],
    log_path: str,
    tmpfs: list[Any] | None,
    step_delay_s: float = 0.0,
) -> int:
    """In the forked child: the server, until it exits."""
    from lingshu_server.core.lifecycle import Stage
    from lingshu_server.core.logs import configure_logging
    from lingshu_server.serve import http_server
    from tests.utils.fake_engine import FakeEngine
    from tests.utils.in_process import demo_command_settings

    _libc_call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != launcher:  # it died before the signal was asked for
        return 1
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the process's own
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    if tmpfs is not None:
        _own_tmpfs(Path(tmpfs[0]), int(tmpfs[1]))
    settings = demo_command_settings(*args)
    configure_logging(settings.log_level, "json")
    FakeEngine.default_step_delay_s = step_delay_s  # this process's engine only
    server = http_server(settings, engine_factory=FakeEngine)
    server.run()
    if server.lifecycle.stage in (Stage.ENGINE_DEAD, Stage.FAILED):
        return 1
    return server.exit_code


def _fork_together(servers: list[dict[str, Any]]) -> list[int]:
    """Fork one child per server; each waits until all are forked, then serves."""
    sys.stderr.flush()  # nothing of the launcher's own output in the servers' logs
    launcher = os.getpid()
    go, let_go = os.pipe()
    pids = []
    for server in servers:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(let_go)
                os.read(go, 1)  # until the launcher closes its end: all forked
                os.close(go)
                code = _serve(
                    launcher,
                    server["args"],
                    server["log"],
                    server["tmpfs"],
                    server.get("step_delay_s", 0.0),
                )
            except BaseException as exc:  # noqa: BLE001 - the child never returns to the loop
                sys.stderr.write(f"fake server failed: {type(exc).__name__}: {exc}\n")
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)
    os.close(go)
    os.close(let_go)
    return pids


def _poll(pid: int) -> int | None:
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return -1  # reaped already
    return os.waitstatus_to_exitcode(status) if done else None


def _warm_up() -> None:
    """Import what every server imports, and what its start-up loads lazily (vLLM's
    configuration, the image processor, the tokenizer, Alembic, the database drivers), so that
    each fork starts warm."""
    import sqlalchemy.dialects.postgresql.asyncpg  # noqa: F401 - the databases' drivers
    import sqlalchemy.dialects.sqlite.aiosqlite  # noqa: F401
    from transformers import AutoTokenizer

    import lingshu_server.serve  # noqa: F401 - the app
    import tests.utils.fake_engine  # noqa: F401
    from lingshu_server.core.image_budget import checkpoint_budget
    from lingshu_server.engine.lora import plan_adapters
    from lingshu_server.engine.model_check import check_supported_model
    from lingshu_server.storage.migrate import head_revision
    from tests.utils.in_process import demo_command_settings

    head_revision()  # Alembic and the migration scripts
    settings = demo_command_settings()
    plan_adapters(settings, check_supported_model(settings.model))
    checkpoint_budget(settings.model)
    AutoTokenizer.from_pretrained(str(settings.model))
    assert threading.active_count() == 1, "a thread before fork() would be lost in the child"


def main() -> int:
    _warm_up()
    handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "start": lambda m: {"pids": _fork_together(m["servers"])},
        "poll": lambda m: {"returncode": _poll(m["pid"])},
    }
    children: list[int] = []
    try:
        for line in sys.stdin:
            message = json.loads(line)
            reply = handlers[message["op"]](message)
            children += reply.get("pids", [])
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        for pid in children:
            if _poll(pid) is None:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
