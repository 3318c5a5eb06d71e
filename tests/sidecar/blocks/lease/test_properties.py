"""Property test: mutual exclusion and fencing-token monotonicity over random histories.

Several holders acquire, renew and release two keys while the clock moves; a
model says who must hold each key. The sidecar must grant a key only when the
model says it is free (or expired, or held by the same holder), must refuse
everything else, and every grant's token must be larger than any before it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memsidecar.client.blocks.lease import AsyncLease
from memsidecar.client.errors import ConflictError
from tests.support import ManualClock

HOLDERS = ["a", "b", "c"]
KEYS = ["k1", "k2"]
_namespaces = itertools.count()


@dataclass
class Held:
    holder: str
    token: int
    expires_at: float


@dataclass
class Model:
    leases: dict[str, Held] = field(default_factory=dict)
    # Largest token ever seen per key.
    top: dict[str, int] = field(default_factory=dict)
    # Each holder's latest token per key (what it would pass to renew/release).
    mine: dict[tuple[str, str], int] = field(default_factory=dict)

    def live(self, key: str, now: float) -> Held | None:
        held = self.leases.get(key)
        return held if held is not None and now < held.expires_at else None


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("acquire"),
            st.sampled_from(HOLDERS),
            st.sampled_from(KEYS),
            st.integers(1, 5),
        ),
        st.tuples(
            st.sampled_from(["renew", "release"]),
            st.sampled_from(HOLDERS),
            st.sampled_from(KEYS),
            st.integers(1, 5),
            st.sampled_from([False, False, False, True]),  # pass a wrong token
        ),
        st.tuples(st.just("advance"), st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0])),
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(history=ops)
async def test_mutual_exclusion_and_fencing_monotonicity(
    lease: AsyncLease, clock: ManualClock, history: list[tuple[object, ...]]
) -> None:
    ns = f"prop-{next(_namespaces)}"
    model = Model()
    for op in history:
        now = clock.now
        if op[0] == "advance":
            clock.advance(float(op[1]))  # type: ignore[arg-type]
        elif op[0] == "acquire":
            _, holder, key, ttl = op
            assert isinstance(holder, str) and isinstance(key, str) and isinstance(ttl, int)
            current = model.live(key, now)
            if current is None or current.holder == holder:
                got = await lease.acquire(ns, key, ttl=ttl, holder_id=holder)
                assert got.holder_id == holder
                assert got.fencing_token > model.top.get(key, 0)
                model.top[key] = got.fencing_token
                model.mine[(holder, key)] = got.fencing_token
                model.leases[key] = Held(holder, got.fencing_token, now + ttl)
            else:
                with pytest.raises(ConflictError) as info:
                    await lease.acquire(ns, key, ttl=ttl, holder_id=holder)
                assert info.value.code == grpc.StatusCode.ABORTED
                assert f"held by {current.holder!r}" in info.value.message
        else:
            verb, holder, key, ttl, stale = op
            assert isinstance(holder, str) and isinstance(key, str) and isinstance(ttl, int)
            token = model.mine.get((holder, key), 0) + (1 if stale else 0) or 1
            current = model.live(key, now)
            allowed = current is not None and current.holder == holder and current.token == token
            if not allowed:
                with pytest.raises(ConflictError) as info:
                    if verb == "renew":
                        await lease.renew(ns, key, token, ttl=ttl, holder_id=holder)
                    else:
                        await lease.release(ns, key, token, holder_id=holder)
                assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
            elif verb == "renew":
                got = await lease.renew(ns, key, token, ttl=ttl, holder_id=holder)
                assert got.fencing_token == token
                model.leases[key] = Held(holder, token, now + ttl)
            else:
                assert await lease.release(ns, key, token, holder_id=holder)
                del model.leases[key]
        # After every step the sidecar agrees with the model on who holds what.
        for key in KEYS:
            expected = model.live(key, clock.now)
            seen = await lease.inspect(ns, key)
            if expected is None:
                assert seen is None, (key, seen)
            else:
                assert seen is not None, key
                assert (seen.holder_id, seen.fencing_token) == (expected.holder, expected.token)
                assert seen.expires_at == datetime.fromtimestamp(expected.expires_at, UTC)
        listed = await lease.list(ns)
        assert [x.key for x in listed] == [k for k in KEYS if model.live(k, clock.now)]
