"""A client for the reliability server that counts what it sends and watches /health while it
waits: every request's status goes into the report, every 5xx is counted."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from tests.reliability.report import ReliabilityReport

T = TypeVar("T")
HEALTH_BOUND_S = 1.0  # the bound: /health answers within 1 s, whatever else runs
# One TLS context for every client: httpx loads the CA bundle for each new client otherwise
# (about 25 ms), while each request here gets a new client so that no case shares a connection.
TLS = ssl.create_default_context()


@dataclass
class Target:
    base_url: str
    key: str
    report: ReliabilityReport

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def count(self, status: int, expected: int | None = None) -> None:
        """Count a request; a 5xx is a server error unless the test asked for that status."""
        self.report.requests += 1
        if status >= 500 and status != expected:
            self.report.server_errors += 1

    def send(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> httpx.Response:
        with httpx.Client(base_url=self.base_url, timeout=timeout, verify=TLS) as http:
            response = http.request(method, path, content=content, json=json, headers=headers)
        self.count(response.status_code)
        return response

    def chat(self, body: dict, timeout: float = 120) -> httpx.Response:
        return self.send(
            "POST", "/v1/chat/completions", json=body, headers=self.auth(), timeout=timeout
        )

    def health_latency(self, http: httpx.Client) -> float:
        started = time.perf_counter()
        try:
            http.get("/health", timeout=10)
        except httpx.HTTPError:
            return 10.0
        return time.perf_counter() - started

    def while_watching_health(self, work: Callable[[], T], where: str) -> tuple[T, float]:
        """Run `work` in a thread while this one polls /health; the worst latency seen (at
        least one poll, even when `work` is quicker than a poll)."""
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["result"] = work()
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                box["error"] = exc

        worker = threading.Thread(target=run, daemon=True)
        worst = 0.0
        with httpx.Client(base_url=self.base_url, verify=TLS) as http:
            worker.start()
            while True:
                worst = max(worst, self.health_latency(http))
                if not worker.is_alive():
                    break
                worker.join(0.05)  # the next poll in 50 ms, or at once when the work is done
        worker.join()
        self.report.health(worst, where)
        if "error" in box:
            raise box["error"]
        return box["result"], worst
