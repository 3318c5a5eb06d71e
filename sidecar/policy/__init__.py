"""Access policy: ordered allow / deny / rate_limit / cap rules (DESIGN.md section 5).

- model: the rule schema (a policy file, or a MemoryPolicy spec) and parse_policy.
- engine: the pure evaluation: PolicyEngine.decide(PolicyRequest) -> Decision.
- holder: the rule set in force, swapped atomically.
- loader: a YAML file, hot-reloaded on change and on SIGHUP.
"""

from __future__ import annotations

from memsidecar.sidecar.policy.buckets import RateBuckets
from memsidecar.sidecar.policy.engine import ByteCap, Decision, PolicyEngine, PolicyRequest
from memsidecar.sidecar.policy.holder import PolicyHolder, PolicyStatus
from memsidecar.sidecar.policy.loader import (
    PolicyFileWatcher,
    ReloadResult,
    load_policy_file,
    load_policy_text,
)
from memsidecar.sidecar.policy.model import (
    Caps,
    Match,
    PolicyError,
    PolicySpec,
    Rate,
    Rule,
    parse_policy,
)

__all__ = [
    "ByteCap",
    "Caps",
    "Decision",
    "Match",
    "PolicyEngine",
    "PolicyError",
    "PolicyFileWatcher",
    "PolicyHolder",
    "PolicyRequest",
    "PolicySpec",
    "PolicyStatus",
    "Rate",
    "RateBuckets",
    "ReloadResult",
    "Rule",
    "load_policy_file",
    "load_policy_text",
    "parse_policy",
]
