"""What a call is, in the terms policy, scopes and logs use: block, method, op."""

from __future__ import annotations

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
