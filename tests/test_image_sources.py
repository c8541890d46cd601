"""http(s) and file:// image sources against a real loopback HTTP server and a temp directory."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from lingshu_server.core.errors import InvalidRequestError
from lingshu_server.inputs.image_sources import ImageFetcher, ImageSourcePolicy

IMAGE = bytes(range(256)) * 4  # 1 KiB standing in for an encoded image
MAX_BYTES = 4096
TIMEOUT = 0.5
PARAM = "messages[0].content[1].image_url"


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # The fetcher hangs up early on purpose (oversize bodies): not an error here.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output quiet
        pass

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunked(self, total: int) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"x" * 1024
        try:
            for _ in range(total // len(chunk)):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client stopped reading, as it should
            self.close_connection = True

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        path = self.path.split("?", 1)[0]
        if path == "/image.png":
            self._send(200, IMAGE, Content_Type="image/png", Set_Cookie="session=abc")
        elif path == "/echo-cookie":
            self._send(200, (self.headers.get("Cookie") or "none").encode())
        elif path == "/redirect":
            self._send(302, Location="/image.png")
        elif path == "/redirect-absolute":
            self._send(301, Location=f"http://127.0.0.1:{port}/image.png")
        elif path == "/redirect-off-list":
            self._send(302, Location=f"http://localhost:{port}/image.png?token=SECRET")
        elif path == "/redirect-ftp":
            self._send(302, Location="ftp://127.0.0.1/image.png")
        elif path.startswith("/hops/"):  # /hops/N redirects N times, then serves the image
            hops = int(path.rsplit("/", 1)[1])
            if hops:
                self._send(308, Location=f"/hops/{hops - 1}")
            else:
                self._send(200, IMAGE)
        elif path == "/loop":
            self._send(307, Location="/loop")
        elif path == "/slow":
            time.sleep(3 * TIMEOUT)
            self._send(200, IMAGE)
        elif path == "/drip":  # each byte arrives within httpx's read timeout; the whole does not
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(TIMEOUT / 10)
            except OSError:
                self.close_connection = True
        elif path == "/big":
            self._send(200, b"x" * (MAX_BYTES + 1))
        elif path == "/big-declared":  # refused from the header, before the body arrives
            self.send_response(200)
            self.send_header("Content-Length", str(64 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(b"x" * (MAX_BYTES // 2))
            self.wfile.flush()
            time.sleep(3 * TIMEOUT)
            self.close_connection = True
        elif path == "/big-chunked":
            self._chunked(64 * 1024 * 1024)  # far more than is ever read
        elif path == "/exact-chunked":
            self._chunked(MAX_BYTES)
        else:
            self._send(404, b"not here")


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    server = _QuietServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _policy(**overrides: Any) -> ImageSourcePolicy:
    fields: dict[str, Any] = {
        "allowed_hosts": frozenset(),
        "fetch_timeout": TIMEOUT,
        "max_bytes": MAX_BYTES,
        "local_dir": None,
    }
    fields |= overrides
    fields["allowed_hosts"] = frozenset(fields["allowed_hosts"])
    return ImageSourcePolicy(**fields)


def _fetch(url: str, policy: ImageSourcePolicy) -> bytes:
    async def run() -> bytes:
        fetcher = ImageFetcher(policy)
        try:
            return await fetcher.fetch(url, PARAM)
        finally:
            await fetcher.aclose()

    return asyncio.run(run())


def _refused(url: str, policy: ImageSourcePolicy, code: str) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        _fetch(url, policy)
    assert info.value.code == code, info.value.message
    assert info.value.param == PARAM
    assert "SECRET" not in info.value.message
    return info.value


# http(s)


def test_http_is_off_by_default(origin):
    error = _refused(f"http://{origin}/image.png", _policy(), "image_url_not_allowed")
    assert "not enabled" in error.message


def test_allowed_host_returns_the_exact_bytes(origin):
    assert _fetch(f"http://{origin}/image.png?token=x", _policy(allowed_hosts={origin})) == IMAGE


def test_cookies_are_neither_kept_nor_sent(origin):
    async def run() -> list[bytes]:
        fetcher = ImageFetcher(_policy(allowed_hosts={origin}))
        try:
            await fetcher.fetch(f"http://{origin}/image.png", PARAM)  # sets a cookie
            return [await fetcher.fetch(f"http://{origin}/echo-cookie", PARAM)]
        finally:
            await fetcher.aclose()

    assert asyncio.run(run()) == [b"none"]


def test_a_caller_client_sends_no_cookies_and_stays_open(origin):
    async def run() -> tuple[bytes, bool]:
        async with httpx.AsyncClient(cookies={"session": "abc"}, trust_env=False) as client:
            fetcher = ImageFetcher(_policy(allowed_hosts={origin}), client)
            data = await fetcher.fetch(f"http://{origin}/echo-cookie", PARAM)
            await fetcher.aclose()
            return data, client.is_closed

    assert asyncio.run(run()) == (b"none", False)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://localhost:{port}/image.png", "127.0.0.1:{port}"),  # host not on the list
        ("http://127.0.0.1:{port}/image.png", "localhost:{port}"),
        ("http://127.0.0.1:{port}/image.png", "127.0.0.1"),  # bare host: default port only
        ("http://127.0.0.1:{port}/image.png", "127.0.0.1:1"),  # another port
        ("http://user:pw@127.0.0.1:{port}/image.png", "127.0.0.1:{port}"),
        ("http://127.0.0.1:{port}@localhost:{port}/image.png", "127.0.0.1:{port}"),
    ],
)
def test_urls_off_the_allow_list_are_refused(origin, url, allowed):
    port = origin.split(":")[1]
    policy = _policy(allowed_hosts={allowed.format(port=port)})
    _refused(url.format(port=port) + "?token=SECRET", policy, "image_url_not_allowed")


def test_host_matching_ignores_case(origin):
    port = origin.split(":")[1]
    url = f"http://LocalHost:{port}/image.png"
    assert _fetch(url, _policy(allowed_hosts={f"localhost:{port}"})) == IMAGE


@pytest.mark.parametrize("path", ["/redirect", "/redirect-absolute"])
def test_redirects_within_the_list_are_followed(origin, path):
    assert _fetch(f"http://{origin}{path}", _policy(allowed_hosts={origin})) == IMAGE


@pytest.mark.parametrize("path", ["/redirect-off-list", "/redirect-ftp"])
def test_redirects_off_the_list_are_refused(origin, path):
    error = _refused(
        f"http://{origin}{path}", _policy(allowed_hosts={origin}), "image_url_not_allowed"
    )
    assert "redirected" in error.message


def test_three_redirects_are_followed_and_a_fourth_is_not(origin):
    policy = _policy(allowed_hosts={origin})
    assert _fetch(f"http://{origin}/hops/3", policy) == IMAGE
    _refused(f"http://{origin}/hops/4", policy, "image_fetch_failed")


def test_too_many_redirects(origin):
    error = _refused(
        f"http://{origin}/loop?token=SECRET", _policy(allowed_hosts={origin}), "image_fetch_failed"
    )
    assert "redirected more than 3 times" in error.message


def test_error_status_is_reported(origin):
    error = _refused(
        f"http://{origin}/missing?token=SECRET",
        _policy(allowed_hosts={origin}),
        "image_fetch_failed",
    )
    assert error.message == "the image host answered 404"


def test_connection_refused_names_the_host_only():
    error = _refused(
        "http://127.0.0.1:1/image.png?token=SECRET",
        _policy(allowed_hosts={"127.0.0.1:1"}),
        "image_fetch_failed",
    )
    assert "127.0.0.1:1" in error.message


@pytest.mark.parametrize("path", ["/slow", "/drip"])
def test_timeout_bounds_the_whole_fetch(origin, path):
    start = time.monotonic()
    error = _refused(
        f"http://{origin}{path}?token=SECRET", _policy(allowed_hosts={origin}), "image_fetch_failed"
    )
    assert time.monotonic() - start < 1.5 * TIMEOUT
    assert error.message == "fetching the image timed out after 0.5 s"


@pytest.mark.parametrize("path", ["/big", "/big-declared", "/big-chunked"])
def test_oversize_bodies_are_refused(origin, path):
    start = time.monotonic()
    _refused(f"http://{origin}{path}", _policy(allowed_hosts={origin}), "image_too_large")
    assert time.monotonic() - start < TIMEOUT  # stopped reading, did not time out


def test_a_body_of_exactly_max_bytes_is_accepted(origin):
    data = _fetch(f"http://{origin}/exact-chunked", _policy(allowed_hosts={origin}))
    assert len(data) == MAX_BYTES


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://127.0.0.1/image.png?token=SECRET", "invalid_image_url"),
        ("127.0.0.1/image.png?token=SECRET", "invalid_image_url"),
        ("http://[::1/image.png?token=SECRET", "invalid_image_url"),
        ("http:///image.png?token=SECRET", "invalid_image_url"),
    ],
)
def test_malformed_and_unsupported_urls(url, code):
    _refused(url, _policy(allowed_hosts={"127.0.0.1"}), code)


# file://


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (root / "scan.png").write_bytes(IMAGE)
    (root / "huge.png").write_bytes(b"x" * (MAX_BYTES + 1))
    (tmp_path / "secret.png").write_bytes(IMAGE)
    (root / "escape.png").symlink_to(tmp_path / "secret.png")
    (root / "alias.png").symlink_to(root / "scan.png")
    return root


def test_file_urls_are_off_by_default(image_dir):
    error = _refused(f"file://{image_dir}/scan.png", _policy(), "image_url_not_allowed")
    assert "not enabled" in error.message


@pytest.mark.parametrize(
    "name", ["scan.png", "alias.png", "sub/../scan.png", "sc%61n.png", "%73ub/%2e%2e/scan.png"]
)
def test_files_inside_the_directory_are_read(image_dir, name):
    policy = _policy(local_dir=image_dir)
    assert _fetch(f"file://{image_dir}/{name}", policy) == IMAGE
    assert _fetch(f"file://localhost{image_dir}/{name}", policy) == IMAGE


@pytest.mark.parametrize(
    "name", ["../secret.png", "%2e%2e/secret.png", "%2E%2E%2Fsecret.png", "escape.png", "nope.png"]
)
def test_paths_outside_or_missing_get_one_message(image_dir, name):
    policy = _policy(local_dir=image_dir)
    error = _refused(f"file://{image_dir}/{name}?token=SECRET", policy, "image_url_not_allowed")
    outside = _refused(f"file://{image_dir.parent}/secret.png", policy, "image_url_not_allowed")
    missing = _refused(f"file://{image_dir.parent}/nope.png", policy, "image_url_not_allowed")
    assert error.message == outside.message == missing.message


def test_directories_are_refused(image_dir):
    policy = _policy(local_dir=image_dir)
    _refused(f"file://{image_dir}/sub", policy, "invalid_image_url")
    _refused(f"file://{image_dir}", policy, "invalid_image_url")


def test_files_over_max_bytes_are_refused(image_dir):
    _refused(f"file://{image_dir}/huge.png", _policy(local_dir=image_dir), "image_too_large")


@pytest.mark.parametrize(
    "url", ["file://fileserver/images/scan.png?token=SECRET", "file:relative/scan.png"]
)
def test_file_urls_with_a_host_or_relative_path_are_invalid(image_dir, url):
    _refused(url, _policy(local_dir=image_dir), "invalid_image_url")
