"""What a call is, in the terms policy, scopes and logs use: block, method, op."""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass

_METHOD_RE = re.compile(r"^/memsidecar\.(\w+)\.v1\.(\w+)/(\w+)$")


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass(frozen=True)
class CallInfo:
    """The parts of a method path policy and logs speak about."""

    block: str
    method: str
    # "kv.put", "episodic.list_sessions", ...
    op: str


def parse_method(path: str) -> CallInfo | None:
    m = _METHOD_RE.match(path)
    if not m:
        return None
    block, _service, method = m.groups()
    return CallInfo(block=block, method=method, op=f"{block}.{snake(method)}")


BLOCKS: tuple[str, ...] = ("kv", "episodic", "semantic", "artifact", "lease", "session")


@functools.cache
def ops_by_block() -> dict[str, tuple[str, ...]]:
    """Every block's methods in op spelling ("list_sessions"), read from the wire API."""
    ops: dict[str, tuple[str, ...]] = {}
    for block in BLOCKS:
        module = importlib.import_module(f"memsidecar.{block}.v1.{block}_pb2")
        ops[block] = tuple(
            snake(method.name)
            for service in module.DESCRIPTOR.services_by_name.values()
            for method in service.methods
        )
    return ops
