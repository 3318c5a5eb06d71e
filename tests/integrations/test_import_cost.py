"""The integrations are extras: neither the core SDK nor the integrations package itself
imports a framework; only the integration module a user names does."""

from __future__ import annotations

import subprocess
import sys

import pytest

FRAMEWORKS = ("langgraph", "langchain_core", "mcp", "llama_index")


@pytest.mark.parametrize(
    "modules",
    [
        "memsidecar, memsidecar.client",
        "memsidecar.integrations, memsidecar.integrations.langgraph, memsidecar.integrations.mcp",
    ],
)
def test_import_pulls_in_no_framework(modules: str) -> None:
    code = (
        f"import sys, {modules}\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORKS!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert out == "[]", f"importing {modules} imported {out}"
