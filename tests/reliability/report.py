"""The figures the reliability suite reports at the end (and docs/development/reliability.md
quotes)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

REPORT_KEY = pytest.StashKey["ReliabilityReport"]()


@dataclass
class ReliabilityReport:
    mode: str = "short"
    cases: int = 0  # hostile-input corpus cases run
    requests: int = 0  # HTTP requests the suite sent, all tests together
    server_errors: int = 0  # 5xx answers seen (every one is a failure)
    schema_examples: int = 0  # schemathesis requests
    soak_requests: int = 0
    soak_disconnects: int = 0
    soak_seconds: float = 0.0
    rss_drift_pct: float | None = None  # API process RSS, after warm-up to the soak's end
    fd_drift: int | None = None
    worst_health_s: float = 0.0  # slowest /health answer while any test ran
    worst_health_where: str = ""
    worst_health_by_test: dict[str, float] = field(default_factory=dict)  # "case", "the soak"..
    engine_death: dict[str, float] = field(default_factory=dict)  # seconds after the kill
    notes: list[str] = field(default_factory=list)

    def health(self, seconds: float, where: str) -> None:
        test = "hostile cases" if where.startswith("case ") else where
        self.worst_health_by_test[test] = max(seconds, self.worst_health_by_test.get(test, 0.0))
        if seconds > self.worst_health_s:
            self.worst_health_s, self.worst_health_where = seconds, where

    def lines(self) -> list[str]:
        rss = "n/a" if self.rss_drift_pct is None else f"{self.rss_drift_pct:+.1f}%"
        fds = "n/a" if self.fd_drift is None else f"{self.fd_drift:+d}"
        death = ", ".join(f"{k} {v:.2f} s" for k, v in self.engine_death.items()) or "n/a"
        return [
            f"mode: {self.mode}",
            f"hostile cases: {self.cases}",
            f"requests: {self.requests} (schemathesis {self.schema_examples}, "
            f"soak {self.soak_requests} in {self.soak_seconds:.0f} s with "
            f"{self.soak_disconnects} mid-stream disconnects)",
            f"5xx answers: {self.server_errors}",
            f"API RSS drift after warm-up: {rss}; open fds drift: {fds}",
            f"worst /health latency: {self.worst_health_s:.3f} s ({self.worst_health_where})",
            "worst /health latency by test: "
            + ", ".join(f"{k} {v:.3f} s" for k, v in self.worst_health_by_test.items()),
            f"engine core killed: {death}",
            *self.notes,
        ]
