"""Token-bucket state for rate_limit rules, kept apart from the immutable rule set.

A bucket is identified by (rule name, the rule's key fields, the request's values
of those fields). Engines built from successive policies share one RateBuckets, so
a reload that keeps a rule (same name, same key fields) keeps its buckets; when the
rate or burst of a kept rule changes, each bucket keeps its tokens (capped at the
new burst) and refills at the new rate from then on.

Memory stays bounded by activity: a bucket that has refilled to its burst is the
same as a fresh one, so sweeps drop it. A sweep runs whenever the number of
buckets has doubled since the last one (at least SWEEP_MIN buckets), which keeps
the cost amortised O(1) per request.

Not thread-safe: use it from one event loop (each call is synchronous).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SWEEP_MIN = 1024
# Rounding slack so refills computed from float time reach whole tokens.
EPSILON = 1e-9

BucketId = tuple[str, tuple[str, ...], tuple[str, ...]]
RuleKey = tuple[str, tuple[str, ...]]


@dataclass
class _Bucket:
    tokens: float
    updated: float
    per_second: float
    burst: int

    def refill(self, now: float, per_second: float, burst: int) -> None:
        elapsed = max(0.0, now - self.updated)
        # Tokens earned so far accrue at the old rate; the new rate applies from now on.
        self.tokens = min(float(burst), self.tokens + elapsed * self.per_second)
        self.updated = max(self.updated, now)
        self.per_second = per_second
        self.burst = burst

    def full_at(self, now: float) -> bool:
        elapsed = max(0.0, now - self.updated)
        return self.tokens + elapsed * self.per_second >= self.burst - EPSILON


class RateBuckets:
    def __init__(self) -> None:
        self._buckets: dict[BucketId, _Bucket] = {}
        self._next_sweep = SWEEP_MIN

    def __len__(self) -> int:
        return len(self._buckets)

    def wait_seconds(self, bucket: BucketId, per_second: float, burst: int, now: float) -> float:
        """Seconds until the bucket holds one token (0.0 = a request may pass now).

        Refills the bucket to `now` but takes nothing."""
        state = self._buckets.get(bucket)
        if state is None:
            return 0.0
        state.refill(now, per_second, burst)
        if state.tokens >= 1.0 - EPSILON:
            return 0.0
        return (1.0 - state.tokens) / per_second

    def take(self, bucket: BucketId, per_second: float, burst: int, now: float) -> None:
        """Take one token; call only after wait_seconds returned 0.0 for the same `now`."""
        state = self._buckets.get(bucket)
        if state is None:
            if len(self._buckets) >= self._next_sweep:
                self.sweep(now)
            state = _Bucket(tokens=float(burst), updated=now, per_second=per_second, burst=burst)
            self._buckets[bucket] = state
        else:
            state.refill(now, per_second, burst)
        state.tokens = max(0.0, state.tokens - 1.0)

    def tokens(self, bucket: BucketId, now: float) -> float | None:
        """The bucket's tokens at `now` without changing it (None = no bucket: full)."""
        state = self._buckets.get(bucket)
        if state is None:
            return None
        elapsed = max(0.0, now - state.updated)
        return min(float(state.burst), state.tokens + elapsed * state.per_second)

    def sweep(self, now: float) -> int:
        """Drop buckets that are full again; returns how many were dropped."""
        full = [bucket for bucket, state in self._buckets.items() if state.full_at(now)]
        for bucket in full:
            del self._buckets[bucket]
        self._next_sweep = max(SWEEP_MIN, 2 * len(self._buckets))
        return len(full)

    def retain(self, rules: Iterable[RuleKey]) -> int:
        """Keep only the buckets of the given (rule name, key fields); returns how many
        were dropped. Called when a new rule set is installed."""
        keep = set(rules)
        gone = [bucket for bucket in self._buckets if (bucket[0], bucket[1]) not in keep]
        for bucket in gone:
            del self._buckets[bucket]
        return len(gone)
