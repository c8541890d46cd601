"""Shared fixtures: one real server process (demo model, vLLM CPU engine) per test session.

The server is started with the opt-in image sources enabled, pointing at a static HTTP server
and a directory that this test session owns, so both the allowed and the refused cases of
http(s):// and file:// image URLs can be exercised end to end.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.utils.images import encode, gradient_image
from tests.utils.server import Restartable, RunningServer, start_demo_server

pytest_plugins = ["tests.utils.no_skips"]


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
def server(
    tmp_path_factory: pytest.TempPathFactory, image_sources: ImageSources
) -> Iterator[RunningServer]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    running = start_demo_server(
        log_path,
        "--allowed-image-hosts",
        image_sources.http_origin.removeprefix("http://"),
        "--local-image-dir",
        str(image_sources.local_dir),
        # float32, as the model card's reference runs in tests/parity: greedy tokens comparable
        "--dtype",
        "float32",
    )
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        yield http


# The "secured" server: configured as a hospital would run it (keys, limits, audit, CORS).
INLINE_KEY = "sk-inline-7f3a9c"
FILE_KEYS = [f"sk-file-{i:02d}-b81d" for i in range(40)]
ALLOWED_ORIGIN = "https://viewer.hospital.example"
MAX_BODY = 1_000_000


def _start_secured(root: Path) -> RunningServer:
    key_file = root / "keys"
    key_file.write_text("# rotated by the platform team\n" + "\n".join(FILE_KEYS) + "\n")
    audit_path = root / "audit.jsonl"
    audit_path.unlink(missing_ok=True)
    server = start_demo_server(
        root / "server.log",
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
    )
    server.key_file = key_file
    server.audit_path = audit_path
    return server


@pytest.fixture(scope="session")
def _secured_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restartable]:
    server = Restartable(lambda: _start_secured(tmp_path_factory.mktemp("secured")))
    yield server
    server.stop()


@pytest.fixture
def secured(_secured_server: Restartable) -> RunningServer:
    """One secured server for the session, started again only if a test ended it (the SIGTERM
    drain test does), so no test depends on running before or after another."""
    return _secured_server.get()
