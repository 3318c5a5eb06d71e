"""MemoryPolicy reconciliation: validate the rules with the sidecar's own parser, and
report how many sidecars run them.

The counting contract with the sidecar (sidecar/policy/kubernetes.py):

- A policy's **version** is `parse_policy(spec without podSelector).version()`: the
  content hash the sidecar's policy engine computes for the rules it loads. The
  operator writes it to `status.version`; sidecars compute it themselves from the
  object they watch, so nothing has to be read back.
- Each injected sidecar patches its own Pod's annotation
  `memsidecar.io/policy-versions` with a JSON object mapping the name of every
  MemoryPolicy in force in it to the version it loaded, e.g.
  `{"default-limits": "3f2a9c0d1e7b4a55"}` (strategic/merge patch of
  metadata.annotations on pods/<own name>).
- The operator counts, per policy, the injected pods (`memsidecar.io/status:
  injected`, not finished) in the policy's namespace that its podSelector selects
  (`status.sidecarsSelected`), and those whose annotation names this policy with
  `status.version` (`status.sidecarsLoaded`).

An invalid policy never replaces a valid one in the sidecars, so while it is invalid
`status.version` stays the version still in force, and the counts stay about it.
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

ANNOTATION_POLICY_VERSIONS = "memsidecar.io/policy-versions"
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


def loaded_versions(annotations: Mapping[str, Any] | None) -> dict[str, str]:
    """The sidecar's report (annotation memsidecar.io/policy-versions); {} if absent or bad."""
    raw = (annotations or {}).get(ANNOTATION_POLICY_VERSIONS)
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
    """What the operator keeps of an injected pod (a kopf index value)."""

    name: str
    labels: tuple[tuple[str, str], ...]
    versions: tuple[tuple[str, str], ...]

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def version_map(self) -> dict[str, str]:
        return dict(self.versions)


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
        versions=tuple(sorted(loaded_versions(annotations).items())),
    )


def count(
    policy_name: str,
    selector: Mapping[str, Any] | None,
    version: str | None,
    pods: Iterable[PodInfo],
) -> tuple[int, int]:
    """(selected, loaded): injected pods the selector picks, and those running `version`."""
    selected = loaded = 0
    for pod in pods:
        if not selector_matches(selector, pod.label_map):
            continue
        selected += 1
        if version is not None and pod.version_map.get(policy_name) == version:
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
            f"; sidecars keep running version {in_force}"
            if in_force
            else "; sidecars have no rules from it"
        )
        ready = Condition(
            cond.READY, "False", "InvalidRules", "invalid rules: " + "; ".join(problems) + keeping
        )
        desired = [ready, Condition(cond.STALLED, "True", ready.reason, ready.message)]
    selector = (policy.get("spec") or {}).get("podSelector")
    selected, loaded = count(name, selector, in_force, pods)
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
