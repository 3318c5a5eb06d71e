"""PolicyHolder: atomic swaps, status, and what a reload does to rate-limit buckets."""

from __future__ import annotations

import asyncio
import threading

from memsidecar.sidecar.policy import Decision, PolicyHolder, PolicySpec
from tests.sidecar.policy.support import FakeMonotonic, req, spec


def limited(name: str = "writes", rate: str = "{perSecond: 1, burst: 2}") -> PolicySpec:
    return spec(f"rules: [{{name: {name}, effect: rate_limit, rate: {rate}}}]")


def drain(holder: PolicyHolder, n: int) -> None:
    for _ in range(n):
        assert holder.current().decide(req()).allowed
    assert holder.current().decide(req()).effect == "rate_limit"


def test_default_holder_allows_everything() -> None:
    holder = PolicyHolder(clock=FakeMonotonic(), wall_clock=lambda: 5.0)
    status = holder.status()
    assert (status.rules, status.default_effect, status.reloads) == (0, "allow", 0)
    assert status.loaded_at == 5.0 and status.last_error is None
    assert holder.current().decide(req()).allowed


def test_replace_swaps_and_tracks_status() -> None:
    wall = [100.0]
    holder = PolicyHolder(clock=FakeMonotonic(), wall_clock=lambda: wall[0])
    first = holder.current()
    deny = spec("defaultEffect: deny\nrules: []")
    wall[0] = 200.0
    assert holder.replace(deny, source="policy.yaml") is True
    assert holder.current() is not first
    assert holder.current().decide(req()).effect == "deny"
    status = holder.status()
    assert (status.version, status.source, status.loaded_at, status.reloads) == (
        deny.version(),
        "policy.yaml",
        200.0,
        1,
    )
    same = holder.current()
    wall[0] = 300.0
    assert holder.replace(spec("defaultEffect: deny\nrules: []  # same rules")) is False
    assert holder.current() is same and holder.loaded_at == 200.0


def test_errors_are_recorded_and_cleared() -> None:
    holder = PolicyHolder(clock=FakeMonotonic(), wall_clock=lambda: 7.0)
    holder.record_error("invalid policy (x): boom")
    status = holder.status()
    assert (status.last_error, status.last_error_at) == ("invalid policy (x): boom", 7.0)
    assert holder.current().decide(req()).allowed  # the rules in force stay
    holder.replace(spec("rules: []"))  # same as in force: still clears the error
    assert holder.last_error is None
    holder.record_error("again")
    holder.confirm()
    assert holder.status().last_error is None


def test_reload_keeping_a_rule_keeps_its_buckets() -> None:
    clock = FakeMonotonic()
    holder = PolicyHolder(limited(), clock=clock)
    drain(holder, 2)
    # Same rule, another rule added before it: still exhausted.
    holder.replace(
        spec(
            """
            rules:
              - {name: audit-cap, effect: cap, caps: {topK: 10}}
              - {name: writes, effect: rate_limit, rate: {perSecond: 1, burst: 2}}
            """
        )
    )
    assert holder.current().decide(req()).rule == "writes"
    clock.advance(1)
    assert holder.current().decide(req()).allowed


def test_changed_rate_keeps_tokens_capped_at_new_burst() -> None:
    clock = FakeMonotonic()
    holder = PolicyHolder(limited(rate="{perSecond: 1, burst: 5}"), clock=clock)
    assert holder.current().decide(req()).allowed  # 4 tokens left
    holder.replace(limited(rate="{perSecond: 10, burst: 2}"))
    drain(holder, 2)  # capped at the new burst
    clock.advance(0.1)  # refills at the new rate
    assert holder.current().decide(req()).allowed


def test_renamed_rule_or_changed_key_starts_fresh_and_old_buckets_are_dropped() -> None:
    holder = PolicyHolder(limited(), clock=FakeMonotonic())
    drain(holder, 2)
    assert len(holder.buckets) == 1
    holder.replace(limited(name="writes-v2"))
    assert len(holder.buckets) == 0
    drain(holder, 2)
    holder.replace(limited(name="writes-v2", rate="{perSecond: 1, burst: 2, key: [tenant]}"))
    assert len(holder.buckets) == 0
    drain(holder, 2)
    holder.replace(spec("rules: []"))
    assert len(holder.buckets) == 0


SET_A = spec(
    """
    defaultEffect: deny
    rules:
      - {name: a-kv, effect: allow, match: {blocks: [kv]}}
      - {name: a-lease, effect: deny, match: {blocks: [lease]}}
    """
)
SET_B = spec(
    """
    defaultEffect: deny
    rules:
      - {name: b-kv, effect: deny, match: {blocks: [kv]}}
      - {name: b-lease, effect: allow, match: {blocks: [lease]}}
    """
)
EXPECTED = {"a": (True, False), "b": (False, True)}


def consistent_set(kv: Decision, lease: Decision) -> str:
    """The rule set both decisions came from; fails if they disagree."""
    assert kv.rule is not None and lease.rule is not None
    marker = kv.rule.split("-")[0]
    assert lease.rule.split("-")[0] == marker, (kv.rule, lease.rule)
    assert kv.policy_version == lease.policy_version
    assert (kv.allowed, lease.allowed) == EXPECTED[marker]
    return marker


async def test_concurrent_decisions_see_one_whole_rule_set() -> None:
    holder = PolicyHolder(SET_A)
    stop = asyncio.Event()
    seen: dict[str, int] = {"a": 0, "b": 0}

    async def flipper() -> int:
        flips = 0
        while not stop.is_set():
            holder.replace(SET_B if holder.current().spec is SET_A else SET_A)
            flips += 1
            await asyncio.sleep(0)
        return flips

    async def caller() -> None:
        for _ in range(50):
            engine = holder.current()
            kv = engine.decide(req(op="kv.get"))
            await asyncio.sleep(0)  # the policy is flipped meanwhile
            lease = engine.decide(req(op="lease.acquire"))
            seen[consistent_set(kv, lease)] += 1

    flip_task = asyncio.create_task(flipper())
    await asyncio.wait_for(asyncio.gather(*(caller() for _ in range(100))), 30)
    stop.set()
    flips = await flip_task
    assert flips > 10
    assert seen["a"] > 0 and seen["b"] > 0
    assert seen["a"] + seen["b"] == 100 * 50


def test_threads_reading_while_swapping_see_one_whole_rule_set() -> None:
    holder = PolicyHolder(SET_A)
    failures: list[BaseException] = []
    counts = {"a": 0, "b": 0}
    lock = threading.Lock()

    def reader() -> None:
        try:
            for _ in range(2000):
                engine = holder.current()
                marker = consistent_set(
                    engine.decide(req(op="kv.put")), engine.decide(req(op="lease.renew"))
                )
                with lock:
                    counts[marker] += 1
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    flips = 0
    while any(t.is_alive() for t in threads):
        holder.replace(SET_B if holder.current().spec is SET_A else SET_A)
        flips += 1
    for t in threads:
        t.join(timeout=30)
    assert not failures, failures[0]
    assert counts["a"] + counts["b"] == 4 * 2000
    assert flips > 1
