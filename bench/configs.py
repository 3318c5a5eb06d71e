"""Which drivers a run measures, and the sidecar configurations that hold them.

Every driver registered in sidecar/blocks/<block>/registry.py whose options the bench
knows how to fill is measured; a newly registered database or S3 driver joins the run
without a change here. Configuration k puts each block on its k-th measured driver, so a
run starts one sidecar per configuration (usually two: in-process drivers, and the
Postgres / pgvector / S3 backends)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from bench.env import S3_BUCKET, Bench

# Measured in this order (in-process first); the artifact block's memory driver keeps
# content in RAM, which nobody would pick instead of disk or S3, so it is left out.
DRIVER_ORDER = ("memory", "localfs", "postgres", "pgvector", "s3")
SKIPPED = {("artifact", "memory")}
BLOCKS = ("kv", "episodic", "semantic", "artifact")


def registered(block: str) -> list[str]:
    """Driver names in sidecar/blocks/<block>/registry.py (DRIVERS)."""
    module = importlib.import_module(f"memsidecar.sidecar.blocks.{block}.registry")
    return list(module.DRIVERS.names)


def driver_options(bench: Bench, block: str, driver: str) -> dict[str, Any] | None:
    """Options for a driver on the test ground, or None for a driver the bench cannot fill."""
    if driver in ("memory",):
        return {}
    if driver == "localfs":
        return None  # the root is set per sidecar process (bench.env.sidecar_process)
    if driver in ("postgres", "pgvector"):
        return {"dsn": bench.services.pg_dsn}
    if driver == "s3":
        return {
            "endpoint": bench.services.s3_endpoint,
            "region": bench.services.s3_env.get("MEMSIDECAR_S3_REGION", "us-east-1"),
            "bucket": S3_BUCKET,
            "prefix": f"run-{bench.run_id}/",
            "access_key_env": "MEMSIDECAR_S3_ACCESS_KEY",
            "secret_key_env": "MEMSIDECAR_S3_SECRET_KEY",
            "create_bucket": True,
        }
    raise KeyError(driver)


def measured_drivers(block: str) -> tuple[list[str], list[str]]:
    """(drivers to measure in DRIVER_ORDER, registered drivers the bench leaves out)."""
    names = registered(block)
    measured = [d for d in DRIVER_ORDER if d in names and (block, d) not in SKIPPED]
    left_out = [d for d in names if d not in measured]
    return measured, left_out


@dataclass
class Configuration:
    name: str
    # block -> driver measured in this configuration
    drivers: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_database(self) -> bool:
        return any(d in ("postgres", "pgvector") for d in self.drivers.values())


def configurations(bench: Bench) -> list[Configuration]:
    per_block = {block: measured_drivers(block)[0] for block in BLOCKS}
    count = max((len(v) for v in per_block.values()), default=0)
    configs: list[Configuration] = []
    for k in range(count):
        drivers = {block: names[k] for block, names in per_block.items() if len(names) > k}
        overrides: dict[str, Any] = {
            "identity.tenant": bench.tenant,
            # Searches send 384-dimension vectors: the namespace's embedder must agree.
            "blocks.semantic.embedders": {
                "fake": {"type": "fake", "dimension": bench.settings.semantic_dim}
            },
        }
        for block, driver in drivers.items():
            overrides[f"blocks.{block}.driver"] = driver
            options = driver_options(bench, block, driver)
            if options is not None:
                overrides[f"blocks.{block}.options"] = options
        name = "+".join(sorted(set(drivers.values()), key=DRIVER_ORDER.index))
        configs.append(Configuration(name, drivers, overrides))
    return configs


def left_out_notes() -> list[str]:
    notes = []
    for block in BLOCKS:
        _, left_out = measured_drivers(block)
        for driver in left_out:
            reason = (
                "content held in RAM"
                if (block, driver) in SKIPPED
                else "the bench does not know its options"
            )
            notes.append(f"{block} driver {driver!r} is registered but not measured ({reason})")
    return notes
