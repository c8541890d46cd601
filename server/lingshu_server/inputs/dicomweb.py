"""DICOMweb image sources: WADO-RS series and instance URLs under the configured PACS base URLs.

`{base}/studies/{study}/series/{series}/instances/{sop}` is one image;
`{base}/studies/{study}/series/{series}` is up to `dicom.slices` images, evenly spaced in
anatomical order, chosen from the series metadata before any instance is fetched. Instances
arrive as DICOM files (pacs_client), so they take the same path as a base64 DICOM: our
windowing, per-image options, budgets and caps. A URL outside the configured bases is not
ours; nothing connects anywhere for it here.

Fetched instances and series metadata are cached per caller (API key id, and the forwarded
PACS credential where the PACS decides), so follow-up questions do not refetch and one
caller's images are never served to another.

Privacy: Study/Series/SOP Instance UIDs identify a patient's examinations. They leave this
module only through `audit_record`, for the audit log; httpx's request log, which would print
whole URLs, is kept quiet (logs.configure_logging).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import replace

import httpx
from prometheus_client import CollectorRegistry

from lingshu_server.core.errors import InvalidRequestError
from lingshu_server.core.settings import Settings
from lingshu_server.inputs.dicom_series import (
    UID_PATTERN,
    SeriesSlice,
    anatomical_order,
    evenly_spaced,
    parse_series_metadata,
)
from lingshu_server.inputs.dicomweb_store import StoredInstance, store_instance
from lingshu_server.inputs.fetch_cache import FetchCache
from lingshu_server.inputs.pacs_auth import PacsAuth
from lingshu_server.inputs.pacs_client import DicomWebMetrics, DicomWebRef, Pacs, PacsClient
from lingshu_server.protocol.common import ImagePart

_RESOURCE = re.compile(
    rf"studies/({UID_PATTERN})/series/({UID_PATTERN})(?:/instances/({UID_PATTERN}))?/?"
)

ImageParts = list[tuple[str, ImagePart]]  # (request param, part), in prompt order


class DicomWebSource:
    """Turns DICOMweb image URLs into instance URLs (series) and instance URLs into bytes."""

    def __init__(
        self, *, pacs: Sequence[Pacs], client: PacsClient, cache: FetchCache, pool: Executor
    ):
        self._pacs = tuple(pacs)
        self._client = client
        self._metrics = client.metrics
        self._cache = cache
        self._pool = pool
        self._metrics.cache_bytes.set_function(lambda: cache.bytes)
        self._metrics.cache_entries.set_function(lambda: len(cache))

    @classmethod
    def from_settings(
        cls, settings: Settings, pool: Executor, registry: CollectorRegistry
    ) -> DicomWebSource:
        auths = [PacsAuth.parse(entry) for entry in settings.dicomweb_auth]
        if len(auths) == 1:
            auths *= len(settings.dicomweb_urls)
        pacs = [
            Pacs(httpx.URL(url.strip()), auth)
            for url, auth in zip(settings.dicomweb_urls, auths, strict=True)
        ]
        client = PacsClient(
            pool=pool,
            metrics=DicomWebMetrics(registry),
            max_bytes=settings.max_image_bytes,
            timeout_s=settings.dicomweb_timeout,
            connect_timeout_s=settings.dicomweb_connect_timeout,
        )
        cache = FetchCache(
            max_bytes=settings.dicomweb_cache_bytes,
            max_entries=settings.dicomweb_cache_entries,
            ttl_s=settings.dicomweb_cache_ttl,
        )
        return cls(pacs=pacs, client=client, cache=cache, pool=pool)

    @property
    def forwards_credentials(self) -> bool:
        return any(p.auth.mode == "forward" for p in self._pacs)

    async def aclose(self) -> None:
        await self._client.aclose()

    def match(self, url: str, param: str) -> DicomWebRef | None:
        """The series or instance a URL under a configured base names; None for other URLs."""
        if not self._pacs or not url.startswith(("http://", "https://")):
            return None
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            return None
        pacs = next((p for p in self._pacs if p.contains(parsed)), None)
        if pacs is None:
            return None
        found = _RESOURCE.fullmatch(parsed.path[len(pacs.prefix) + 1 :])
        if found is None or parsed.query or parsed.fragment or parsed.userinfo:
            raise InvalidRequestError(
                "a DICOMweb image URL names a series ({base}/studies/{study}/series/{series}) "
                "or an instance (.../series/{series}/instances/{sop}), without a query",
                param=param,
                code="invalid_image_url",
            )
        study, series, instance = found.groups()
        return DicomWebRef(pacs=pacs, study=study, series=series, instance=instance)

    def audit_record(self, url: str) -> dict[str, str] | None:
        """The PACS host and UIDs of a DICOMweb instance URL, for the audit log only."""
        ref = self.match(url, "")
        return ref.audit() if ref is not None else None

    async def store(self, ref: DicomWebRef, data: bytes) -> StoredInstance:
        """Store the instance `ref` names (its bytes: `data`) into `ref.pacs` by STOW-RS."""
        return await store_instance(self._client, ref, data)

    async def expand_parts(self, parts: ImageParts, max_images: int) -> ImageParts:
        """Each series part becomes one part per chosen instance (same options, same param);
        every other part stays as it is. Only series metadata is fetched here."""
        expanded = await asyncio.gather(
            *(self._expand(param, part, max_images) for param, part in parts)
        )
        return [item for items in expanded for item in items]

    async def series_instance_urls(self, url: str, param: str) -> list[str] | None:
        """The instance URLs of a series URL's images in anatomical order (metadata only);
        None for any other URL."""
        ref = self.match(url, param)
        if ref is None or ref.instance is not None:
            return None
        slices = await self._series_images(ref, param)
        return [replace(ref, instance=s.sop_uid).url for s in slices]

    async def fetch(self, url: str, param: str) -> bytes | None:
        """The DICOM file of a DICOMweb instance URL; None for any other URL."""
        ref = self.match(url, param)
        if ref is None:
            return None
        if ref.instance is None:  # expand_parts turns series into instances first
            raise InvalidRequestError("a DICOMweb series URL was not expanded", param=param)
        key = ("instance", ref.url, ref.pacs.auth.caller())
        cached = self._cache.get(key)
        if isinstance(cached, bytes):
            self._metrics.cache_hits.labels("instance").inc()
            return cached
        data = await self._client.instance(ref, param)
        self._cache.put(key, data, len(data))
        return data

    async def _expand(self, param: str, part: ImagePart, max_images: int) -> ImageParts:
        spec = part.image_url
        slices = spec.dicom.slices if spec.dicom is not None else None
        ref = self.match(spec.url, param)
        is_series = ref is not None and ref.instance is None
        if slices is not None and slices > 1 and not is_series:
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
        if ref is None or not is_series:
            return [(param, part)]
        chosen = evenly_spaced(await self._series_images(ref, param), slices or 1)
        return [
            (param, part.model_copy(update={"image_url": spec.model_copy(update={"url": url})}))
            for url in (replace(ref, instance=s.sop_uid).url for s in chosen)
        ]

    async def _series_images(self, ref: DicomWebRef, param: str) -> list[SeriesSlice]:
        """The series' image instances in anatomical order (cached per caller)."""
        key = ("metadata", ref.url, ref.pacs.auth.caller())
        cached = self._cache.get(key)
        if isinstance(cached, list):  # of SeriesSlice: the metadata key holds nothing else
            self._metrics.cache_hits.labels("metadata").inc()
            return cached
        body = await self._client.series_metadata(ref, param)
        loop = asyncio.get_running_loop()
        try:
            slices = await loop.run_in_executor(self._pool, parse_series_metadata, body)
        except (ValueError, RecursionError):
            raise self._client.bad_response(ref, "series metadata that is not DICOM JSON") from None
        images = anatomical_order([s for s in slices if s.has_pixels])
        if not images:
            self._metrics.errors.labels("no_image").inc()
            raise InvalidRequestError(
                f"the series holds no images: none of its {len(slices)} instance(s) has pixel "
                "data (structured reports, presentation states or other non-image objects)",
                param=param,
                code="dicom_no_image",
            )
        self._cache.put(key, images, len(body))
        return images
