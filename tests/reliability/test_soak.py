"""A bounded soak: several clients send a mix of text, image, streamed, n>1 and structured
requests, 20% of streams dropped after their first chunk and 10% hostile. After warm-up, no 5xx,
every completed answer well-formed, engine queues back to 0, API RSS within 10% and no fd
growth. The worst /health latency is reported; its 1 s bound is asserted for each hostile case
and for the biggest requests, not under a soak that saturates this machine's two cores."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.reliability.checks import assert_error_shape, assert_well_formed
from tests.reliability.client import Target
from tests.reliability.corpus import Case, chat, corpus
from tests.reliability.report import ReliabilityReport
from tests.utils.images import image_data_url, image_part
from tests.utils.server import RunningServer
from tests.utils.waiting import wait_for

# The engine under load: its queues (vLLM's metrics) drain, dropped streams abort in it, and
# real grammars constrain the structured answers.
pytestmark = pytest.mark.e2e

FINDING_SCHEMA = {
    "type": "object",
    "properties": {"finding": {"type": "string", "maxLength": 12}},
    "required": ["finding"],
}


class Soak:
    def __init__(self, target: Target, seed: int):
        self.target = target
        self.rng = random.Random(seed)
        self.hostile = [
            case
            for case in corpus(long=False)
            if case.build is None and not case.needs_fidelity and case.status >= 400
        ]
        self.images = [image_data_url(224, 160, seed=i) for i in range(4)]
        self.statuses: Counter[int] = Counter()
        self.disconnects = 0
        self.problems: list[str] = []
        self._lock = threading.Lock()

    def one(self, http: httpx.Client) -> None:
        roll = self.rng.random()
        try:
            if roll < 0.10:
                self.hostile_case(http, self.rng.choice(self.hostile))
            elif roll < 0.30:
                self.dropped_stream(http)
            else:
                self.completion(http, self.rng.choice(self.shapes()))
        except (AssertionError, httpx.HTTPError, ValueError) as exc:
            with self._lock:
                self.problems.append(f"{type(exc).__name__}: {str(exc)[:300]}")

    def shapes(self) -> list[Callable[[], dict]]:
        image = lambda: [image_part(self.rng.choice(self.images)), {"type": "text", "text": "?"}]  # noqa: E731
        return [
            lambda: chat(max_tokens=8),
            lambda: chat(max_tokens=8, stream=True),
            lambda: chat(max_tokens=6, stream=True, stream_options={"include_usage": True}),
            lambda: chat(messages=[{"role": "user", "content": image()}], max_tokens=4),
            lambda: chat(messages=[{"role": "user", "content": image()}], stream=True),
            lambda: chat(n=3, temperature=1.0, max_tokens=4),
            lambda: chat(n=2, temperature=0.7, max_tokens=4, stream=True),
            lambda: chat(logprobs=True, top_logprobs=3, max_tokens=3),
            lambda: chat(
                max_tokens=32,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "f", "schema": FINDING_SCHEMA},
                },
            ),
            lambda: chat(max_tokens=16, response_format={"type": "json_object"}),
        ]

    def record(self, status: int) -> None:
        self.target.count(status)
        with self._lock:
            self.statuses[status] += 1

    def completion(self, http: httpx.Client, shape: Callable[[], dict]) -> None:
        response = http.post("/v1/chat/completions", json=shape(), headers=self.target.auth())
        self.record(response.status_code)
        assert response.status_code == 200, response.text[:300]
        assert_well_formed(response)

    def dropped_stream(self, http: httpx.Client) -> None:
        body = chat(max_tokens=48, ignore_eos=True, stream=True)
        with http.stream(
            "POST", "/v1/chat/completions", json=body, headers=self.target.auth()
        ) as response:
            self.record(response.status_code)
            assert response.status_code == 200
            for i, _ in enumerate(response.iter_lines()):
                if i >= 2:
                    break
        with self._lock:
            self.disconnects += 1

    def hostile_case(self, http: httpx.Client, case: Case) -> None:
        response = http.request(
            case.method, case.path, content=case.content(), headers=case.headers
        )
        self.record(response.status_code)
        assert response.status_code == case.status, f"{case.id}: {response.text[:200]}"
        if case.status >= 400:
            assert_error_shape(response, case.code, case.param)

    def run(self, clients: int, seconds: float) -> None:
        stop = time.monotonic() + seconds

        def client(index: int) -> None:
            # no default headers: hostile cases choose theirs (some have no key)
            with httpx.Client(base_url=self.target.base_url, timeout=120) as http:
                while time.monotonic() < stop:
                    self.one(http)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def engine_queue(target: Target) -> float:
    text = httpx.get(f"{target.base_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in ("vllm:num_requests_running", "vllm:num_requests_waiting")
    )


def test_soak(
    target: Target, rel_server: RunningServer, report: ReliabilityReport, long: bool
) -> None:
    clients, warm_up_s, soak_s = (8, 30, 180) if long else (4, 10, 25)
    api = psutil.Process(rel_server.process.pid)
    soak = Soak(target, seed=11)
    soak.run(clients, warm_up_s)
    assert wait_for(lambda: engine_queue(target) == 0, 15, interval=0.25)
    rss_before, fds_before = api.memory_info().rss, api.num_fds()
    requests_before = sum(soak.statuses.values())

    def timed() -> float:
        started = time.perf_counter()
        soak.run(clients, soak_s)
        return time.perf_counter() - started

    elapsed, _ = target.while_watching_health(timed, "the soak")
    assert wait_for(lambda: engine_queue(target) == 0, 15, interval=0.25), (
        "engine requests left behind"
    )
    wait_for(lambda: api.num_fds() <= fds_before, 15, interval=0.25)  # keep-alive sockets time out
    rss_after, fds_after = api.memory_info().rss, api.num_fds()

    report.soak_requests = sum(soak.statuses.values()) - requests_before
    report.soak_disconnects = soak.disconnects
    report.soak_seconds = elapsed
    report.rss_drift_pct = 100 * (rss_after - rss_before) / rss_before
    report.fd_drift = fds_after - fds_before
    report.notes.append(f"soak statuses: {json.dumps(dict(sorted(soak.statuses.items())))}")

    assert not soak.problems, "\n".join(soak.problems[:10])
    assert not [status for status in soak.statuses if status >= 500], soak.statuses
    assert soak.disconnects > 0 and report.soak_requests > 0
    assert report.rss_drift_pct < 10, f"API RSS grew {report.rss_drift_pct:.1f}%"
    assert report.fd_drift <= 0, f"{report.fd_drift} more open fds"
