"""DICOMweb image sources: WADO-RS series and instance URLs under the configured PACS base URLs.

`{base}/studies/{study}/series/{series}/instances/{sop}` is one image;
`{base}/studies/{study}/series/{series}` is up to `dicom.slices` images, evenly spaced in
anatomical order, found from the series metadata before any instance is fetched. Instances
are retrieved as `application/dicom` in their stored transfer syntax (never rendered by the
PACS), so they take the same DICOM path as a base64 DICOM: our windowing, options and caps.

Privacy: Study/Series/SOP Instance UIDs identify a patient's examinations. They leave this
module only through `audit_record` (for the audit log). Error messages name the part of the URL
(study, series or instance) and the PACS host, never a UID, and httpx's request log, which
would print whole URLs, is kept quiet (logs.configure_logging).
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any, Literal

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import ASGIApp, Receive, Scope, Send

from lingshu_server import request_context
from lingshu_server.errors import (
    APIError,
    InvalidRequestError,
    PacsTimeoutError,
    PacsUnavailableError,
)
from lingshu_server.fetch_cache import FetchCache
from lingshu_server.protocol import ImagePart
from lingshu_server.settings import Settings

AuthMode = Literal["none", "basic", "bearer", "forward"]
FORWARD_HEADER = "X-DICOMweb-Authorization"
# The stored transfer syntax (no transcoding), in a multipart/related body as WADO-RS defines.
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
)
FETCH_KINDS = ("instance", "metadata", "query")
_FETCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_UID = r"[0-9]{1,64}(?:\.[0-9]{1,64}){0,63}"
_RESOURCE = re.compile(rf"studies/({_UID})/series/({_UID})(?:/instances/({_UID}))?/?")
_MAX_FORWARDED = 8192
_MAX_RETRY_AFTER_S = 300

# The caller's X-DICOMweb-Authorization header, set per request by ForwardedCredentialMiddleware.
_forwarded: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "lingshu_dicomweb_forwarded", default=None
)


class ForwardedCredentialMiddleware:
    """Makes the caller's X-DICOMweb-Authorization header available to `forward` PACS auth."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = dict(scope["headers"]).get(FORWARD_HEADER.lower().encode())
        token = _forwarded.set(raw.decode("latin-1") if raw is not None else None)
        try:
            await self.app(scope, receive, send)
        finally:
            _forwarded.reset(token)


class _SecretFile:
    """A credential in a mounted file, re-read when it changes (so Secrets rotate)."""

    def __init__(self, path: Path):
        self._path = path
        self._stamp: tuple[float, int] | None = None
        self._value = ""
        self.read()  # a missing file stops the server at start, not at the first request

    def read(self) -> str:
        try:
            info = os.stat(self._path)
            stamp = (info.st_mtime, info.st_size)
            if stamp != self._stamp:
                self._value, self._stamp = self._path.read_text(encoding="utf-8").strip(), stamp
        except OSError:
            if self._stamp is None:
                raise
            # keep the last credential read: a Secret being swapped is briefly absent
        return self._value


@dataclass(frozen=True)
class PacsAuth:
    mode: AuthMode
    secret: _SecretFile | None = None

    @classmethod
    def parse(cls, entry: str) -> PacsAuth:
        """'none', 'forward', 'basic:FILE' or 'bearer:FILE' (checked by Settings)."""
        mode, _, path = entry.partition(":")
        if mode in ("basic", "bearer"):
            return cls(mode, _SecretFile(Path(path)))  # type: ignore[arg-type]
        return cls(mode)  # type: ignore[arg-type]

    def header(self) -> str | None:
        """The Authorization header to send to the PACS, if any."""
        if self.mode == "forward":
            return _forwarded.get()
        if self.secret is None:
            return None
        secret = self.secret.read()
        if self.mode == "basic":
            return "Basic " + base64.b64encode(secret.encode()).decode("ascii")
        return f"Bearer {secret}"


@dataclass(frozen=True)
class Pacs:
    """One configured DICOMweb base URL and how to sign in to it."""

    base: httpx.URL  # path without a trailing slash
    auth: PacsAuth

    @property
    def label(self) -> str:
        """host:port, for messages and the audit log (never the path or a credential)."""
        return f"{self.base.host}:{self.base.port or (443 if self.base.scheme == 'https' else 80)}"

    def contains(self, url: httpx.URL) -> bool:
        prefix = self.base.path
        return (
            url.scheme == self.base.scheme
            and url.host == self.base.host
            and (url.port or None) == (self.base.port or None)
            and url.path.startswith(prefix + "/")
        )


@dataclass(frozen=True)
class DicomWebRef:
    """A series (instance None) or one instance in a PACS."""

    pacs: Pacs
    study: str
    series: str
    instance: str | None = None

    @property
    def url(self) -> str:
        path = f"{self.pacs.base.path}/studies/{self.study}/series/{self.series}"
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


@dataclass(frozen=True)
class SeriesSlice:
    """What ordering and choosing slices needs from one instance's metadata."""

    sop_uid: str
    instance_number: int | None
    position: tuple[float, float, float] | None  # ImagePositionPatient
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (row, column cosines)
    has_pixels: bool


def _values(item: dict[str, Any], tag: str) -> list[Any]:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values if isinstance(values, list) else []


def _floats(item: dict[str, Any], tag: str, count: int) -> tuple[float, ...] | None:
    try:
        values = tuple(float(v) for v in _values(item, tag))
    except (TypeError, ValueError):
        return None
    return values if len(values) == count else None


def parse_series_metadata(body: bytes) -> list[SeriesSlice]:
    """WADO-RS series metadata (DICOM JSON) -> one SeriesSlice per instance.

    Raises ValueError when the body is not DICOM JSON.
    """
    items = json.loads(body)
    if not isinstance(items, list):
        raise ValueError("series metadata is not a JSON array")
    slices = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("series metadata entry is not an object")
        uid = next(iter(_values(item, "00080018")), None)
        if not isinstance(uid, str) or not re.fullmatch(_UID, uid):
            continue
        number = next(iter(_values(item, "00200013")), None)
        try:
            instance_number = int(number) if number is not None else None
        except (TypeError, ValueError):
            instance_number = None
        position = _floats(item, "00200032", 3)
        slices.append(
            SeriesSlice(
                sop_uid=uid,
                instance_number=instance_number,
                position=position,  # type: ignore[arg-type]
                orientation=_floats(item, "00200037", 6),
                has_pixels=bool(_values(item, "00280010")),  # Rows: an image
            )
        )
    return slices


def anatomical_order(slices: Sequence[SeriesSlice]) -> list[SeriesSlice]:
    """Along the slice normal when every slice has a position and orientation, else by
    InstanceNumber (slices without one last); the SOP Instance UID breaks ties."""
    if slices and all(s.position and s.orientation for s in slices):
        row, column = slices[0].orientation[:3], slices[0].orientation[3:]  # type: ignore[index]
        normal = (
            row[1] * column[2] - row[2] * column[1],
            row[2] * column[0] - row[0] * column[2],
            row[0] * column[1] - row[1] * column[0],
        )

        def along_normal(s: SeriesSlice) -> tuple[float, str]:
            return (sum(p * n for p, n in zip(s.position, normal, strict=True)), s.sop_uid)  # type: ignore[arg-type]

        return sorted(slices, key=along_normal)
    return sorted(
        slices, key=lambda s: (s.instance_number is None, s.instance_number or 0, s.sop_uid)
    )


def evenly_spaced(items: Sequence[SeriesSlice], count: int) -> list[SeriesSlice]:
    """`count` items from the middles of `count` equal runs; 1 is the middle item."""
    count = min(count, len(items))
    return [items[(2 * i + 1) * len(items) // (2 * count)] for i in range(count)]


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


@dataclass
class _Answer:
    status: int
    body: bytes
    content_type: str
    retry_after: str | None


class DicomWebSource:
    """Resolves DICOMweb image URLs to instance URLs and fetches instance bytes."""

    def __init__(
        self,
        pacs: Sequence[Pacs],
        pool: Executor,
        metrics: DicomWebMetrics,
        cache: FetchCache,
        max_bytes: int,
        timeout_s: float,
        connect_timeout_s: float,
    ):
        self._pacs = tuple(pacs)
        self._pool = pool
        self._metrics = metrics
        self._cache = cache
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._client: httpx.AsyncClient | None = None
        metrics.cache_bytes.set_function(lambda: cache.bytes)
        metrics.cache_entries.set_function(lambda: len(cache))

    @classmethod
    def from_settings(
        cls, settings: Settings, pool: Executor, registry: CollectorRegistry
    ) -> DicomWebSource:
        auths = [PacsAuth.parse(entry) for entry in settings.dicomweb_auth]
        if len(auths) == 1:
            auths *= len(settings.dicomweb_urls)
        pacs = [
            Pacs(_base_url(url), auth)
            for url, auth in zip(settings.dicomweb_urls, auths, strict=True)
        ]
        cache = FetchCache(
            settings.dicomweb_cache_bytes,
            settings.dicomweb_cache_entries,
            settings.dicomweb_cache_ttl,
        )
        return cls(
            pacs,
            pool,
            DicomWebMetrics(registry),
            cache,
            settings.max_image_bytes,
            settings.dicomweb_timeout,
            settings.dicomweb_connect_timeout,
        )

    @property
    def forwards_credentials(self) -> bool:
        return any(p.auth.mode == "forward" for p in self._pacs)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ---------------------------------------------------------------- URLs

    def match(self, url: str, param: str) -> DicomWebRef | None:
        """The series or instance a URL under a configured base names; None for other URLs.

        Pure parsing: no connection is made for a URL outside the configured bases."""
        if not self._pacs or not url.startswith(("http://", "https://")):
            return None
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            return None
        pacs = next((p for p in self._pacs if p.contains(parsed)), None)
        if pacs is None:
            return None
        found = _RESOURCE.fullmatch(parsed.path[len(pacs.base.path) + 1 :])
        if found is None or parsed.query or parsed.fragment or parsed.userinfo:
            raise InvalidRequestError(
                "a DICOMweb image URL names a series ({base}/studies/{study}/series/{series}) "
                "or an instance (.../series/{series}/instances/{sop}), without a query",
                param=param,
                code="invalid_image_url",
            )
        return DicomWebRef(pacs, *found.groups())

    def audit_record(self, url: str) -> dict[str, str] | None:
        """The PACS host and UIDs of a DICOMweb instance URL, for the audit log only."""
        ref = self.match(url, "")
        return ref.audit() if ref is not None else None

    # ---------------------------------------------------------------- series -> instances

    async def expand_parts(
        self, parts: list[tuple[str, ImagePart]], max_images: int
    ) -> list[tuple[str, ImagePart]]:
        """Each series part becomes one part per chosen instance (same options, same param);
        every other part stays as it is. Only series metadata is fetched here."""
        expanded = await asyncio.gather(
            *(self._expand(param, part, max_images) for param, part in parts)
        )
        return [item for items in expanded for item in items]

    async def _expand(
        self, param: str, part: ImagePart, max_images: int
    ) -> list[tuple[str, ImagePart]]:
        spec = part.image_url
        slices = spec.dicom.slices if spec.dicom is not None else None
        ref = self.match(spec.url, param)
        if slices is not None and slices > 1 and (ref is None or ref.instance is not None):
            raise InvalidRequestError(
                "dicom.slices applies to DICOMweb series URLs only",
                param=f"{param}.dicom.slices",
                code="invalid_dicom_options",
            )
        if slices is not None and slices > max_images:
            raise InvalidRequestError(
                f"dicom.slices is {slices}; the server accepts at most {max_images} images "
                "per request",
                param=f"{param}.dicom.slices",
                code="too_many_images",
            )
        if ref is None or ref.instance is not None:
            return [(param, part)]
        chosen = evenly_spaced(await self._series_images(ref, param), slices or 1)
        return [
            (param, part.model_copy(update={"image_url": spec.model_copy(update={"url": url})}))
            for url in (replace(ref, instance=s.sop_uid).url for s in chosen)
        ]

    async def _series_images(self, ref: DicomWebRef, param: str) -> list[SeriesSlice]:
        key = ("metadata", ref.url, _caller(ref.pacs))
        cached = self._cache.get(key)
        if cached is not None:
            self._metrics.cache_hits.labels("metadata").inc()
            return cached  # type: ignore[return-value]
        answer = await self._get(ref.pacs, ref.url + "/metadata", "metadata", METADATA_ACCEPT)
        await self._check(answer, ref, param)
        loop = asyncio.get_running_loop()
        try:
            slices = await loop.run_in_executor(self._pool, parse_series_metadata, answer.body)
        except (ValueError, RecursionError):
            raise self._bad_response(ref.pacs, "series metadata that is not DICOM JSON") from None
        images = anatomical_order([s for s in slices if s.has_pixels])
        if not images:
            self._metrics.errors.labels("no_image").inc()
            raise InvalidRequestError(
                f"the series holds no images: none of its {len(slices)} instance(s) has pixel "
                "data (structured reports, presentation states or other non-image objects)",
                param=param,
                code="dicom_no_image",
            )
        self._cache.put(key, images, len(answer.body))
        return images

    # ---------------------------------------------------------------- instances

    async def fetch(self, url: str, param: str) -> bytes | None:
        """The DICOM bytes of a DICOMweb instance URL; None for any other URL."""
        ref = self.match(url, param)
        if ref is None:
            return None
        if ref.instance is None:  # expand_parts turns series into instances first
            raise InvalidRequestError("a DICOMweb series URL needs expanding", param=param)
        key = ("instance", ref.url, _caller(ref.pacs))
        cached = self._cache.get(key)
        if cached is not None:
            self._metrics.cache_hits.labels("instance").inc()
            return cached  # type: ignore[return-value]
        answer = await self._get(ref.pacs, ref.url, "instance", INSTANCE_ACCEPT, param)
        await self._check(answer, ref, param)
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(
                self._pool, dicom_from_response, answer.body, answer.content_type
            )
        except ValueError:
            raise self._bad_response(ref.pacs, "something other than a DICOM instance") from None
        self._cache.put(key, data, len(data))
        return data

    # ---------------------------------------------------------------- HTTP

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # No proxy or netrc from the environment, no redirects, and a cookie jar that
            # keeps nothing: a PACS session cookie must not ride along with the next caller.
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                timeout=httpx.Timeout(self._timeout_s, connect=self._connect_timeout_s),
                cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
            )
        return self._client

    async def _get(
        self, pacs: Pacs, url: str, kind: str, accept: str, param: str | None = None
    ) -> _Answer:
        headers = {"Accept": accept}
        credential = pacs.auth.header()
        if credential is not None:
            if len(credential) > _MAX_FORWARDED or not credential.isprintable():
                raise InvalidRequestError(
                    f"the {FORWARD_HEADER} header is not a valid Authorization value",
                    code="dicomweb_unauthorized",
                )
            headers["Authorization"] = credential
        self._metrics.fetches.labels(kind).inc()
        started = time.perf_counter()
        try:
            async with (
                asyncio.timeout(self._timeout_s),
                self._http().stream("GET", url, headers=headers) as response,
            ):
                body = await self._read(response, kind, param)
                answer = _Answer(
                    response.status_code,
                    body,
                    response.headers.get("content-type", ""),
                    response.headers.get("retry-after"),
                )
        except (TimeoutError, httpx.TimeoutException):
            self._metrics.errors.labels("timeout").inc()
            raise PacsTimeoutError(
                f"the PACS at {pacs.label} did not answer within {self._timeout_s:g} s",
                param=param,
                retry_after_s=5,
            ) from None
        except httpx.HTTPError:
            self._metrics.errors.labels("unavailable").inc()
            raise PacsUnavailableError(
                f"could not reach the PACS at {pacs.label} (connection refused, reset or "
                "not resolvable)",
                param=param,
            ) from None
        finally:
            self._metrics.fetch_seconds.labels(kind).observe(time.perf_counter() - started)
        self._metrics.fetched_bytes.labels(kind).inc(len(answer.body))
        return answer

    async def _read(self, response: httpx.Response, kind: str, param: str | None) -> bytes:
        limit = self._max_bytes
        if not response.is_success:
            limit = 64 * 1024  # an error page: read a little, keep the connection usable
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
            self._metrics.errors.labels("too_large").inc()
            what = "DICOM instance" if kind == "instance" else "series metadata"
            raise InvalidRequestError(
                f"the {what} is larger than the {limit} bytes allowed per image",
                param=param,
                code="image_too_large",
            )
        return bytes(body[:limit])

    async def _check(self, answer: _Answer, ref: DicomWebRef, param: str) -> None:
        """Turn a PACS answer other than 200 into the error a caller can act on."""
        status = answer.status
        if status == HTTPStatus.OK:
            return
        pacs = ref.pacs
        if status == HTTPStatus.NOT_FOUND:
            part = await self._missing_part(ref)
            self._metrics.errors.labels("not_found").inc()
            raise InvalidRequestError(
                f"the PACS at {pacs.label} has no such {part}: check the {_UID_NAMES[part]} "
                "in the image URL",
                param=param,
                code="dicomweb_not_found",
            )
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            self._metrics.errors.labels("unauthorized").inc()
            hint = ""
            if pacs.auth.mode == "forward":
                hint = (
                    f"; send your PACS credentials in the {FORWARD_HEADER} header"
                    if _forwarded.get() is None
                    else f" sent in {FORWARD_HEADER}"
                )
            raise InvalidRequestError(
                f"the PACS at {pacs.label} refused access (HTTP {status}) with the credentials"
                f"{hint or ' this server is configured with'}",
                param=param,
                code="dicomweb_unauthorized",
            )
        if status == HTTPStatus.TOO_MANY_REQUESTS or status >= 500:
            self._metrics.errors.labels("unavailable").inc()
            raise PacsUnavailableError(
                f"the PACS at {pacs.label} answered HTTP {status}",
                param=param,
                retry_after_s=_retry_after(answer.retry_after),
            )
        raise self._bad_response(pacs, f"HTTP {status}", param)

    def _bad_response(self, pacs: Pacs, what: str, param: str | None = None) -> APIError:
        self._metrics.errors.labels("bad_response").inc()
        return PacsUnavailableError(
            f"the PACS at {pacs.label} answered with {what}",
            param=param,
            code="dicomweb_bad_response",
        )

    async def _missing_part(self, ref: DicomWebRef) -> str:
        """Which of study, series and instance the PACS does not have (QIDO-RS searches)."""
        base = str(ref.pacs.base)
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


_UID_NAMES = {
    "study": "StudyInstanceUID",
    "series": "SeriesInstanceUID",
    "instance": "SOPInstanceUID",
    "study, series or instance": "UIDs",
}


def _base_url(text: str) -> httpx.URL:
    """A configured base URL (checked by Settings) without its trailing slash."""
    url = httpx.URL(text.strip())
    return url.copy_with(path=url.path.rstrip("/"))


def _caller(pacs: Pacs) -> tuple[str, str]:
    """Who is asking, as far as what they may see can differ: the API key id, and for
    `forward` PACS auth a hash of the credential they forwarded."""
    ctx = request_context.get()
    key = (ctx.key_id if ctx is not None else None) or ""
    forwarded = _forwarded.get() if pacs.auth.mode == "forward" else None
    digest = hashlib.sha256(forwarded.encode("latin-1")).hexdigest() if forwarded else ""
    return key, digest


def _retry_after(value: str | None) -> int:
    if value is not None and value.strip().isdigit():
        return max(1, min(int(value.strip()), _MAX_RETRY_AFTER_S))
    return 10
