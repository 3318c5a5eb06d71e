"""Property test of the cursor invariants under any interleaving of appends, session
deletes and retention (count and age, driven by a manual clock), checked against a
model of what must be kept."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memsidecar.client.blocks.episodic import AsyncEpisodic
from memsidecar.client.errors import InvalidArgumentError
from tests.sidecar.blocks.episodic.conftest import EPISODIC_DRIVERS, driver_overrides
from tests.support import ManualClock, running_sidecar

# Namespace kind -> (max_age seconds, max_events)
KINDS: dict[str, tuple[int | None, int | None]] = {
    "p": (None, None),
    "pc": (None, 4),
    "pa": (100, None),
    "pb": (100, 4),
}
NAMESPACES = {
    f"{kind}-*": {
        **({"retention_max_age": age} if age else {}),
        **({"retention_max_events": count} if count else {}),
    }
    for kind, (age, count) in KINDS.items()
}

SESSIONS = ["", "a", "b"]
TYPES = ["x", "y"]

appends = st.tuples(
    st.just("append"),
    st.sampled_from(SESSIONS),
    st.sampled_from(TYPES),
    st.sampled_from([None, "k0", "k1", "k2"]),
    # Seconds to backdate the event by (None = the sidecar's clock).
    st.one_of(st.none(), st.integers(0, 150)),
)
deletes = st.tuples(st.just("delete"), st.sampled_from(["a", "b"]))
advances = st.tuples(st.just("advance"), st.integers(0, 80))
checks = st.tuples(
    st.just("check"),
    st.sampled_from(SESSIONS),
    st.sampled_from([(), ("x",), ("x", "y")]),
    st.integers(0, 12),
    st.integers(0, 12),
    st.integers(1, 6),
)
operations = st.lists(st.one_of(appends, appends, deletes, advances, checks), max_size=40)


@dataclass
class Kept:
    cursor: int
    time_us: int
    session_id: str
    type: str
    key: str | None


@dataclass
class Model:
    max_age_us: int | None
    max_events: int | None
    kept: list[Kept] = field(default_factory=list)
    handed_out: set[int] = field(default_factory=set)

    def expire(self, now_us: int) -> None:
        if self.max_age_us is not None:
            cutoff = now_us - self.max_age_us
            self.kept = [e for e in self.kept if e.time_us >= cutoff]


async def scenario(
    ep: AsyncEpisodic, clock: ManualClock, kind: str, namespace: str, ops: list[Any]
) -> None:
    age, count = KINDS[kind]
    model = Model(None if age is None else age * 1_000_000, count)
    for op in ops:
        now_us = round(clock.now * 1_000_000)
        if op[0] == "append":
            _, session, kind_, key, back = op
            time = None if back is None else clock.now - back
            time_us = now_us if back is None else now_us - back * 1_000_000
            if model.max_age_us is not None and time_us < now_us - model.max_age_us:
                with pytest.raises(InvalidArgumentError, match="retention_max_age"):
                    await ep.append(
                        namespace, kind_, session_id=session, idempotency_key=key, time=time
                    )
                continue
            event = await ep.append(
                namespace, kind_, session_id=session, idempotency_key=key, time=time
            )
            model.expire(now_us)
            original = next((e for e in model.kept if key and e.key == key), None)
            if original is not None:
                assert event.duplicate and event.cursor == original.cursor
                continue
            assert not event.duplicate
            assert event.cursor not in model.handed_out, "cursor reused"
            assert all(event.cursor > c for c in model.handed_out), "cursor went backwards"
            model.handed_out.add(event.cursor)
            model.kept.append(Kept(event.cursor, time_us, session, kind_, key))
            if model.max_events is not None:
                model.kept = model.kept[-model.max_events :]
        elif op[0] == "delete":
            model.expire(now_us)
            expected = [e for e in model.kept if e.session_id == op[1]]
            assert await ep.delete_session(namespace, op[1]) == len(expected)
            model.kept = [e for e in model.kept if e.session_id != op[1]]
        elif op[0] == "advance":
            clock.advance(op[1])
        else:
            _, session, types, after, before, limit = op
            model.expire(now_us)
            before = after + before + 1 if before else 0
            filters: dict[str, Any] = {
                "session_id": session,
                "types": types,
                "after_cursor": after,
                "before_cursor": before,
            }
            want = [
                e.cursor
                for e in model.kept
                if (not session or e.session_id == session)
                and (not types or e.type in types)
                and e.cursor > after
                and (not before or e.cursor < before)
            ]
            forward = [e.cursor async for e in ep.range(namespace, **filters)]
            backward = [e.cursor async for e in ep.range(namespace, reverse=True, **filters)]
            assert forward == want
            assert backward == forward[::-1]
            paged = [e.cursor async for e in ep.range(namespace, limit=limit, **filters)]
            assert paged == want[:limit]
            paged_back = [
                e.cursor async for e in ep.range(namespace, reverse=True, limit=limit, **filters)
            ]
            assert paged_back == want[::-1][:limit]
            if session:
                window = await ep.window(namespace, session, limit)
                in_session = [e.cursor for e in model.kept if e.session_id == session]
                assert [e.cursor for e in window] == in_session[-limit:]
            sessions = (await ep.list_sessions(namespace)).sessions
            by_session = {
                s: [e.cursor for e in model.kept if e.session_id == s] for s in ("a", "b")
            }
            assert [
                (s.session_id, s.event_count, s.first_cursor, s.last_cursor) for s in sessions
            ] == [(s, len(c), c[0], c[-1]) for s, c in by_session.items() if c]
    everything = [e.cursor async for e in ep.range_all(namespace)]
    model.expire(round(clock.now * 1_000_000))
    assert everything == [e.cursor for e in model.kept]


@pytest.mark.parametrize("driver", sorted(EPISODIC_DRIVERS))
def test_cursor_invariants(request: pytest.FixtureRequest, driver: str) -> None:
    clock = ManualClock()
    overrides = {**driver_overrides(request, driver), "blocks.episodic.namespaces": NAMESPACES}
    names = itertools.count()
    with asyncio.Runner() as runner:
        running = running_sidecar(overrides, clock=clock)
        _, client = runner.run(running.__aenter__())
        try:

            @settings(
                max_examples=50,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            )
            @given(kind=st.sampled_from(sorted(KINDS)), ops=operations)
            def check(kind: str, ops: list[Any]) -> None:
                # A fresh namespace per example: cursors start over, nothing leaks.
                namespace = f"{kind}-{next(names)}"
                runner.run(scenario(client.episodic, clock, kind, namespace, ops))

            check()
        finally:
            runner.run(running.__aexit__(None, None, None))
