"""The one table a run produces: rows of (what, our figure, the reference, ratio),
printed as text and written as JSON and as a PNG chart."""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = "memsidecar-bench/1"


@dataclass
class Row:
    section: str
    what: str
    unit: str
    ours: float | None
    reference: float | None
    # What the reference figure was measured on, e.g. "redis-py → redis-server (unix)".
    reference_name: str
    higher_is_better: bool
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """ours / reference (None when either is missing or the reference is 0)."""
        if self.ours is None or self.reference is None or self.reference == 0:
            return None
        return self.ours / self.reference

    @property
    def verdict(self) -> str:
        """ "better", "worse" or "" (no ratio), from the ratio and the direction."""
        ratio = self.ratio
        if ratio is None:
            return ""
        good = ratio >= 1 if self.higher_is_better else ratio <= 1
        return "better" if good else "worse"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["better"] = "higher" if self.higher_is_better else "lower"
        return data


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def machine(self) -> dict[str, Any]:
        return {
            "cores": os.cpu_count() or 0,
            "nproc": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.machine(),
        }

    def to_json(self, finished: datetime) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "started": self.started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "seconds": round((finished - self.started).total_seconds(), 1),
            "machine": self.machine(),
            "settings": self.settings,
            "notes": self.notes,
            "columns": ["section", "what", "unit", "ours", "reference", "reference_name", "ratio"],
            "rows": [row.to_json() for row in self.rows],
        }


def fmt(value: float | None) -> str:
    """Three significant figures, thousands separated; '-' for missing."""
    if value is None or math.isnan(value):
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def fmt_ratio(row: Row) -> str:
    ratio = row.ratio
    if ratio is None:
        return "-"
    text = f"{ratio:.2f}x" if ratio < 100 else f"{ratio:,.0f}x"
    return f"{text} {'+' if row.verdict == 'better' else '-'}"


def render(table: Table) -> str:
    """The text table: one line per row, grouped by section."""
    headers = ["what", "unit", "ours", "reference", "ratio", "reference is"]
    lines: list[list[str]] = []
    for row in table.rows:
        unit = f"{row.unit} {'↑' if row.higher_is_better else '↓'}"
        what = row.what + (f" ({row.note})" if row.note else "")
        lines.append(
            [what, unit, fmt(row.ours), fmt(row.reference), fmt_ratio(row), row.reference_name]
        )
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(headers)]
    right = {2, 3, 4}

    def cells(values: list[str]) -> str:
        out = [
            v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(out).rstrip()

    out = [cells(headers), cells(["-" * w for w in widths])]
    section = None
    for row, line in zip(table.rows, lines, strict=True):
        if row.section != section:
            if section is not None:
                out.append("")
            out.append(f"[{row.section}]")
            section = row.section
        out.append(cells(line))
    out.append("")
    out.append(
        "ratio = ours / reference; '+' = ours is better (↑ higher is better, ↓ lower is better)"
    )
    return "\n".join(out)


def render_markdown(table: Table) -> str:
    """The same table as Markdown (for docs/benchmarks.md)."""
    out = [
        "| section | what | unit | ours | reference | ratio | reference is |",
        "| --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for row in table.rows:
        unit = f"{row.unit} {'↑' if row.higher_is_better else '↓'}"
        what = row.what + (f" ({row.note})" if row.note else "")
        out.append(
            f"| {row.section} | {what} | {unit} | {fmt(row.ours)} | {fmt(row.reference)} | "
            f"{fmt_ratio(row)} | {row.reference_name} |"
        )
    return "\n".join(out)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def write_chart(table: Table, path: Path, title: str) -> None:
    """A horizontal bar per row: log2 of how many times better (right) or worse (left)
    ours is than the reference, whatever the unit's direction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in table.rows if row.ratio is not None and row.ratio > 0]
    labels = [_clip(f"{row.section}: {row.what}", 60) for row in rows]
    values: list[float] = []
    for row in rows:
        ratio = row.ratio or 1.0
        factor = ratio if row.higher_is_better else 1.0 / ratio
        values.append(math.log2(factor))
    height = max(3.0, 0.22 * len(rows) + 1.5)
    fig, ax = plt.subplots(figsize=(11, height))
    colors = ["#2e7d32" if v >= 0 else "#c62828" for v in values]
    positions = list(range(len(rows)))
    ax.barh(positions, values, color=colors)
    ax.set_yticks(positions, labels=labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    limit = max([1.0, *[abs(v) for v in values]])
    step = 1 if limit <= 5 else 2
    ticks = list(range(-step * math.ceil(limit / step), step * math.ceil(limit / step) + 1, step))
    ax.set_xticks(ticks, labels=[f"{2.0**t:g}x" if t >= 0 else f"1/{2.0**-t:g}x" for t in ticks])
    ax.set_xlabel("ours vs reference (right = ours better, left = ours worse; log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(table: Table, out_dir: Path, stamp: str) -> dict[str, Path]:
    """results-<stamp>.json/.png/.txt/.md plus latest.* copies; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    finished = datetime.now(UTC)
    machine = table.machine()
    title = (
        f"memsidecar benchmarks {table.started:%Y-%m-%d %H:%M} UTC, "
        f"{machine['nproc']} cores, Python {machine['python']}"
    )
    text = render(table)
    data = json.dumps(table.to_json(finished), indent=2) + "\n"
    paths: dict[str, Path] = {}
    for name in (f"results-{stamp}", "latest"):
        (out_dir / f"{name}.json").write_text(data)
        (out_dir / f"{name}.txt").write_text(title + "\n\n" + text + "\n")
        (out_dir / f"{name}.md").write_text(render_markdown(table) + "\n")
        write_chart(table, out_dir / f"{name}.png", title)
    paths["json"] = out_dir / f"results-{stamp}.json"
    paths["png"] = out_dir / f"results-{stamp}.png"
    paths["txt"] = out_dir / f"results-{stamp}.txt"
    paths["md"] = out_dir / f"results-{stamp}.md"
    return paths
