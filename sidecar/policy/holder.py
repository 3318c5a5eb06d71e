"""The policy currently in force, swapped atomically on reload.

The engine lives in one attribute. `current()` reads it and `replace()` assigns
a fully built new engine to it in one step, so a caller that took `current()`
once evaluates against one whole rule set, old or new, never a mix. An invalid
policy never gets this far (parsing fails first), so it never replaces a valid one;
loaders report it with `record_error()` instead.

Rate-limit buckets live in one RateBuckets shared by every engine this holder
builds: a reload keeps the buckets of rules it keeps (same name and key fields)
and drops the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from memsidecar.sidecar.policy.buckets import RateBuckets
from memsidecar.sidecar.policy.engine import MonotonicClock, PolicyEngine
from memsidecar.sidecar.policy.model import PolicySpec


@dataclass(frozen=True)
class PolicyStatus:
    version: str
    source: str
    # Wall-clock seconds when the current rule set was installed.
    loaded_at: float
    rules: int
    default_effect: str
    # Successful swaps since the holder was built (the first rule set is not counted).
    reloads: int
    # The last rejected policy's reason, cleared when a valid policy is installed or
    # the source again holds the rules in force.
    last_error: str | None
    last_error_at: float | None


class PolicyHolder:
    def __init__(
        self,
        spec: PolicySpec | None = None,
        *,
        source: str = "built-in default (allow everything)",
        clock: MonotonicClock = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._buckets = RateBuckets()
        self._engine = PolicyEngine(
            spec if spec is not None else PolicySpec(), clock, self._buckets
        )
        self._source = source
        self._loaded_at = wall_clock()
        self._reloads = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None

    def current(self) -> PolicyEngine:
        return self._engine

    @property
    def version(self) -> str:
        return self._engine.version

    @property
    def loaded_at(self) -> float:
        return self._loaded_at

    @property
    def source(self) -> str:
        return self._source

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def buckets(self) -> RateBuckets:
        return self._buckets

    def replace(self, spec: PolicySpec, source: str | None = None) -> bool:
        """Install `spec` (already validated) and clear the last error.

        Returns False, keeping the current engine as is, when `spec` equals the rule
        set in force (same version)."""
        self._last_error = None
        self._last_error_at = None
        if source is not None:
            self._source = source
        if spec.version() == self._engine.version:
            return False
        engine = PolicyEngine(spec, self._clock, self._buckets)
        self._buckets.retain(engine.rate_rule_keys())
        # The swap: one reference assignment.
        self._engine = engine
        self._loaded_at = self._wall_clock()
        self._reloads += 1
        return True

    def confirm(self) -> None:
        """The source holds the rules in force again: clear the last error."""
        self._last_error = None
        self._last_error_at = None

    def record_error(self, message: str) -> None:
        """A policy was rejected; the rules in force stay."""
        self._last_error = message
        self._last_error_at = self._wall_clock()

    def status(self) -> PolicyStatus:
        engine = self._engine
        return PolicyStatus(
            version=engine.version,
            source=self._source,
            loaded_at=self._loaded_at,
            rules=len(engine.spec.rules),
            default_effect=engine.spec.default_effect,
            reloads=self._reloads,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
        )
