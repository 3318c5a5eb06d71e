"""Status conditions in the metav1.Condition shape, merged so that re-running a
reconcile on the same input writes nothing.

A condition is `{type, status, reason, message, lastTransitionTime, observedGeneration}`.
`lastTransitionTime` changes only when `status` flips; reason, message and
observedGeneration are updated in place. Besides the types the operator owns
(Ready, BackendReachable, Migrated), it writes the kstatus "abnormal-true" types
`Reconciling` (working on it, e.g. waiting for a backend) and `Stalled` (cannot
progress until someone changes something, e.g. an invalid spec) only while they are
True, so tools that read kstatus (Flux, `kubectl wait`, cli-utils) see the same thing
`Ready` says.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

JSON = dict[str, Any]
Status = Literal["True", "False", "Unknown"]

READY = "Ready"
BACKEND_REACHABLE = "BackendReachable"
MIGRATED = "Migrated"
RECONCILING = "Reconciling"
STALLED = "Stalled"

# What the CRD schema accepts for `reason`; anything else would make the status patch fail.
REASON_RE = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
MAX_MESSAGE = 2048

Clock = Callable[[], datetime.datetime]


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def timestamp(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with second precision, as the API server writes metav1.Time."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def shorten(message: str, limit: int = MAX_MESSAGE) -> str:
    message = message.strip()
    return message if len(message) <= limit else message[: limit - 1] + "…"


@dataclass(frozen=True)
class Condition:
    """The desired state of one condition (without its timestamps)."""

    type: str
    status: Status
    reason: str
    message: str = ""

    def __post_init__(self) -> None:
        if not REASON_RE.match(self.reason):
            raise ValueError(f"condition reason {self.reason!r} is not CamelCase")

    @property
    def true(self) -> bool:
        return self.status == "True"


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for condition in conditions or ():
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.get("status") == "True"


def merge(
    existing: Sequence[Mapping[str, Any]] | None,
    desired: Sequence[Condition | str],
    *,
    generation: int,
    now: datetime.datetime,
    owned: Iterable[str] = (),
) -> list[JSON]:
    """The conditions list to write, in the order of `desired`.

    A Condition in `desired` is written with the given status, reason and message and
    this generation; it keeps the existing lastTransitionTime when its status is
    unchanged. A plain type name in `desired` copies the existing condition of that type
    unchanged (the caller chose not to recompute it), or nothing when there is none.
    Types in `owned` not named in `desired` are dropped; conditions of other types
    (someone else's) are kept, after ours.
    """
    stamp = timestamp(now)
    out: list[JSON] = []
    named: set[str] = set()
    for item in desired:
        if isinstance(item, str):
            named.add(item)
            previous = find(existing, item)
            if previous is not None:
                out.append(dict(previous))
            continue
        named.add(item.type)
        previous = find(existing, item.type)
        transition = stamp
        if previous is not None and previous.get("status") == item.status:
            transition = str(previous.get("lastTransitionTime") or stamp)
        out.append(
            {
                "type": item.type,
                "status": item.status,
                "observedGeneration": generation,
                "lastTransitionTime": transition,
                "reason": item.reason,
                "message": shorten(item.message),
            }
        )
    ours = named | set(owned)
    for condition in existing or ():
        if condition.get("type") not in ours:
            out.append(dict(condition))
    return out


def changed(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether writing `desired` (a status fragment) would change `current`."""
    current = current or {}
    return any(current.get(key) != value for key, value in desired.items())
