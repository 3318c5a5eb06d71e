"""The benchmark harness (bench/): its pure parts, and a smoke run of `python -m bench
--quick` against the real test ground. Timings are never asserted, only the shape of
what a run produces."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.configs import BLOCKS, measured_drivers
from bench.env import config_env
from bench.load import percentile
from bench.profile import parse_collapsed
from bench.results import Row, Table, render
from tests.support import REPO

SECTIONS = {"kv", "semantic", "episodic", "artifact", "footprint", "webhook"}


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 99) == 99.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_ratio_and_verdict_follow_the_direction() -> None:
    faster = Row("kv", "get", "ops/s", 200.0, 100.0, "redis", True)
    slower = Row("kv", "get p50", "µs", 200.0, 100.0, "redis", False)
    missing = Row("webhook", "served", "µs", None, 5.0, "n/a", False)
    assert faster.ratio == slower.ratio == 2.0
    assert (faster.verdict, slower.verdict, missing.verdict) == ("better", "worse", "")
    assert missing.ratio is None
    text = render(Table(rows=[faster, slower, missing]))
    assert "2.00x +" in text and "2.00x -" in text and "[kv]" in text and "[webhook]" in text


def test_config_env_uses_the_sidecars_env_names() -> None:
    env = config_env({"blocks.kv.driver": "postgres", "blocks.kv.options": {"dsn": "x"}})
    assert env == {
        "MEMSIDECAR_BLOCKS__KV__DRIVER": "postgres",
        "MEMSIDECAR_BLOCKS__KV__OPTIONS": '{"dsn": "x"}',
    }


def test_collapsed_stacks_are_counted_by_own_and_inclusive_time() -> None:
    samples = parse_collapsed(
        "process 1:python;main (m.py:1);Handle._run (asyncio/events.py:80) 6\n"
        "process 1:python;main (m.py:1);AccessLog.write (observability/access_log.py:9) 4\n"
        "garbage\n"
    )
    assert samples.total == 10
    assert samples.own["Handle._run (asyncio/events.py)"] == 6
    assert samples.inclusive["main (m.py)"] == 10
    assert samples.areas["access log / logging"] == 4


@pytest.mark.integration
def test_quick_run_prints_and_writes_one_table(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--quiet", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "ratio = ours / reference" in result.stdout
    header = result.stdout.splitlines()[0].split()
    assert header[:5] == ["what", "unit", "ours", "reference", "ratio"]

    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["schema"] == "memsidecar-bench/1"
    assert data["machine"]["nproc"] >= 1
    assert data["settings"]["quick"] is True
    rows = data["rows"]
    assert {row["section"] for row in rows} == SECTIONS
    for row in rows:
        assert set(row) >= {"section", "what", "unit", "ours", "reference", "ratio", "better"}
        for key in ("ours", "reference"):
            value = row[key]
            assert value is None or (math.isfinite(value) and value >= 0), row
        if row["ours"] is not None and row["reference"]:
            assert row["ratio"] == pytest.approx(row["ours"] / row["reference"])
        if row["unit"] == "fraction":
            assert 0 <= row["ours"] <= 1 and 0 <= row["reference"] <= 1, row
    # Every driver the registries hold (and the bench can configure) has its rows.
    for block in BLOCKS:
        for driver in measured_drivers(block)[0]:
            assert any(f"[{driver}]" in r["what"] for r in rows if r["section"] == block), (
                block,
                driver,
            )
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "latest.md").read_text().startswith("| section | what |")
    assert list(tmp_path.glob("results-*.json"))
