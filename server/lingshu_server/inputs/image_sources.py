"""Opt-in image sources besides data: URLs: allow-listed http(s) hosts and one local directory.

Both are off unless the deployment names hosts or a directory. Error messages name the host
at most, never the whole URL: query strings may carry access tokens.
"""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from lingshu_server.core.errors import InvalidRequestError
from lingshu_server.core.settings import Settings

MAX_REDIRECTS = 3
_INVALID = "invalid_image_url"
_NOT_ALLOWED = "image_url_not_allowed"
_FAILED = "image_fetch_failed"
_TOO_LARGE = "image_too_large"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Opened without following a final symlink and without blocking on FIFOs.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


@dataclass(frozen=True)
class ImageSourcePolicy:
    allowed_hosts: frozenset[str]  # "host" (default port only) or "host:port", lowercase
    fetch_timeout: float  # seconds for one whole fetch, redirects included
    max_bytes: int  # most bytes read from one URL or file
    local_dir: Path | None  # root for file:// URLs; None refuses them

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageSourcePolicy:
        hosts = (host.strip().lower() for host in settings.allowed_image_hosts)
        return cls(
            allowed_hosts=frozenset(host for host in hosts if host),
            fetch_timeout=settings.image_fetch_timeout,
            max_bytes=settings.max_image_bytes,
            local_dir=settings.local_image_dir,
        )


def _error(code: str, message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def _host_allowed(url: httpx.URL, allowed: frozenset[str]) -> bool:
    host = f"[{url.host}]" if ":" in url.host else url.host
    default_port = _DEFAULT_PORTS[url.scheme]
    port = url.port or default_port
    return f"{host}:{port}" in allowed or (port == default_port and host in allowed)


class ImageFetcher:
    """Bytes of http(s):// and file:// image URLs, within an `ImageSourcePolicy`."""

    def __init__(self, policy: ImageSourcePolicy, client: httpx.AsyncClient | None = None):
        self.policy = policy
        self._client = client
        self._owns_client = client is None  # a caller's client is the caller's to close

    async def fetch(self, url: str, param: str, max_bytes: int | None = None) -> bytes:
        """The bytes behind `url`, at most `max_bytes` (default: the policy's, for images)."""
        limit = self.policy.max_bytes if max_bytes is None else max_bytes
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError:
            raise _error(_INVALID, "the image URL is malformed", param) from None
        if scheme in _DEFAULT_PORTS:
            return await self._fetch_http(url, param, limit)
        if scheme == "file":
            return await self._read_file(url, param, limit)
        got = repr(scheme[:16]) if scheme else "a URL without a scheme"
        message = f"image URLs must be data:, http(s):// or file:// URLs; got {got}"
        raise _error(_INVALID, message, param)

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http_client(self) -> httpx.AsyncClient:
        if self._client is None:
            # Direct connections only (no proxy or netrc from the environment), and a cookie
            # jar that keeps nothing: one image host must not plant state for the next fetch.
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                timeout=self.policy.fetch_timeout,
                trust_env=False,
                cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
            )
        return self._client

    def _check_target(self, url: httpx.URL, param: str, *, redirect: bool) -> None:
        via = "the image host redirected to " if redirect else "image "
        if url.scheme not in _DEFAULT_PORTS:
            raise _error(_NOT_ALLOWED, f"{via}a non-http(s) URL", param)
        if not url.host:
            raise _error(_INVALID, f"{via}URL has no host", param)
        if url.userinfo:
            raise _error(_NOT_ALLOWED, f"{via}URL must not carry a user name or password", param)
        if not _host_allowed(url, self.policy.allowed_hosts):
            label = url.netloc.decode("ascii", "replace")
            message = f"{via}host {label} is not on this server's list of allowed image hosts"
            raise _error(_NOT_ALLOWED, message, param)

    async def _fetch_http(self, raw_url: str, param: str, limit: int) -> bytes:
        if not self.policy.allowed_hosts:
            raise _error(_NOT_ALLOWED, "http(s) image URLs are not enabled on this server", param)
        try:
            url = httpx.URL(raw_url)
        except httpx.InvalidURL:
            raise _error(_INVALID, "the image URL is malformed", param) from None
        self._check_target(url, param, redirect=False)
        client = self._http_client()
        try:
            async with asyncio.timeout(self.policy.fetch_timeout):  # all hops together
                for _ in range(MAX_REDIRECTS + 1):
                    result = await self._get(client, url, param, limit)
                    if isinstance(result, bytes):
                        return result
                    url = result
        except (TimeoutError, httpx.TimeoutException):
            message = f"fetching the image timed out after {self.policy.fetch_timeout:g} s"
            raise _error(_FAILED, message, param) from None
        raise _error(_FAILED, f"the image host redirected more than {MAX_REDIRECTS} times", param)

    async def _get(
        self, client: httpx.AsyncClient, url: httpx.URL, param: str, limit: int
    ) -> bytes | httpx.URL:
        """The body of `url`, or the allowed URL it redirects to."""
        request = client.build_request(
            "GET", url, headers={"Accept": "image/*, video/*", "Accept-Encoding": "identity"}
        )
        for header in ("cookie", "authorization", "proxy-authorization"):
            request.headers.pop(header, None)  # a caller's client may carry them
        try:
            response = await client.send(request, stream=True, auth=None)
            try:
                if response.is_redirect:
                    target = url.join(response.headers["location"])
                    self._check_target(target, param, redirect=True)
                    return target
                if not response.is_success:
                    message = f"the image host answered {response.status_code}"
                    raise _error(_FAILED, message, param)
                return await self._read_body(response, param, limit)
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            raise
        except (httpx.HTTPError, httpx.InvalidURL):
            label = url.netloc.decode("ascii", "replace")
            message = f"could not fetch the image from {label}: connection or protocol error"
            raise _error(_FAILED, message, param) from None

    async def _read_body(self, response: httpx.Response, param: str, limit: int) -> bytes:
        too_large = _error(_TOO_LARGE, f"the image is larger than the {limit} bytes allowed", param)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise too_large
        return bytes(body)

    async def _read_file(self, raw_url: str, param: str, limit: int) -> bytes:
        if self.policy.local_dir is None:
            raise _error(_NOT_ALLOWED, "file:// image URLs are not enabled on this server", param)
        parts = urlsplit(raw_url)
        if parts.netloc.lower() not in ("", "localhost") or not parts.path.startswith("/"):
            message = "file:// image URLs must name an absolute local path (file:///path/to/image)"
            raise _error(_INVALID, message, param)
        path = unquote(parts.path)
        return await asyncio.to_thread(self._read_local, path, self.policy.local_dir, param, limit)

    def _read_local(self, path_text: str, root: Path, param: str, limit: int) -> bytes:
        # One message for missing and outside paths, so callers cannot probe the filesystem.
        unavailable = _error(
            _NOT_ALLOWED,
            "the file:// image URL names no file inside the local image directory",
            param,
        )
        try:
            path = Path(path_text).resolve(strict=True)
            if not path.is_relative_to(root.resolve()):
                raise unavailable
            fd = os.open(path, _OPEN_FLAGS)
        except (OSError, RuntimeError, ValueError):  # missing, unreadable, symlink loop, NUL
            raise unavailable from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                message = "the file:// image URL names a directory or special file, not a file"
                raise _error(_INVALID, message, param)
            data = b""
            if info.st_size <= limit:
                with os.fdopen(fd, "rb", closefd=False) as file:
                    data = file.read(limit + 1)  # +1: the file may have grown since fstat
            if info.st_size > limit or len(data) > limit:
                message = f"the image file is larger than the {limit} bytes allowed"
                raise _error(_TOO_LARGE, message, param)
            return data
        finally:
            os.close(fd)
