"""A real PACS (Orthanc + DICOMweb, basic auth on, alice read-only) and one lingshu-server
configured for it.

One server configuration covers every auth mode with one PACS base URL each:
  basic    Orthanc itself, with this server's user from a credentials file
  bearer   Orthanc behind a proxy that checks a bearer token (from a token file)
  forward  Orthanc behind a transparent proxy: each caller's X-DICOMweb-Authorization decides
  none     a second, open Orthanc that a test starts and stops (an outage mid-run)
plus a slow route (a PACS that answers too late) and a port nobody listens on. Reports' Bundles
go to a stand-in FHIR server (tests/utils/fhir_server.py) through one base URL per auth mode
(basic, bearer, forward), one that refuses every transaction, and one nobody listens on.

Tiered like tests/conftest.py's `server`: `pacs_server` is, for an e2e test, a front end of the
session's shared engine, and for any other test the same configuration in process on the fake
engine; the PACS is real in both.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.conftest import ENGINE_ARGS
from tests.utils.ct_series import CtSeries, synthetic_ct_series
from tests.utils.fhir_server import FhirServer, fhir_server
from tests.utils.in_process import InProcessServer, start_fake_server
from tests.utils.orthanc import Orthanc, start_orthanc
from tests.utils.pacs_proxy import pacs_proxy
from tests.utils.server import RunningServer, SharedEngine, dead_port, free_port
from tests.utils.tiers import pick

SERVER_USER = ("lingshu", "server-secret")
USERS = {"alice": "alice-secret", "bob": "bob-secret"}
BEARER_TOKEN = "token-4f1c"
API_KEYS = ("key-ward-a", "key-ward-b")
BENCHMARK_KEYS = tuple(f"key-benchmark-{i}" for i in range(4))
TIMEOUT_S = 2  # the server's DICOMweb timeout; the slow route answers after SLOW_S
SLOW_S = 5
# The PACS's write policy (as a hospital's): alice may read studies but not store into them.
READ_ONLY_USER = "alice"
POLICY = f"""
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  return not (method == 'POST' and username == '{READ_ONLY_USER}')
end
"""
# A study whose SRs the PACS acknowledges and then drops (an import filter, as a hospital's
# routing rules may): a STOW-RS answer is not proof the instance is held.
DROPPED_SR_STUDY = "1.2.826.0.1.3680043.8.498.99001"
POLICY += f"""
function ReceivedInstanceFilter(dicom, origin, info)
  return not (dicom.Modality == 'SR' and dicom.StudyInstanceUID == '{DROPPED_SR_STUDY}')
end
"""
FHIR_TOKEN = "fhir-token-9d2e"
# pydicom's and pydicom-data's files the PACS holds (name -> what it shows)
SAMPLE_FILES = (
    "CT_small.dcm",  # CT, 128x128
    "emri_small.dcm",  # multi-frame MR, 10 frames of 64x64
    "JPGLosslessP14SV1_1s_1f_8b.dcm",  # JPEG lossless, 1024x768, stored compressed
    "RG1_UNCR.dcm",  # pydicom-data's CR chest, MONOCHROME1, 1841x1955
    "test-SR.dcm",  # a structured report: no pixels
)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass(frozen=True)
class Instance:
    study: str
    series: str
    sop: str
    data: bytes


@dataclass
class Pacs:
    orthanc: Orthanc
    basic_url: str  # the DICOMweb base URLs the server is configured with, one per auth mode
    bearer_url: str
    forward_url: str
    slow_url: str
    open_url: str  # an Orthanc without auth, started by the test that needs it
    open_port: int
    dead_url: str
    token_file: Path
    files: dict[str, Instance]
    ct: CtSeries  # positions and InstanceNumbers that disagree
    ct_unpositioned: CtSeries  # InstanceNumber only
    dropped_sr_study: Instance  # CT_small in DROPPED_SR_STUDY

    def instance_path(self, instance: Instance) -> str:
        return f"/studies/{instance.study}/series/{instance.series}/instances/{instance.sop}"

    def series_path(self, series: CtSeries) -> str:
        return f"/studies/{series.study_uid}/series/{series.series_uid}"


def _instance(data: bytes) -> Instance:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return Instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, data)


@pytest.fixture(scope="package")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    root = tmp_path_factory.mktemp("pacs")
    orthanc = start_orthanc(root / "orthanc", {SERVER_USER[0]: SERVER_USER[1], **USERS}, lua=POLICY)
    files = {name: _instance(Path(get_testdata_file(name)).read_bytes()) for name in SAMPLE_FILES}
    dropped = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dropped.StudyInstanceUID = DROPPED_SR_STUDY
    dropped.SeriesInstanceUID = DROPPED_SR_STUDY + ".1"
    dropped.SOPInstanceUID = dropped.file_meta.MediaStorageSOPInstanceUID = (
        DROPPED_SR_STUDY + ".1.1"
    )
    dropped_buffer = io.BytesIO()
    dropped.save_as(dropped_buffer)
    dropped_sr_study = _instance(dropped_buffer.getvalue())
    ct = synthetic_ct_series(24, name="ct-positioned")
    ct_unpositioned = synthetic_ct_series(8, with_position=False, name="ct-numbered")
    orthanc.upload([i.data for i in files.values()] + [dropped_sr_study.data])
    orthanc.upload(ct.shuffled() + ct_unpositioned.shuffled())
    token_file = root / "pacs-token"
    token_file.write_text(BEARER_TOKEN + "\n")
    open_port = free_port()
    try:
        with pacs_proxy(orthanc, BEARER_TOKEN, SLOW_S) as proxy:
            yield Pacs(
                orthanc=orthanc,
                basic_url=orthanc.dicomweb_url,
                bearer_url=f"{proxy}/bearer/dicom-web",
                forward_url=f"{proxy}/forward/dicom-web",
                slow_url=f"{proxy}/slow/dicom-web",
                open_url=f"http://127.0.0.1:{open_port}/dicom-web",
                open_port=open_port,
                dead_url=f"http://127.0.0.1:{dead_port()}/dicom-web",
                token_file=token_file,
                files=files,
                ct=ct,
                ct_unpositioned=ct_unpositioned,
                dropped_sr_study=dropped_sr_study,
            )
    finally:
        orthanc.stop()


@dataclass
class Fhir:
    server: FhirServer
    basic_url: str  # the FHIR base URLs the server is configured with, one per auth mode
    bearer_url: str
    forward_url: str
    refusing_url: str  # refuses every transaction (422, an OperationOutcome)
    dead_url: str


@pytest.fixture(scope="package")
def fhir() -> Iterator[Fhir]:
    """The stand-in FHIR server: alice may read, bob and this server's user may write."""
    users = {SERVER_USER[0]: SERVER_USER[1], **USERS}
    with fhir_server(users, {READ_ONLY_USER}, FHIR_TOKEN) as server:
        yield Fhir(
            server=server,
            basic_url=server.base("basic"),
            bearer_url=server.base("bearer"),
            forward_url=server.base("forward"),
            refusing_url=server.base("refusing"),
            dead_url=f"http://127.0.0.1:{dead_port()}/fhir",
        )


@pytest.fixture(scope="package")
def pacs_server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pacs-server")


@pytest.fixture(scope="package")
def audit_log(pacs_server_dir: Path) -> Path:
    return pacs_server_dir / "audit.jsonl"


def _pacs_args(root: Path, audit_log: Path, pacs: Pacs, fhir: Fhir) -> list[str]:
    credentials = root / "pacs-credentials"
    credentials.write_text(f"{SERVER_USER[0]}:{SERVER_USER[1]}\n")
    fhir_token = root / "fhir-token"
    fhir_token.write_text(FHIR_TOKEN + "\n")
    fhir_routes = [
        (fhir.basic_url, f"basic:{credentials}"),
        (fhir.bearer_url, f"bearer:{fhir_token}"),
        (fhir.forward_url, "forward"),
        (fhir.refusing_url, "none"),
        (fhir.dead_url, "none"),
    ]
    routes = [
        (pacs.basic_url, f"basic:{credentials}"),
        (pacs.bearer_url, f"bearer:{pacs.token_file}"),
        (pacs.forward_url, "forward"),
        (pacs.slow_url, f"bearer:{pacs.token_file}"),
        (pacs.open_url, "none"),
        (pacs.dead_url, "none"),
    ]
    return [
        "--dicomweb-urls",
        *(url for url, _ in routes),
        "--dicomweb-auth",
        *(auth for _, auth in routes),
        "--dicomweb-timeout",
        str(TIMEOUT_S),
        "--fhir-urls",
        *(url for url, _ in fhir_routes),
        "--fhir-auth",
        *(auth for _, auth in fhir_routes),
        "--api-keys",
        ",".join(API_KEYS + BENCHMARK_KEYS),
        "--audit-log-file",
        str(audit_log),
    ]


@pytest.fixture(scope="package")
def _real_pacs_server(
    shared_engine: SharedEngine, pacs_server_dir: Path, audit_log: Path, pacs: Pacs, fhir: Fhir
) -> Iterator[RunningServer]:
    running = shared_engine.frontend("pacs", *_pacs_args(pacs_server_dir, audit_log, pacs, fhir))
    yield running
    running.stop()


@pytest.fixture(scope="package")
def _fake_pacs_server(
    pacs_server_dir: Path, audit_log: Path, pacs: Pacs, fhir: Fhir
) -> Iterator[InProcessServer]:
    running = start_fake_pacs_server(pacs_server_dir, "server-fake.log", audit_log, pacs, fhir)
    yield running
    running.stop()


def start_fake_pacs_server(
    root: Path, log_name: str, audit_log: Path, pacs: Pacs, fhir: Fhir
) -> InProcessServer:
    """The PACS-configured server in process on the fake engine (another replica of it, when
    one runs already: the same settings and the same database)."""
    args = _pacs_args(root, audit_log, pacs, fhir)
    return start_fake_server(root / log_name, *ENGINE_ARGS, *args)


@pytest.fixture
def pacs_server(request: pytest.FixtureRequest) -> RunningServer | InProcessServer:
    """The PACS-configured server: a front end of the shared engine (e2e) or in process on the
    fake engine. Both write the same audit log (records are found by request id)."""
    return pick(request, "_real_pacs_server", "_fake_pacs_server")


def sdk_client(server: RunningServer, api_key: str = API_KEYS[0], **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.base_url}/v1",
        api_key=api_key,
        max_retries=0,
        default_headers=headers or None,
    )


@pytest.fixture
def sdk(pacs_server: RunningServer) -> openai.OpenAI:
    return sdk_client(pacs_server)


@pytest.fixture
def client(pacs_server: RunningServer) -> Iterator[httpx.Client]:
    """Plain HTTP to the PACS-configured server with the first API key."""
    headers = {"Authorization": f"Bearer {API_KEYS[0]}"}
    with httpx.Client(base_url=pacs_server.base_url, headers=headers, timeout=120) as http:
        yield http
