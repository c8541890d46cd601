"""HTTP to a PACS over DICOMweb: WADO-RS instances and series metadata, and what a caller is
told when the PACS cannot give them (404 -> which UID is unknown, 401/403 -> refused access,
no answer -> 502/504 with Retry-After).

Instances are asked for in their stored transfer syntax (`transfer-syntax=*`), as
multipart/related `application/dicom`: the PACS neither renders nor transcodes them.
Messages name the PACS by host:port and the unknown part by name, never by UID.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from http import HTTPStatus
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from python_multipart.multipart import MultipartParser, parse_options_header

from lingshu_server.core.errors import (
    APIError,
    InvalidRequestError,
    PacsTimeoutError,
    PacsUnavailableError,
)
from lingshu_server.inputs.pacs_auth import PacsAuth

INSTANCE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
METADATA_ACCEPT = "application/dicom+json"
ERROR_REASONS = (
    "not_found",
    "unauthorized",
    "unavailable",
    "timeout",
    "bad_response",
    "too_large",
    "no_image",
    "store_refused",
)
FETCH_KINDS = ("instance", "metadata", "query", "store")
_FETCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ERROR_PAGE_BYTES = 64 * 1024
_MAX_RETRY_AFTER_S = 300
_UID_NAMES = {
    "study": "StudyInstanceUID",
    "series": "SeriesInstanceUID",
    "instance": "SOPInstanceUID",
    "study, series or instance": "UIDs",
}


def host_label(url: httpx.URL) -> str:
    """host:port of a remote system, for messages and the audit log (never the path or a
    credential)."""
    default = 443 if url.scheme == "https" else 80
    return f"{url.host}:{url.port or default}"


def private_http_client(timeout_s: float, connect_timeout_s: float) -> httpx.AsyncClient:
    """An HTTP client for a hospital system: no proxy or netrc from the environment, no
    redirects, and a cookie jar that keeps nothing (a session cookie must not ride along with
    the next caller)."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
        cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
    )


@dataclass(frozen=True)
class Pacs:
    """One configured DICOMweb base URL and how to sign in to it."""

    base: httpx.URL
    auth: PacsAuth

    @property
    def prefix(self) -> str:
        """The base path without its trailing slash ('' for a PACS at the root)."""
        return self.base.path.rstrip("/")

    @property
    def label(self) -> str:
        """host:port, for messages and the audit log (never the path or a credential)."""
        return host_label(self.base)

    def contains(self, url: httpx.URL) -> bool:
        return (
            url.scheme == self.base.scheme
            and url.host == self.base.host
            and url.port == self.base.port
            and url.path.startswith(self.prefix + "/")
        )


@dataclass(frozen=True, kw_only=True)
class DicomWebRef:
    """A series (instance None) or one instance in a PACS."""

    pacs: Pacs
    study: str
    series: str
    instance: str | None = None

    @property
    def url(self) -> str:
        path = f"{self.pacs.prefix}/studies/{self.study}/series/{self.series}"
        if self.instance is not None:
            path += f"/instances/{self.instance}"
        return str(self.pacs.base.copy_with(path=path))

    def audit(self) -> dict[str, str]:
        record = {
            "pacs": self.pacs.label,
            "study_instance_uid": self.study,
            "series_instance_uid": self.series,
        }
        if self.instance is not None:
            record["sop_instance_uid"] = self.instance
        return record


class DicomWebMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.fetches = Counter(
            "lingshu_dicomweb_fetches",
            "Requests sent to a PACS, by kind (instance, metadata, query).",
            ["kind"],
            registry=registry,
        )
        self.fetched_bytes = Counter(
            "lingshu_dicomweb_fetched_bytes",
            "Bytes received from a PACS, by kind.",
            ["kind"],
            registry=registry,
        )
        self.fetch_seconds = Histogram(
            "lingshu_dicomweb_fetch_seconds",
            "Time of one PACS request, by kind.",
            ["kind"],
            buckets=_FETCH_BUCKETS,
            registry=registry,
        )
        self.cache_hits = Counter(
            "lingshu_dicomweb_cache_hits",
            "Instances and series metadata served from the cache, by kind.",
            ["kind"],
            registry=registry,
        )
        self.errors = Counter(
            "lingshu_dicomweb_errors",
            "DICOMweb image URLs that failed, by reason.",
            ["reason"],
            registry=registry,
        )
        self.cache_bytes = Gauge(
            "lingshu_dicomweb_cache_bytes", "Bytes held by the DICOMweb cache.", registry=registry
        )
        self.cache_entries = Gauge(
            "lingshu_dicomweb_cache_entries",
            "Entries held by the DICOMweb cache.",
            registry=registry,
        )
        for kind in FETCH_KINDS:
            self.fetches.labels(kind)
            self.cache_hits.labels(kind)
        for reason in ERROR_REASONS:
            self.errors.labels(reason)


def dicom_from_response(body: bytes, content_type: str) -> bytes:
    """The DICOM file in a WADO-RS answer: the first part of a multipart/related body, or the
    whole body when the PACS sent application/dicom directly. ValueError if neither."""
    media, params = parse_options_header(content_type)
    if media == b"application/dicom":
        return body
    boundary = params.get(b"boundary")
    if media != b"multipart/related" or not boundary:
        raise ValueError(f"expected multipart/related, got {media.decode('latin-1')[:64]!r}")
    # RFC 2046 allows a preamble before the first delimiter; the parser does not.
    start = body.find(b"--" + boundary)
    if start < 0:
        raise ValueError("no multipart boundary in the body")
    parts: list[bytearray] = []
    ended: list[bool] = []
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": lambda: parts.append(bytearray()),
            "on_part_data": lambda data, begin, end: parts[-1].extend(data[begin:end]),
            "on_end": lambda: ended.append(True),
        },
    )
    parser.write(body[start:])
    parser.finalize()
    if not parts or not ended:
        raise ValueError("the multipart body is empty or truncated")
    return bytes(parts[0])


@dataclass(kw_only=True)
class PacsAnswer:
    status: int
    body: bytes
    content_type: str
    retry_after: str | None


class PacsClient:
    """GETs from PACS over one connection pool; every failure becomes an API error."""

    def __init__(
        self,
        *,
        pool: Executor,
        metrics: DicomWebMetrics,
        max_bytes: int,
        timeout_s: float,
        connect_timeout_s: float,
    ):
        self._pool = pool
        self.metrics = metrics
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._client: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def instance(self, ref: DicomWebRef, param: str) -> bytes:
        """The DICOM file of one instance."""
        answer = await self._get(ref.pacs, ref.url, "instance", INSTANCE_ACCEPT, param)
        await self._check(answer, ref, param)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._pool, dicom_from_response, answer.body, answer.content_type
            )
        except ValueError:
            raise self._bad_response(ref.pacs, "something other than a DICOM instance") from None

    async def series_metadata(self, ref: DicomWebRef, param: str) -> bytes:
        """The DICOM JSON metadata of every instance in a series."""
        answer = await self._get(ref.pacs, ref.url + "/metadata", "metadata", METADATA_ACCEPT)
        await self._check(answer, ref, param)
        return answer.body

    def bad_response(self, ref: DicomWebRef, what: str) -> APIError:
        return self._bad_response(ref.pacs, what)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = private_http_client(self._timeout_s, self._connect_timeout_s)
        return self._client

    async def _get(
        self, pacs: Pacs, url: str, kind: str, accept: str, param: str | None = None
    ) -> PacsAnswer:
        return await self.send(pacs, "GET", url, kind, {"Accept": accept}, param=param)

    async def send(
        self,
        pacs: Pacs,
        method: str,
        url: str,
        kind: str,
        headers: dict[str, str],
        *,
        content: bytes | None = None,
        param: str | None = None,
    ) -> PacsAnswer:
        """One request to a PACS, signed in as configured; no answer is an API error."""
        headers = dict(headers)
        credential = pacs.auth.header()
        if credential is not None:
            headers["Authorization"] = credential
        self.metrics.fetches.labels(kind).inc()
        started = time.perf_counter()
        try:
            async with (
                asyncio.timeout(self._timeout_s),
                self._http().stream(method, url, headers=headers, content=content) as response,
            ):
                answer = PacsAnswer(
                    status=response.status_code,
                    body=await self._read(response, kind, param),
                    content_type=response.headers.get("content-type", ""),
                    retry_after=response.headers.get("retry-after"),
                )
        except (TimeoutError, httpx.TimeoutException):
            self.metrics.errors.labels("timeout").inc()
            raise PacsTimeoutError(
                f"the PACS at {pacs.label} did not answer within {self._timeout_s:g} s",
                param=param,
                retry_after_s=5,
            ) from None
        except httpx.HTTPError:
            self.metrics.errors.labels("unavailable").inc()
            raise PacsUnavailableError(
                f"could not reach the PACS at {pacs.label} (connection refused, reset or "
                "not resolvable)",
                param=param,
            ) from None
        finally:
            self.metrics.fetch_seconds.labels(kind).observe(time.perf_counter() - started)
        self.metrics.fetched_bytes.labels(kind).inc(len(answer.body))
        return answer

    async def _read(self, response: httpx.Response, kind: str, param: str | None) -> bytes:
        limit = self._max_bytes if response.is_success else _ERROR_PAGE_BYTES
        declared = response.headers.get("content-length", "")
        too_large = declared.isdigit() and int(declared) > limit
        body = bytearray()
        if not too_large:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    too_large = True
                    break
        if too_large and response.is_success:
            self.metrics.errors.labels("too_large").inc()
            what = "DICOM instance" if kind == "instance" else "series metadata"
            raise InvalidRequestError(
                f"the {what} is larger than the {limit} bytes allowed per image",
                param=param,
                code="image_too_large",
            )
        return bytes(body[:limit])  # an error page is only read so far

    async def _check(self, answer: PacsAnswer, ref: DicomWebRef, param: str) -> None:
        """Turn a PACS answer other than 200 into the error a caller can act on."""
        status = answer.status
        if status == HTTPStatus.OK:
            return
        pacs = ref.pacs
        if status == HTTPStatus.NOT_FOUND:
            part = await self._missing_part(ref)
            self.metrics.errors.labels("not_found").inc()
            raise InvalidRequestError(
                f"the PACS at {pacs.label} has no such {part}: check the {_UID_NAMES[part]} "
                "in the image URL",
                param=param,
                code="dicomweb_not_found",
            )
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            self.metrics.errors.labels("unauthorized").inc()
            whose = pacs.auth.credentials_used("PACS")
            raise InvalidRequestError(
                f"the PACS at {pacs.label} refused access (HTTP {status}) with {whose}",
                param=param,
                code="dicomweb_unauthorized",
            )
        if status == HTTPStatus.TOO_MANY_REQUESTS or status >= 500:
            self.metrics.errors.labels("unavailable").inc()
            raise PacsUnavailableError(
                f"the PACS at {pacs.label} answered HTTP {status}",
                param=param,
                retry_after_s=retry_after_seconds(answer.retry_after),
            )
        raise self._bad_response(pacs, f"HTTP {status}", param)

    def _bad_response(self, pacs: Pacs, what: str, param: str | None = None) -> APIError:
        self.metrics.errors.labels("bad_response").inc()
        return PacsUnavailableError(
            f"the PACS at {pacs.label} answered with {what}",
            param=param,
            code="dicomweb_bad_response",
        )

    async def _missing_part(self, ref: DicomWebRef) -> str:
        """Which of study, series and instance the PACS does not have (QIDO-RS searches)."""
        base = str(ref.pacs.base.copy_with(path=ref.pacs.prefix or "/")).rstrip("/")
        searches = (
            ("study", f"{base}/studies?StudyInstanceUID={ref.study}"),
            ("series", f"{base}/studies/{ref.study}/series?SeriesInstanceUID={ref.series}"),
        )
        try:
            for part, url in searches:
                if not await self._found(ref.pacs, url):
                    return part
        except APIError:
            return "study, series or instance"
        return "instance" if ref.instance is not None else "series"

    async def _found(self, pacs: Pacs, url: str) -> bool:
        answer = await self._get(pacs, url, "query", METADATA_ACCEPT)
        if answer.status == HTTPStatus.NO_CONTENT:
            return False
        if answer.status != HTTPStatus.OK:
            raise self._bad_response(pacs, f"HTTP {answer.status} to a search")
        try:
            return bool(json.loads(answer.body))
        except ValueError:
            raise self._bad_response(pacs, "a search result that is not JSON") from None


def retry_after_seconds(value: str | None) -> int:
    if value is not None and value.strip().isdigit():
        return max(1, min(int(value.strip()), _MAX_RETRY_AFTER_S))
    return 10
