"""The reliability suite: hostile inputs, schemathesis, a bounded soak and faults, against one
server run as a hospital would (an API key, tight connection limits). Short by default (CI);
`--reliability-long` (or LINGSHU_RELIABILITY_LONG=1) runs the issue's full sizes. The figures
are printed at the end of the run.

Tiered like tests/conftest.py's `server`: an e2e test gets a front end of the session's shared
engine, any other test the same configuration in process on the fake engine. The engine-death
test (`ends_engine`) kills the shared engine's core; it runs after every other test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import ENGINE_ARGS
from tests.reliability.client import Target
from tests.reliability.report import REPORT_KEY, ReliabilityReport
from tests.reliability.server_config import (
    BODY_READ_TIMEOUT_S,
    HEADER_TIMEOUT_S,
    IMAGE_FETCH_TIMEOUT_S,
    KEY,
    MAX_CONNECTIONS,
    MAX_HEADER_BYTES,
    MAX_TOKENS_CAP,
    long_mode,
)
from tests.reliability.stalling_host import stalling_image_host
from tests.utils.in_process import InProcessServer, start_fake_server
from tests.utils.server import RunningServer, SharedEngine
from tests.utils.tiers import pick


def pytest_configure(config: pytest.Config) -> None:
    config.stash[REPORT_KEY] = ReliabilityReport()


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:  # noqa: ANN001
    report = config.stash.get(REPORT_KEY, None)
    if report is None or not report.requests:
        return
    terminalreporter.section("reliability report")
    for line in report.lines():
        terminalreporter.write_line(line)


@pytest.fixture(scope="package")
def report(pytestconfig: pytest.Config) -> ReliabilityReport:
    report = pytestconfig.stash[REPORT_KEY]
    report.mode = "long" if long_mode(pytestconfig) else "short"
    return report


@pytest.fixture(scope="package")
def long(pytestconfig: pytest.Config) -> bool:
    return long_mode(pytestconfig)


@pytest.fixture(scope="package")
def image_host() -> Iterator[str]:
    with stalling_image_host() as host:
        yield host


def _rel_args(image_host: str) -> list[str]:
    return [
        "--api-keys",
        KEY,
        "--max-tokens-cap",
        str(MAX_TOKENS_CAP),
        "--max-connections",
        str(MAX_CONNECTIONS),
        "--body-read-timeout",
        str(BODY_READ_TIMEOUT_S),
        "--header-timeout",
        str(HEADER_TIMEOUT_S),
        "--max-header-bytes",
        str(MAX_HEADER_BYTES),
        "--allowed-image-hosts",
        image_host,
        "--image-fetch-timeout",
        str(IMAGE_FETCH_TIMEOUT_S),
        "--request-timeout",
        "30",
    ]


@pytest.fixture(scope="package")
def _real_rel_server(shared_engine: SharedEngine, image_host: str) -> Iterator[RunningServer]:
    running = shared_engine.frontend("reliability", *_rel_args(image_host))
    yield running
    running.stop()


@pytest.fixture(scope="package")
def _fake_rel_server(
    tmp_path_factory: pytest.TempPathFactory, image_host: str
) -> Iterator[InProcessServer]:
    log_path = tmp_path_factory.mktemp("reliability-fake") / "server.log"
    running = start_fake_server(log_path, *ENGINE_ARGS, *_rel_args(image_host))
    yield running
    running.stop()


@pytest.fixture
def rel_server(request: pytest.FixtureRequest) -> RunningServer | InProcessServer:
    """The suite's server: a front end of the shared engine (e2e) or in process on the fake."""
    return pick(request, "_real_rel_server", "_fake_rel_server")


@pytest.fixture
def target(rel_server: RunningServer, report: ReliabilityReport) -> Target:
    return Target(rel_server.base_url, KEY, report)
