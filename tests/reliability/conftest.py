"""The reliability suite: hostile inputs, schemathesis, a bounded soak and faults, against one
server run as a hospital would (an API key, tight connection limits). Short by default (CI);
`--reliability-long` (or LINGSHU_RELIABILITY_LONG=1) runs the issue's full sizes. The figures
are printed at the end of the run.

The engine-death test kills this server's engine; it runs after every other test here, and a
test that needs the server after it gets a new one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
from tests.utils.server import Restartable, RunningServer, start_demo_server

LAST = "engine_death"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{LAST}: kills the reliability server; runs last")
    config.stash[REPORT_KEY] = ReliabilityReport()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move the engine-death test right after the last reliability test."""
    doomed = [item for item in items if item.get_closest_marker(LAST)]
    if not doomed:
        return
    rest = [item for item in items if item not in doomed]
    ours = [i for i, item in enumerate(rest) if "tests/reliability/" in item.nodeid]
    at = ours[-1] + 1 if ours else len(rest)
    items[:] = rest[:at] + doomed + rest[at:]


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


def _start_rel_server(tmp_path_factory: pytest.TempPathFactory, image_host: str) -> RunningServer:
    return start_demo_server(
        tmp_path_factory.mktemp("reliability") / "server.log",
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
    )


@pytest.fixture(scope="package")
def _rel_server(tmp_path_factory: pytest.TempPathFactory, image_host: str) -> Iterator[Restartable]:
    server = Restartable(lambda: _start_rel_server(tmp_path_factory, image_host))
    yield server
    server.stop()


@pytest.fixture
def rel_server(_rel_server: Restartable) -> RunningServer:
    """The suite's server; started again if the engine-death test ended it, so no test here
    depends on running before that one (which is still moved last, to save the restart)."""
    return _rel_server.get()


@pytest.fixture
def target(rel_server: RunningServer, report: ReliabilityReport) -> Target:
    return Target(rel_server.base_url, KEY, report)
