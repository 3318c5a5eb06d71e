"""The repository layout keeps `memsidecar.*` importable without shadowing the stdlib."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO


def test_top_level_operator_folder_does_not_shadow_stdlib_operator() -> None:
    # The repo root is on sys.path for tests and for `python` started in the checkout;
    # operator/ is a namespace portion (no __init__.py), so the stdlib module wins.
    assert not (REPO / "operator" / "__init__.py").exists()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import operator, memsidecar.operator.main; print(operator.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert str(REPO) not in result.stdout


def test_memsidecar_maps_the_component_folders() -> None:
    import memsidecar.sidecar.server
    import memsidecar.webhooks.injection

    assert memsidecar.sidecar.server.__file__.startswith(str(REPO / "memsidecar" / "sidecar"))
    assert memsidecar.webhooks.injection.__file__.startswith(str(REPO / "memsidecar" / "webhooks"))
