"""Property tests: kv versions and TTL behave like a simple model, whatever the sequence."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memsidecar.client.blocks.kv import AsyncKV
from memsidecar.client.errors import ConflictError
from tests.support import ManualClock

KEYS = st.sampled_from(["a", "b", "c"])
OPS = st.one_of(
    st.tuples(st.just("put"), KEYS, st.integers(0, 9), st.sampled_from([None, 5, 20])),
    st.tuples(st.just("cas"), KEYS, st.integers(0, 9), st.integers(0, 3)),
    st.tuples(st.just("delete"), KEYS, st.none(), st.none()),
    st.tuples(st.just("incr"), KEYS, st.integers(-3, 3), st.none()),
    st.tuples(st.just("advance"), st.none(), st.sampled_from([1, 6, 25]), st.none()),
)
_namespaces = itertools.count()


@dataclass
class Model:
    value: int
    version: int
    expires_at: float | None


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(OPS, max_size=25))
async def test_versions_and_ttl_follow_the_model(
    kv: AsyncKV, clock: ManualClock, ops: list[tuple[str, str | None, int | None, int | None]]
) -> None:
    ns = f"prop{next(_namespaces)}"
    model: dict[str, Model] = {}
    last_version = 0
    seen_versions: dict[str, list[int]] = {}

    def live(key: str) -> Model | None:
        m = model.get(key)
        if m is not None and m.expires_at is not None and m.expires_at <= clock.now:
            del model[key]
            return None
        return m

    for op, key, arg, extra in ops:
        if op == "advance":
            assert arg is not None
            clock.advance(arg)
            continue
        assert key is not None
        current = live(key)
        if op == "put":
            entry = await kv.put(ns, key, arg, ttl=extra)
            model[key] = Model(arg, entry.version, clock.now + extra if extra else None)  # type: ignore[arg-type]
        elif op == "cas":
            expected = extra if extra == 0 else (current.version if current and extra else 999_999)
            ok = (current.version if current else 0) == expected
            try:
                entry = await kv.put(ns, key, arg, if_version=expected)
                assert ok
                model[key] = Model(arg, entry.version, None)  # type: ignore[arg-type]
            except ConflictError:
                assert not ok
                continue
        elif op == "delete":
            assert await kv.delete(ns, key) == (current is not None)
            model.pop(key, None)
            continue
        else:
            assert arg is not None
            value = await kv.increment(ns, key, arg)
            base = current.value if current else 0
            assert value == base + arg
            stored = await kv.get(ns, key)
            assert stored is not None
            model[key] = Model(value, stored.version, current.expires_at if current else None)
            entry = stored
        # Every write gets a version above every earlier one in the namespace.
        assert entry.version > last_version
        last_version = entry.version
        seen_versions.setdefault(key, []).append(entry.version)

    for key in ["a", "b", "c"]:
        expected_model = live(key)
        got = await kv.get(ns, key)
        if expected_model is None:
            assert got is None
        else:
            assert got is not None
            assert (got.value, got.version) == (expected_model.value, expected_model.version)
    scanned = [e.key async for e in kv.scan(ns)]
    assert scanned == sorted(k for k in ["a", "b", "c"] if live(k) is not None)
