"""MemoryPolicy reconciliation: validate the rules with the sidecar's own parser, and
report how many sidecars run them.

The counting contract with the sidecar (sidecar/policy/kubernetes.py, docs/policy.md):

- Each injected sidecar records what it has in force on its own Pod, in the
  annotation `memsidecar.io/policy`: a JSON object mapping the name of each
  MemoryPolicy in force to the `metadata.generation` it loaded, as a string, e.g.
  `{"10-baseline": "3", "50-planners": "1"}`. A generation whose rules the sidecar
  rejected is never recorded (it keeps the older one in force).
- The operator counts, per policy, the injected pods (`memsidecar.io/status:
  injected`, not finished) in the policy's namespace that its podSelector selects
  (`status.sidecarsSelected`), and those whose annotation names this policy with its
  current `metadata.generation` (`status.sidecarsLoaded`).

`status.version` is the content hash of the rules in force (the version the sidecar's
policy engine logs and reports in its metrics): the current rules when they are valid;
while they are invalid, the last valid ones, which the sidecars keep enforcing.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from memsidecar.operator import conditions as cond
from memsidecar.operator.conditions import Clock, Condition
from memsidecar.operator.kube import Kube, group_path
from memsidecar.operator.stores import EventSink
from memsidecar.sidecar.policy.model import PolicyError, parse_policy
from memsidecar.webhooks.contract import (
    ANNOTATION_STATUS,
    GROUP,
    POLICY_PLURAL,
    STATUS_INJECTED,
    VERSION,
)

JSON = dict[str, Any]

# Written by each sidecar on its own Pod: JSON {"<policy name>": "<generation>"}.
ANNOTATION_POLICY = "memsidecar.io/policy"
OWNED_TYPES = (cond.READY, cond.STALLED)


def policy_path(namespace: str, name: str | None = None) -> str:
    return group_path(GROUP, VERSION, POLICY_PLURAL, namespace, name)


# --- pure parts ---------------------------------------------------------------------------


def policy_rules(policy: Mapping[str, Any]) -> JSON:
    """The part of a MemoryPolicy's spec that is a policy file (everything but podSelector)."""
    spec = policy.get("spec") or {}
    return {k: v for k, v in spec.items() if k != "podSelector"}


def check_policy(policy: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """(version, []) for valid rules, (None, problems) otherwise."""
    metadata = policy.get("metadata") or {}
    origin = f"MemoryPolicy {metadata.get('namespace', '')}/{metadata.get('name', '')}"
    try:
        spec = parse_policy(policy_rules(policy), origin)
    except PolicyError as exc:
        return None, [f"spec.{p}" if p.startswith("rules[") else p for p in exc.problems]
    return spec.version(), []


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics; an unset or empty selector selects everything."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.get("matchExpressions") or []:
        key = requirement.get("key")
        operator = requirement.get("operator")
        values = requirement.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def loaded_generations(annotations: Mapping[str, Any] | None) -> dict[str, str]:
    """The sidecar's report (annotation memsidecar.io/policy): policy name → generation
    loaded; {} if absent or unreadable."""
    raw = (annotations or {}).get(ANNOTATION_POLICY)
    if not isinstance(raw, str):
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str | int)}


@dataclass(frozen=True)
class PodInfo:
    """What the operator keeps of an injected pod (from its watch events)."""

    name: str
    labels: tuple[tuple[str, str], ...]
    loaded: tuple[tuple[str, str], ...]

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def loaded_map(self) -> dict[str, str]:
        return dict(self.loaded)


def pod_info(pod: Mapping[str, Any]) -> PodInfo | None:
    """The pod's entry, or None when it has no running sidecar to count."""
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    if annotations.get(ANNOTATION_STATUS) != STATUS_INJECTED:
        return None
    if metadata.get("deletionTimestamp"):
        return None
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return None
    return PodInfo(
        name=str(metadata.get("name", "")),
        labels=tuple(sorted((str(k), str(v)) for k, v in (metadata.get("labels") or {}).items())),
        loaded=tuple(sorted(loaded_generations(annotations).items())),
    )


def count(
    policy_name: str,
    selector: Mapping[str, Any] | None,
    generation: int,
    pods: Iterable[PodInfo],
) -> tuple[int, int]:
    """(selected, loaded): injected pods the selector picks, and those that report having
    loaded this `generation` of the policy."""
    selected = loaded = 0
    for pod in pods:
        if not selector_matches(selector, pod.label_map):
            continue
        selected += 1
        if pod.loaded_map.get(policy_name) == str(generation):
            loaded += 1
    return selected, loaded


def policy_status(
    policy: Mapping[str, Any],
    pods: Iterable[PodInfo],
    now: datetime.datetime,
) -> JSON:
    """The status fragment to write for `policy` (pure)."""
    metadata = policy.get("metadata") or {}
    name = str(metadata.get("name", ""))
    generation = int(metadata.get("generation") or 0)
    current = policy.get("status") or {}
    version, problems = check_policy(policy)
    in_force = version or current.get("version")
    desired: list[Condition | str]
    if version is not None:
        ready = Condition(
            cond.READY,
            "True",
            "Valid",
            f"rules valid (version {version}); selected sidecars apply them within seconds",
        )
        desired = [ready]
    else:
        keeping = (
            f"; sidecars keep enforcing the previous rules (version {in_force})"
            if in_force
            else "; sidecars have no rules from it"
        )
        ready = Condition(
            cond.READY, "False", "InvalidRules", "invalid rules: " + "; ".join(problems) + keeping
        )
        desired = [ready, Condition(cond.STALLED, "True", ready.reason, ready.message)]
    selector = (policy.get("spec") or {}).get("podSelector")
    selected, loaded = count(name, selector, generation, pods)
    status: JSON = {
        "observedGeneration": generation,
        "conditions": cond.merge(
            current.get("conditions"), desired, generation=generation, now=now, owned=OWNED_TYPES
        ),
        "reason": ready.reason,
        "message": "" if ready.true else cond.shorten(ready.message),
        "sidecarsSelected": selected,
        "sidecarsLoaded": loaded,
    }
    if in_force:
        status["version"] = in_force
    return status


# --- the reconciler -----------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyOutcome:
    ready: bool
    version: str | None
    selected: int
    loaded: int
    status_written: bool


class PolicyReconciler:
    def __init__(self, kube: Kube, *, events: EventSink, clock: Clock = cond.utcnow) -> None:
        self.kube = kube
        self.events = events
        self.clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop(f"{namespace}/{name}", None)

    def stale(self, policy: Mapping[str, Any], pods: Iterable[PodInfo]) -> bool:
        """Whether `policy`'s status (as last seen) differs from what it should say."""
        desired = policy_status(policy, pods, self.clock())
        return cond.changed(policy.get("status"), desired)

    async def reconcile(
        self, namespace: str, name: str, pods: Iterable[PodInfo]
    ) -> PolicyOutcome | None:
        """Validate and recount from a fresh read; None when the policy is gone."""
        pods = list(pods)
        async with self._locks.setdefault(f"{namespace}/{name}", asyncio.Lock()):
            body = await self.kube.get(policy_path(namespace, name))
            if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                return None
            status = policy_status(body, pods, self.clock())
            written = False
            if cond.changed(body.get("status"), status):
                await self.kube.merge_patch(
                    policy_path(namespace, name) + "/status", {"status": status}
                )
                written = True
            before = cond.find((body.get("status") or {}).get("conditions"), cond.READY)
            after = cond.find(status["conditions"], cond.READY) or {}
            if before is None or before.get("status") != after.get("status"):
                kind = "Normal" if after.get("status") == "True" else "Warning"
                self.events(body, kind, str(after.get("reason")), str(after.get("message")))
            return PolicyOutcome(
                ready=after.get("status") == "True",
                version=status.get("version"),
                selected=int(status["sidecarsSelected"]),
                loaded=int(status["sidecarsLoaded"]),
                status_written=written,
            )
