"""Scraping a live server's /metrics."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple], float]


def scrape(client: httpx.Client) -> Samples:
    """Every sample, keyed by (name, sorted label pairs)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(
        v
        for (sample_name, sample_labels), v in samples.items()
        if sample_name == name and set(labels.items()) <= set(sample_labels)
    )


def metric(base_url: str, name: str, **labels: str) -> float:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        return value(scrape(client), name, **labels)
