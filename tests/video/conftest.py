"""Video tests: the session `server` (default video settings, the http(s) and file sources) and
one more server with tight video caps and a real PACS (Orthanc + DICOMweb) holding the cine loop
and a synthetic CT series, so caps, clamping and DICOMweb videos are tested end to end.

`tight_server` is tiered like tests/conftest.py's `server`: for an e2e test a front end of the
session's shared engine (float32, as that engine's), for any other test the same configuration in
process on the fake engine."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pydicom
import pytest

from tests.conftest import ENGINE_ARGS
from tests.utils.ct_series import CtSeries, synthetic_ct_series
from tests.utils.in_process import InProcessServer, start_fake_server
from tests.utils.orthanc import Orthanc, start_orthanc
from tests.utils.server import RunningServer, SharedEngine
from tests.utils.tiers import pick
from tests.utils.videos import cine_loop

# The tight server's caps
MAX_FRAMES = 8
MAX_SECONDS = 20
MAX_BYTES = 400_000
MAX_VIDEOS = 1  # the shared engine's per-prompt limit (the default): a front end may only lower it
MAX_FRAME_PIXELS = 200_000  # 640x480 is over it
PACS_USER = ("lingshu", "video-secret")


@dataclass
class VideoPacs:
    orthanc: Orthanc
    cine_url: str  # the cine loop's WADO-RS instance URL
    ct: CtSeries  # 24 slices, InstanceNumbers against the anatomy
    ct_url: str  # its series URL


@pytest.fixture(scope="package")
def video_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VideoPacs]:
    orthanc = start_orthanc(tmp_path_factory.mktemp("video-pacs"), dict([PACS_USER]))
    try:
        cine = cine_loop()
        ct = synthetic_ct_series(24, name="video-ct")
        orthanc.upload([cine, *ct.shuffled()])
        ds = pydicom.dcmread(io.BytesIO(cine), stop_before_pixels=True)
        base = orthanc.dicomweb_url
        cine_url = (
            f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )
        ct_url = f"{base}/studies/{ct.study_uid}/series/{ct.series_uid}"
        yield VideoPacs(orthanc, cine_url, ct, ct_url)
    finally:
        orthanc.stop()


@pytest.fixture(scope="package")
def tight_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("video-server")


def _tight_args(root: Path, video_pacs: VideoPacs) -> list[str]:
    credentials = root / "pacs-credentials"
    credentials.write_text(":".join(PACS_USER) + "\n")
    return [
        "--dicomweb-urls",
        video_pacs.orthanc.dicomweb_url,
        "--dicomweb-auth",
        f"basic:{credentials}",
        "--max-video-frames",
        str(MAX_FRAMES),
        "--max-video-seconds",
        str(MAX_SECONDS),
        "--max-video-bytes",
        str(MAX_BYTES),
        "--max-videos-per-request",
        str(MAX_VIDEOS),
        "--max-image-pixels",
        str(MAX_FRAME_PIXELS),
    ]


@pytest.fixture(scope="package")
def _real_tight_server(
    shared_engine: SharedEngine, tight_dir: Path, video_pacs: VideoPacs
) -> Iterator[RunningServer]:
    running = shared_engine.frontend("video-tight", *_tight_args(tight_dir, video_pacs))
    yield running
    running.stop()


@pytest.fixture(scope="package")
def _fake_tight_server(tight_dir: Path, video_pacs: VideoPacs) -> Iterator[InProcessServer]:
    args = _tight_args(tight_dir, video_pacs)
    running = start_fake_server(tight_dir / "server-fake.log", *ENGINE_ARGS, *args)
    yield running
    running.stop()


@pytest.fixture
def tight_server(request: pytest.FixtureRequest) -> RunningServer | InProcessServer:
    """The server with tight video caps and the PACS: a front end of the shared engine (e2e) or
    in process on the fake engine."""
    return pick(request, "_real_tight_server", "_fake_tight_server")


@pytest.fixture
def sdk(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0) as client:
        yield client


@pytest.fixture
def tight_client(tight_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tight_server.base_url, timeout=120) as http:
        yield http
