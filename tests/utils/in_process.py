"""The real app under uvicorn, in the test process, on the fake engine (tests/utils/fake_engine).

Everything but the engine is the server's own: the settings parsed from the same command line a
user types, the middleware stack, the guarded HTTP protocol, the drain on SIGTERM. It starts in
about a second, so tests of the HTTP edge (auth, limits, validation, error shapes, OpenAPI) need
no vLLM engine process.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from lingshu_server.cli import command_settings
from lingshu_server.core.logs import JsonFormatter, RequestIdFilter
from lingshu_server.core.settings import Settings
from lingshu_server.serve import DrainingServer, http_server
from tests.utils.fake_engine import FakeEngine
from tests.utils.server import checkpoint_command, free_port, wait_until_healthy


def demo_command_settings(*cli_args: str) -> Settings:
    """Settings as `lingshu-server demo ARGS` makes them."""
    return command_settings(["demo", *cli_args])


@dataclass
class InProcessServer:
    """Quacks like tests/utils/server.RunningServer where tests of the HTTP edge need it."""

    server: DrainingServer
    thread: threading.Thread
    port: int
    log_path: Path
    log_handler: logging.Handler
    model: str = "lingshu-demo"
    startup_statuses: list[dict] = field(default_factory=list)
    scheme: str = "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def settings(self) -> Settings:
        return self.server.config.app.state.settings

    @property
    def engine(self) -> FakeEngine:
        return self.server.config.app.state.engine

    def log_text(self) -> str:
        self.log_handler.flush()
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.thread.is_alive()

    def drain(self) -> None:
        """What SIGTERM does to the real process."""
        self.server.handle_exit(signal.SIGTERM, None)

    def stop(self, timeout: float = 60) -> int:
        # the tests are done with it: close idle keep-alive connections at once instead of
        # waiting for them (the app's own shutdown still runs)
        self.server.config.timeout_graceful_shutdown = 0
        self.server.should_exit = True
        self.thread.join(timeout)
        logging.getLogger().removeHandler(self.log_handler)
        self.log_handler.close()
        return self.server.exit_code


def checkpoint_command_settings(model_dir: Path, *cli_args: str) -> Settings:
    """Settings as tests/utils/server.start_checkpoint_server's `lingshu-server serve` makes
    them: another checkpoint, with the CPU settings `demo` uses."""
    return command_settings([*checkpoint_command(model_dir), *cli_args])


def start_fake_server(
    log_path: Path, *cli_args: str, get: Callable[[str], httpx.Response] | None = None
) -> InProcessServer:
    """`lingshu-server demo ARGS` with the fake engine, in this process (over HTTPS when ARGS
    say --tls-cert-file; `get` then fetches /health as the server's TLS settings require)."""
    port = free_port()
    return _start(log_path, port, demo_command_settings(*cli_args, "--port", str(port)), get)


def start_fake_checkpoint_server(
    log_path: Path, model_dir: Path, *cli_args: str
) -> InProcessServer:
    """start_checkpoint_server's `lingshu-server serve` with the fake engine, in this process."""
    port = free_port()
    settings = checkpoint_command_settings(model_dir, *cli_args, "--port", str(port))
    return _start(log_path, port, settings)


def _start(
    log_path: Path,
    port: int,
    settings: Settings,
    get: Callable[[str], httpx.Response] | None = None,
) -> InProcessServer:
    handler = logging.FileHandler(log_path)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    # As the server process's configure_logging: httpx's INFO lines carry whole URLs (DICOM
    # UIDs, tokens), and our access log replaces uvicorn's.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True
    server = http_server(settings, engine_factory=FakeEngine)
    thread = threading.Thread(target=server.run, name=f"fake-server-{port}", daemon=True)
    thread.start()
    running = InProcessServer(server, thread, port, log_path, handler)
    running.scheme = "https" if settings.tls_cert_file else "http"

    def stopped() -> str | None:
        if thread.is_alive():
            return None
        return f"in-process server stopped:\n{running.log_text()[-5000:]}"

    if wait_until_healthy(running.base_url, running.startup_statuses, stopped, 60, 0.05, get):
        return running
    running.stop()
    raise RuntimeError(f"in-process server did not become healthy:\n{running.log_text()[-5000:]}")
