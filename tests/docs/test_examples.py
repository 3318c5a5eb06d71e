"""Every ```python block in README.md and docs/ runs against a real sidecar process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import REPO, SidecarProcess, sidecar_process

FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _examples() -> list[tuple[str, str]]:
    found = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        for i, match in enumerate(FENCE.finditer(page.read_text())):
            found.append((f"{page.relative_to(REPO)}#{i + 1}", match.group(1)))
    return found


EXAMPLES = _examples()


@pytest.fixture(scope="module")
def sidecar() -> Iterator[SidecarProcess]:
    with sidecar_process() as proc:
        yield proc


@pytest.mark.parametrize(("where", "code"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_doc_example_runs(sidecar: SidecarProcess, where: str, code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MEMSIDECAR_SOCKET": str(sidecar.socket)},
        cwd=REPO,
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"


def test_docs_have_examples() -> None:
    assert len(EXAMPLES) >= 1
