"""Drivers and embedders are registered by module path and imported on first use: every
registered path must resolve, and opening one driver must not import the others."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from memsidecar.sidecar.blocks.artifact.registry import DRIVERS as ARTIFACT_DRIVERS
from memsidecar.sidecar.blocks.episodic.registry import DRIVERS as EPISODIC_DRIVERS
from memsidecar.sidecar.blocks.kv.registry import DRIVERS as KV_DRIVERS
from memsidecar.sidecar.blocks.lease.registry import DRIVERS as LEASE_DRIVERS
from memsidecar.sidecar.blocks.registry import DriverRegistry, load_attribute
from memsidecar.sidecar.blocks.semantic.embedders import EMBEDDERS
from memsidecar.sidecar.blocks.semantic.registry import DRIVERS as SEMANTIC_DRIVERS
from memsidecar.sidecar.blocks.session.registry import DRIVERS as SESSION_DRIVERS
from memsidecar.sidecar.config import load_config
from tests.support import running_sidecar

REGISTRIES: list[DriverRegistry[Any]] = [
    KV_DRIVERS,
    EPISODIC_DRIVERS,
    SEMANTIC_DRIVERS,
    ARTIFACT_DRIVERS,
    LEASE_DRIVERS,
    SESSION_DRIVERS,
]


@pytest.mark.parametrize(
    ("registry", "name"),
    [(r, n) for r in REGISTRIES for n in r.names],
    ids=[f"{r.block}-{n}" for r in REGISTRIES for n in r.names],
)
def test_every_registered_driver_resolves(registry: DriverRegistry[Any], name: str) -> None:
    assert callable(load_attribute(registry._modules[name], "create"))
    if name in registry._migrating:
        assert registry.migrations(name), f"{registry.block}/{name} has no MIGRATIONS"


@pytest.mark.parametrize("kind", EMBEDDERS.types)
def test_every_registered_embedder_resolves(kind: str) -> None:
    assert callable(load_attribute(EMBEDDERS._modules[kind], "create"))


async def test_unknown_driver_names_the_available_ones() -> None:
    with pytest.raises(Exception, match=r"unknown driver 'redis'; available: memory, postgres"):
        async with running_sidecar({"blocks.kv.driver": "redis"}):
            pass


def test_the_embedded_default_imports_no_unused_backend() -> None:
    """The cold start pays only for what the config uses: no boto3, asyncpg, aiohttp,
    pyseto or PyJWT (metrics, the gateway and token keys are off by default)."""
    load_config(None, {})  # the default config itself is valid
    code = (
        "import asyncio, sys, tempfile\n"
        "from memsidecar.sidecar.config import load_config\n"
        "from memsidecar.sidecar.server import build_sidecar\n"
        "async def main():\n"
        "    tmp = tempfile.mkdtemp(dir='/tmp')\n"
        "    config = load_config(None, {'listen.socket': tmp + '/s.sock',\n"
        "        'blocks.artifact.options': {'root': tmp + '/a'}})\n"
        "    sidecar = await build_sidecar(config)\n"
        "    await sidecar.start()\n"
        "    await sidecar.stop()\n"
        "asyncio.run(main())\n"
        "unused = {'boto3', 'asyncpg', 'aiohttp', 'pyseto', 'jwt'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & unused))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()
    assert out.splitlines()[-1] == "[]", out
