"""docs/observability.md stays true: its configs load, its sample log lines have the
fields a real sidecar writes, and the metric names it lists exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from memsidecar.client.errors import PermissionDeniedError
from memsidecar.sidecar.config import load_config
from memsidecar.sidecar.observability.settings import ObservabilitySettings
from memsidecar.sidecar.policy.loader import load_policy_text
from tests.sidecar.observability.support import access_lines, observed_overrides, scrape
from tests.support import REPO, running_sidecar

DOC = (REPO / "docs" / "observability.md").read_text()


def fenced(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", DOC, re.MULTILINE | re.DOTALL)


def test_yaml_examples_are_valid_configs(tmp_path: Path) -> None:
    blocks = fenced("yaml")
    assert len(blocks) >= 2
    for i, text in enumerate(blocks):
        path = tmp_path / f"config-{i}.yaml"
        path.write_text(text)
        load_config(path)
    # The first example shows every field with its default.
    path = tmp_path / "config-0.yaml"
    assert load_config(path).observability == ObservabilitySettings()


async def test_sample_log_lines_match_a_real_sidecar(tmp_path: Path) -> None:
    documented = [json.loads(line) for line in fenced("json")[0].splitlines() if line]
    overrides = observed_overrides(tmp_path, **{"observability.tracing.exporter": "stdout"})
    async with running_sidecar(overrides) as (sidecar, client):
        policy = """\
defaultEffect: allow
rules:
  - name: prod-is-read-only
    effect: deny
    match: {namespaces: [prod], ops: [put]}
"""
        sidecar.policy.replace(load_policy_text(policy, "doc"))
        await client.kv.put("scratch", "plan", {"step": 1})
        with pytest.raises(PermissionDeniedError):
            await client.kv.put("prod", "plan", 1)
    written = access_lines(tmp_path / "access.log")
    assert [list(line) for line in written] == [list(line) for line in documented]
    for doc_line, real in zip(documented, written, strict=True):
        for field in ("event", "peer", "block", "method", "op", "namespace", "code", "error"):
            assert doc_line.get(field) == real.get(field)
    section = DOC[DOC.index("## Access log") :]
    section = section[: section.index("\n## ")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    listed = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    for line in written:
        assert set(line) <= listed


async def test_listed_metrics_exist(tmp_path: Path) -> None:
    names = set(re.findall(r"^\| `(memsidecar_\w+)`", DOC, re.MULTILINE))
    assert len(names) == 6
    async with running_sidecar(observed_overrides(tmp_path)) as (sidecar, client):
        await client.kv.put("notes", "k", 1)
        m = await scrape(sidecar)
    for name in names:
        assert f"# TYPE {name} " in m.text, name
