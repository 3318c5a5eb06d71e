"""docs/gateway.md: every ```sh example runs with curl against a real gateway and prints what
its `#>` lines show; the config example is a valid sidecar config."""

from __future__ import annotations

import asyncio
import os
import re
import shutil

import pytest
import yaml

from memsidecar.sidecar.config import SidecarConfig
from tests.sidecar.gateway.conftest import Gateway
from tests.support import REPO

DOC = REPO / "docs" / "gateway.md"
SH = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
YAML = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
TOOLS = ("bash", "curl", "jq", "base64")


def test_the_config_example_is_valid() -> None:
    (block,) = YAML.findall(DOC.read_text())
    config = SidecarConfig.model_validate(yaml.safe_load(block))
    assert config.listen.http == "127.0.0.1:8080" and config.auth.keys


@pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in TOOLS),
    reason=f"the shell examples need {', '.join(TOOLS)}",
)
async def test_shell_examples_run_and_show_what_they_say(gateway: Gateway) -> None:
    blocks = SH.findall(DOC.read_text())
    assert len(blocks) >= 10
    env = {**os.environ, "MEMSIDECAR_HTTP": gateway.url, "TOKEN": gateway.token}
    for i, block in enumerate(blocks, 1):
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            block,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        where = f"docs/gateway.md sh block {i}:\n{block}\nstdout:\n{out.decode()}\n{err.decode()}"
        assert proc.returncode == 0, where
        for expected in re.findall(r"^#> (.*)$", block, re.MULTILINE):
            assert expected in out.decode(), f"missing {expected!r} in {where}"
