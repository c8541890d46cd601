"""Shared fixtures: the session's servers, each in two tiers (tests/utils/tiers.py).

`server` (the demo model with the opt-in image sources enabled, pointing at a static HTTP server
and a directory this session owns) and `secured` (keys, limits, audit, CORS) are, for a test
marked `e2e`, front ends of the session's one real engine process (the demo model on vLLM's CPU
engine, float32 as the model card's reference runs in tests/parity); for any other test, the same
configuration in process on the fake engine.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.utils.server import RunningServer, SharedEngine
from tests.utils.tiers import pick

if TYPE_CHECKING:
    from tests.utils.in_process import InProcessServer

# The app, torch and transformers are imported by the fixtures that need them, not here: every
# pytest process loads this file, including pytest-xdist's controller, which runs no test.

pytest_plugins = ["tests.utils.no_skips", "tests.utils.tiers_plugin", "tests.utils.quick_clients"]

# Stored state (stored responses, conversations) of every server a test process starts lives in
# a folder of that process, never in the home directory; servers of one process share it.
os.environ["LINGSHU_STATE_DIR"] = tempfile.mkdtemp(prefix="lingshu-test-state-")
atexit.register(shutil.rmtree, os.environ["LINGSHU_STATE_DIR"], ignore_errors=True)

# The engine every e2e front end shares: float32, so greedy tokens compare with the model card's.
ENGINE_ARGS = ("--dtype", "float32")


def pytest_addoption(parser: pytest.Parser) -> None:
    # Here, not in tests/reliability/conftest.py: pytest reads options only from the conftest
    # files beside the paths it is given, and `pytest tests` is the usual one.
    parser.addoption(
        "--reliability-long",
        action="store_true",
        default=False,
        help="tests/reliability at the issue's full sizes (50 MB prompts, 180 s soak, 8 clients)",
    )


@dataclass
class ImageSources:
    http_origin: str  # http://127.0.0.1:PORT, on the server's allow-list
    web_root: Path  # served by http_origin
    local_dir: Path  # the server's --local-image-dir
    outside_dir: Path  # a sibling the server must never read


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - keep pytest output clean
        pass


@pytest.fixture(scope="session")
def image_sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageSources]:
    from tests.utils.images import encode, gradient_image

    root = tmp_path_factory.mktemp("image-sources")
    web_root, local_dir, outside = root / "web", root / "local", root / "outside"
    for folder in (web_root, local_dir, outside):
        folder.mkdir()
        (folder / "xray.png").write_bytes(encode(gradient_image(224, 224, mode="L"), "PNG"))
    handler = functools.partial(_QuietHandler, directory=str(web_root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield ImageSources(f"http://127.0.0.1:{httpd.server_port}", web_root, local_dir, outside)
    httpd.shutdown()


@pytest.fixture(scope="session")
def shared_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedEngine]:
    engine = SharedEngine(tmp_path_factory.mktemp("engine") / "server.log", *ENGINE_ARGS)
    yield engine
    engine.stop()


def _main_args(image_sources: ImageSources) -> list[str]:
    return [
        "--allowed-image-hosts",
        image_sources.http_origin.removeprefix("http://"),
        "--local-image-dir",
        str(image_sources.local_dir),
    ]


@pytest.fixture(scope="session")
def _real_server(shared_engine: SharedEngine, image_sources: ImageSources) -> RunningServer:
    return shared_engine.frontend("main", *_main_args(image_sources))


@pytest.fixture(scope="session")
def _fake_server(
    tmp_path_factory: pytest.TempPathFactory, image_sources: ImageSources
) -> Iterator[InProcessServer]:
    from tests.utils.in_process import start_fake_server

    log_path = tmp_path_factory.mktemp("fake-server") / "server.log"
    running = start_fake_server(log_path, *ENGINE_ARGS, *_main_args(image_sources))
    yield running
    running.stop()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> RunningServer | InProcessServer:
    return pick(request, "_real_server", "_fake_server")


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        yield http


# The "secured" server: configured as a hospital would run it (keys, limits, audit, CORS).
INLINE_KEY = "sk-inline-7f3a9c"
FILE_KEYS = [f"sk-file-{i:02d}-b81d" for i in range(48)]
ALLOWED_ORIGIN = "https://viewer.hospital.example"
MAX_BODY = 1_000_000


def _secured_args(root: Path) -> list[str]:
    key_file = root / "keys"
    key_file.write_text("# rotated by the platform team\n" + "\n".join(FILE_KEYS) + "\n")
    audit_path = root / "audit.jsonl"
    audit_path.unlink(missing_ok=True)
    return [
        "--api-keys",
        INLINE_KEY,
        "--api-key-file",
        str(key_file),
        "--max-request-bytes",
        str(MAX_BODY),
        "--max-concurrent-requests",
        "2",
        "--max-queued-requests",
        "2",
        "--rate-limit-per-key",
        "6",
        "--audit-log-file",
        str(audit_path),
        "--cors-origins",
        ALLOWED_ORIGIN,
        "--drain-timeout",
        "60",
    ]


def _with_files(server: RunningServer | InProcessServer, root: Path):
    server.key_file = root / "keys"
    server.audit_path = root / "audit.jsonl"
    return server


@pytest.fixture
def _real_secured(
    shared_engine: SharedEngine, tmp_path_factory: pytest.TempPathFactory
) -> RunningServer:
    """Started again only if a test ended it (the drain test does), so no test depends on
    running before or after another."""
    running = shared_engine.frontends.get("secured")
    if running is not None and running.process.poll() is None:
        root = running.key_file.parent
    else:
        root = tmp_path_factory.mktemp("secured")
    return _with_files(shared_engine.frontend("secured", *_secured_args(root)), root)


class _FakeSecured:
    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        self.tmp_path_factory = tmp_path_factory
        self.running: InProcessServer | None = None

    def get(self) -> InProcessServer:
        if self.running is None or not self.running.running():
            from tests.utils.in_process import start_fake_server

            root = self.tmp_path_factory.mktemp("secured-fake")
            running = start_fake_server(root / "server.log", *ENGINE_ARGS, *_secured_args(root))
            self.running = _with_files(running, root)
        return self.running


@pytest.fixture(scope="session")
def _fake_secured_holder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_FakeSecured]:
    holder = _FakeSecured(tmp_path_factory)
    yield holder
    if holder.running is not None:
        holder.running.stop()


@pytest.fixture
def _fake_secured(_fake_secured_holder: _FakeSecured) -> InProcessServer:
    return _fake_secured_holder.get()


@pytest.fixture
def secured(request: pytest.FixtureRequest) -> RunningServer | InProcessServer:
    """One secured server for the session in each tier, started again only if a test ended
    it (the drain test does)."""
    return pick(request, "_real_secured", "_fake_secured")
