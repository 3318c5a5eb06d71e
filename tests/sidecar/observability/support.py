"""Helpers for the observability tests: scrape /metrics, read the access log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from memsidecar.sidecar.observability.core import Observability
from memsidecar.sidecar.server import Sidecar


def observability(sidecar: Sidecar) -> Observability:
    assert sidecar.observability is not None
    return sidecar.observability


def metrics_url(sidecar: Sidecar) -> str:
    server = observability(sidecar).metrics_server
    assert server is not None, "metrics are off"
    return server.url


async def scrape(sidecar: Sidecar) -> Metrics:
    async with (
        aiohttp.ClientSession() as http,
        http.get(metrics_url(sidecar), timeout=aiohttp.ClientTimeout(total=5)) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return Metrics(await response.text())


class Metrics:
    """A parsed exposition: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples.append((sample.name, dict(sample.labels), sample.value))

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels` (0 if none)."""
        return sum(
            v
            for n, have, v in self.samples
            if n == name and all(have.get(k) == want for k, want in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            n == name and all(have.get(k) == want for k, want in labels.items())
            for n, have, _ in self.samples
        )

    def labels(self, name: str) -> list[dict[str, str]]:
        return [have for n, have, _ in self.samples if n == name]


def access_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def observed_overrides(tmp: Path, **extra: Any) -> dict[str, Any]:
    """A sidecar with metrics on a free loopback port and the access log in a file."""
    return {
        "observability.metrics.listen": "127.0.0.1:0",
        "observability.access_log.stream": str(tmp / "access.log"),
        **extra,
    }
