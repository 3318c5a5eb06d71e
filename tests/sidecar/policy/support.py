"""Helpers for the policy tests."""

from __future__ import annotations

import textwrap
from typing import Any

from memsidecar.sidecar.policy import PolicyRequest, PolicySpec, load_policy_text


class FakeMonotonic:
    """A monotonic clock tests move by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def spec(text: str) -> PolicySpec:
    return load_policy_text(textwrap.dedent(text), "test")


def req(**fields: Any) -> PolicyRequest:
    values: dict[str, Any] = {
        "tenant": "acme",
        "agent": "planner",
        "block": "kv",
        "namespace": "scratch",
        "op": "kv.put",
    }
    values.update(fields)
    if "op" in fields and "block" not in fields:
        values["block"] = values["op"].split(".", 1)[0]
    return PolicyRequest(**values)
