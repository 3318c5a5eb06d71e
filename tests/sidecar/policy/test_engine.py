"""PolicyEngine.decide: first-match allow/deny, default effect, globs, caps, rate limits."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from memsidecar.artifact.v1 import artifact_pb2
from memsidecar.episodic.v1 import episodic_pb2
from memsidecar.kv.v1 import kv_pb2
from memsidecar.semantic.v1 import semantic_pb2
from memsidecar.session.v1 import session_pb2
from memsidecar.sidecar.calls import parse_method
from memsidecar.sidecar.errors import PermissionDenied, ResourceExhausted
from memsidecar.sidecar.identity import Identity
from memsidecar.sidecar.policy import PolicyEngine, PolicyRequest, RateBuckets
from tests.sidecar.policy.support import FakeMonotonic, req, spec

ORDERED = """
defaultEffect: deny
rules:
  - name: no-prod-writes
    effect: deny
    match: {namespaces: [prod], ops: [put, delete]}
    message: prod is read-only
  - name: kv-for-acme
    effect: allow
    match: {tenants: [acme], blocks: [kv]}
  - name: never-reached-for-acme-kv
    effect: deny
    match: {tenants: [acme], blocks: [kv]}
"""


def engine(text: str, clock: FakeMonotonic | None = None) -> PolicyEngine:
    return PolicyEngine(spec(text), clock or FakeMonotonic())


def test_first_matching_allow_or_deny_decides() -> None:
    e = engine(ORDERED)
    d = e.decide(req(namespace="prod", op="kv.put"))
    assert (d.effect, d.rule, d.allowed) == ("deny", "no-prod-writes", False)
    assert isinstance(d.error, PermissionDenied)
    assert d.error.code == grpc.StatusCode.PERMISSION_DENIED
    assert d.error.message == (
        "policy rule 'no-prod-writes' denies kv.put by tenant 'acme' agent 'planner' "
        "in namespace 'prod' (prod is read-only)"
    )
    d = e.decide(req(namespace="prod", op="kv.get"))
    assert (d.effect, d.rule, d.error) == ("allow", "kv-for-acme", None)
    d.raise_if_rejected()
    assert e.decide(req(namespace="dev", op="kv.put")).rule == "kv-for-acme"
    with pytest.raises(PermissionDenied, match="no-prod-writes"):
        e.decide(req(namespace="prod", op="kv.delete")).raise_if_rejected()


def test_default_effect_decides_when_no_rule_matches() -> None:
    e = engine(ORDERED)
    d = e.decide(req(tenant="globex", op="kv.get"))
    assert (d.effect, d.rule) == ("deny", None)
    assert isinstance(d.error, PermissionDenied)
    assert "no policy rule allows kv.get by tenant 'globex'" in d.error.message
    assert "defaultEffect is deny" in d.error.message
    allow_by_default = engine("rules: [{name: x, effect: deny, match: {tenants: [evil]}}]")
    d = allow_by_default.decide(req(tenant="globex"))
    assert (d.effect, d.rule, d.error) == ("allow", None, None)
    assert d.policy_version == allow_by_default.version


def test_empty_policy_allows_everything() -> None:
    d = engine("rules: []").decide(req())
    assert d.allowed and d.effect == "allow" and d.rule is None and d.applied == ()


MATCH_CASES: list[tuple[str, list[str], dict[str, Any], bool]] = [
    ("tenants", ["acme"], {"tenant": "acme"}, True),
    ("tenants", ["acme"], {"tenant": "acme-2"}, False),
    ("tenants", ["team-*"], {"tenant": "team-red"}, True),
    ("tenants", ["team-*"], {"tenant": "red-team"}, False),
    ("tenants", ["t?"], {"tenant": "t1"}, True),
    ("tenants", ["t?"], {"tenant": "t10"}, False),
    ("tenants", ["[ab]*"], {"tenant": "bob"}, True),
    ("tenants", ["[ab]*"], {"tenant": "carol"}, False),
    ("tenants", ["Acme"], {"tenant": "acme"}, False),
    ("agents", ["planner", "exec-*"], {"agent": "exec-7"}, True),
    ("agents", ["planner", "exec-*"], {"agent": "critic"}, False),
    ("agents", ["*"], {"agent": "anyone"}, True),
    ("blocks", ["kv"], {"op": "kv.get"}, True),
    ("blocks", ["kv"], {"op": "lease.acquire"}, False),
    ("blocks", ["epi*", "sem*"], {"op": "semantic.search"}, True),
    ("blocks", ["epi*", "sem*"], {"op": "artifact.get"}, False),
    ("namespaces", ["scratch"], {"namespace": "scratch"}, True),
    ("namespaces", ["scratch"], {"namespace": "scratch2"}, False),
    ("namespaces", ["user-*"], {"namespace": "user-42"}, True),
    ("namespaces", ["user-*"], {"namespace": ""}, False),
    ("namespaces", ["*"], {"namespace": ""}, True),
    ("ops", ["kv.put"], {"op": "kv.put"}, True),
    ("ops", ["kv.put"], {"op": "kv.get"}, False),
    ("ops", ["kv.put"], {"op": "artifact.put"}, False),
    ("ops", ["put"], {"op": "kv.put"}, True),
    ("ops", ["put"], {"op": "artifact.put"}, True),
    ("ops", ["put"], {"op": "kv.get"}, False),
    ("ops", ["kv.*"], {"op": "kv.multi_get"}, True),
    ("ops", ["kv.*"], {"op": "lease.acquire"}, False),
    ("ops", ["*"], {"op": "session.keep_alive"}, True),
    ("ops", ["*.get"], {"op": "artifact.get"}, True),
    ("ops", ["*.get"], {"op": "kv.multi_get"}, False),
    ("ops", ["list_*"], {"op": "episodic.list_sessions"}, True),
    ("ops", ["list_*"], {"op": "lease.list"}, False),
    ("ops", ["list*"], {"op": "lease.list"}, True),
    ("ops", ["get", "lease.*"], {"op": "lease.renew"}, True),
    ("ops", ["get", "lease.*"], {"op": "kv.scan"}, False),
]


@pytest.mark.parametrize(("field", "patterns", "request_fields", "matches"), MATCH_CASES)
def test_glob_matching_on_every_field(
    field: str, patterns: list[str], request_fields: dict[str, Any], matches: bool
) -> None:
    e = PolicyEngine(
        spec(f"rules: [{{name: hit, effect: deny, match: {{{field}: {patterns}}}}}]"),
        FakeMonotonic(),
    )
    d = e.decide(req(**request_fields))
    assert (d.effect == "deny") is matches, d


def test_every_match_field_must_match() -> None:
    e = engine(
        """
        rules:
          - name: narrow
            effect: deny
            match: {tenants: [acme], agents: [planner], blocks: [kv], namespaces: [s*], ops: [put]}
        """
    )
    assert e.decide(req()).effect == "deny"
    for change in (
        {"tenant": "other"},
        {"agent": "other"},
        {"op": "artifact.put"},
        {"namespace": "other"},
        {"op": "kv.get"},
    ):
        assert e.decide(req(**change)).effect == "allow", change


CAPS = """
rules:
  - name: small-search
    effect: cap
    match: {blocks: [semantic]}
    caps: {topK: 20, maxBytes: 1KiB}
    message: ask the platform team for more
  - name: pages
    effect: cap
    caps: {limit: 100, maxBytes: 4096}
  - name: allow-all
    effect: allow
  """


def test_caps_reject_over_cap_and_allow_at_cap() -> None:
    e = engine(CAPS)
    d = e.decide(req(op="semantic.search", top_k=20, limit=100, size_bytes=1024))
    assert d.allowed and d.rule == "allow-all" and d.applied == ("small-search", "pages")
    d = e.decide(req(op="semantic.search", top_k=21))
    assert (d.effect, d.rule) == ("cap", "small-search")
    assert isinstance(d.error, ResourceExhausted)
    assert d.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert d.error.message == (
        "top_k 21 exceeds the topK cap of 20 set by policy rule 'small-search' for semantic.search "
        "by tenant 'acme' agent 'planner' in namespace 'scratch'; ask for at most 20 "
        "(ask the platform team for more)"
    )
    d = e.decide(req(op="kv.scan", limit=101))
    assert (d.effect, d.rule) == ("cap", "pages")
    assert d.error is not None and d.error.message.startswith(
        "limit 101 exceeds the limit cap of 100"
    )
    d = e.decide(req(op="episodic.window", limit=500, limit_field="last_n"))
    assert d.error is not None and d.error.message.startswith("last_n 500 exceeds the limit cap")
    d = e.decide(req(op="kv.put", size_bytes=4097))
    assert (d.effect, d.rule) == ("cap", "pages")
    assert (
        d.error is not None
        and "4097 bytes exceeds the maxBytes cap of 4096 bytes" in d.error.message
    )


def test_first_exceeded_cap_in_rule_order_is_reported() -> None:
    d = engine(CAPS).decide(req(op="semantic.search", size_bytes=5000))
    assert d.rule == "small-search"


def test_unset_values_are_not_capped() -> None:
    d = engine(CAPS).decide(req(op="semantic.search"))
    assert d.allowed


def test_tightest_byte_cap_is_reported_for_streams() -> None:
    d = engine(CAPS).decide(req(op="semantic.upsert", size_bytes=10))
    assert d.byte_cap is not None
    assert (d.byte_cap.max_bytes, d.byte_cap.rule) == (1024, "small-search")
    assert not d.byte_cap.exceeded(1024) and d.byte_cap.exceeded(1025)
    error = d.byte_cap.error(2000, "the upload")
    assert isinstance(error, ResourceExhausted)
    assert error.message.startswith("the upload of 2000 bytes exceeds the maxBytes cap of 1024")
    assert engine(CAPS).decide(req(op="kv.put", size_bytes=10)).byte_cap.max_bytes == 4096  # type: ignore[union-attr]
    assert engine("rules: []").decide(req()).byte_cap is None


def test_caps_after_the_deciding_rule_do_not_apply() -> None:
    e = engine(
        """
        rules:
          - {name: trusted, effect: allow, match: {agents: [admin]}}
          - {name: small, effect: cap, caps: {topK: 5}}
        """
    )
    assert e.decide(req(agent="admin", op="semantic.search", top_k=50)).allowed
    assert e.decide(req(agent="other", op="semantic.search", top_k=50)).rule == "small"


def test_deny_wins_over_caps_before_it() -> None:
    e = engine(
        """
        rules:
          - {name: small, effect: cap, caps: {topK: 5}}
          - {name: nope, effect: deny}
        """
    )
    d = e.decide(req(op="semantic.search", top_k=50))
    assert (d.effect, d.rule) == ("deny", "nope")


RATE = """
rules:
  - name: writes
    effect: rate_limit
    match: {ops: [put]}
    rate: {perSecond: 2, burst: 3}
"""


def test_exactly_burst_then_refill_at_per_second() -> None:
    clock = FakeMonotonic()
    e = engine(RATE, clock)
    results = [e.decide(req()) for _ in range(3)]
    assert all(d.allowed and d.applied == ("writes",) for d in results)
    d = e.decide(req())
    assert (d.effect, d.rule, d.retry_after) == ("rate_limit", "writes", 0.5)
    assert isinstance(d.error, ResourceExhausted)
    assert d.error.message == (
        "rate limit of policy rule 'writes' (2/s, burst 3, per tenant, agent, namespace, op) "
        "exceeded for kv.put by tenant 'acme' agent 'planner' in namespace 'scratch'; "
        "retry after 0.500s"
    )
    clock.advance(0.25)
    assert e.decide(req()).retry_after == 0.25
    clock.advance(0.25)
    assert e.decide(req()).allowed
    assert not e.decide(req()).allowed
    # Ten seconds idle refills to the burst, not beyond it.
    clock.advance(10)
    assert [e.decide(req()).allowed for _ in range(4)] == [True, True, True, False]
    # A steady 2/s passes indefinitely.
    for _ in range(20):
        clock.advance(0.5)
        assert e.decide(req()).allowed


def test_fractional_refill_accumulates() -> None:
    clock = FakeMonotonic()
    e = engine(
        "rules: [{name: r, effect: rate_limit, rate: {perSecond: 10, burst: 1, key: []}}]", clock
    )
    assert e.decide(req()).allowed
    for _ in range(100):
        clock.advance(0.1)
        assert e.decide(req()).allowed
        assert not e.decide(req()).allowed


def test_rejected_requests_take_no_tokens() -> None:
    clock = FakeMonotonic()
    e = engine(RATE, clock)
    for _ in range(3):
        assert e.decide(req()).allowed
    for _ in range(10):
        assert not e.decide(req()).allowed
    clock.advance(0.5)
    assert e.decide(req()).allowed


def test_requests_not_matching_are_not_limited() -> None:
    e = engine(RATE)
    for _ in range(10):
        assert e.decide(req(op="kv.get")).allowed


@pytest.mark.parametrize(
    ("key", "other", "shared"),
    [
        (None, {"agent": "critic"}, False),
        (None, {"tenant": "globex"}, False),
        (None, {"namespace": "other"}, False),
        (None, {"op": "artifact.put"}, False),
        (["tenant"], {"agent": "critic"}, True),
        (["tenant"], {"namespace": "other", "op": "artifact.put"}, True),
        (["tenant"], {"tenant": "globex"}, False),
        (["agent"], {"tenant": "globex"}, True),
        (["agent"], {"agent": "critic"}, False),
        (["namespace"], {"agent": "critic"}, True),
        (["namespace"], {"namespace": "other"}, False),
        (["op"], {"tenant": "globex"}, True),
        (["op"], {"op": "artifact.put"}, False),
        (["tenant", "agent"], {"namespace": "other"}, True),
        (["tenant", "agent"], {"agent": "critic"}, False),
        ([], {"tenant": "globex", "agent": "x", "namespace": "y", "op": "artifact.put"}, True),
    ],
)
def test_buckets_are_keyed_per_rule_key(
    key: list[str] | None, other: dict[str, Any], shared: bool
) -> None:
    key_yaml = "" if key is None else f", key: {key}"
    e = engine(
        f"rules: [{{name: r, effect: rate_limit, rate: {{perSecond: 1, burst: 2{key_yaml}}}}}]"
    )
    assert e.decide(req()).allowed and e.decide(req()).allowed
    assert not e.decide(req()).allowed
    assert e.decide(req(**other)).allowed is not shared


def test_all_or_nothing_across_several_rate_limits() -> None:
    clock = FakeMonotonic()
    e = engine(
        """
        rules:
          - name: per-agent
            effect: rate_limit
            rate: {perSecond: 1, burst: 5, key: [agent]}
          - name: per-tenant
            effect: rate_limit
            rate: {perSecond: 1, burst: 2, key: [tenant]}
            message: the tenant's quota
        """,
        clock,
    )
    assert e.decide(req()).allowed and e.decide(req()).allowed
    d = e.decide(req())
    assert (d.effect, d.rule, d.retry_after) == ("rate_limit", "per-tenant", 1.0)
    assert d.error is not None and d.error.message.endswith("(the tenant's quota)")
    # per-agent was not charged by the rejected calls: 3 tokens left there.
    buckets = e.buckets
    assert buckets.tokens(("per-agent", ("agent",), ("planner",)), clock()) == 3.0
    clock.advance(2)
    assert e.decide(req()).allowed and e.decide(req()).allowed
    assert buckets.tokens(("per-agent", ("agent",), ("planner",)), clock()) == 3.0
    assert buckets.tokens(("per-tenant", ("tenant",), ("acme",)), clock()) == 0.0


def test_longest_wait_names_the_rule() -> None:
    clock = FakeMonotonic()
    e = engine(
        """
        rules:
          - {name: fast, effect: rate_limit, rate: {perSecond: 1, burst: 1}}
          - {name: slow, effect: rate_limit, rate: {perSecond: 0.5, burst: 1}}
        """,
        clock,
    )
    assert e.decide(req()).allowed
    d = e.decide(req())
    assert (d.rule, d.retry_after) == ("slow", 2.0)
    assert d.error is not None and "(0.5/s, burst 1," in d.error.message
    clock.advance(1.5)
    assert (e.decide(req()).rule, e.decide(req()).retry_after) == ("slow", 0.5)
    clock.advance(0.5)
    assert e.decide(req()).allowed


def test_denied_requests_are_not_counted() -> None:
    e = engine(
        """
        rules:
          - {name: r, effect: rate_limit, rate: {perSecond: 1, burst: 1}}
          - {name: no-deletes, effect: deny, match: {ops: [delete]}}
        """
    )
    for _ in range(5):
        assert e.decide(req(op="kv.delete")).rule == "no-deletes"
    assert len(e.buckets) == 0


def test_rate_limits_after_the_deciding_rule_do_not_apply() -> None:
    e = engine(
        """
        rules:
          - {name: exempt, effect: allow, match: {agents: [batch]}}
          - {name: r, effect: rate_limit, rate: {perSecond: 1, burst: 1}}
        """
    )
    assert all(e.decide(req(agent="batch")).allowed for _ in range(10))
    assert e.decide(req()).allowed and not e.decide(req()).allowed


def test_clock_going_backwards_does_not_add_tokens() -> None:
    clock = FakeMonotonic()
    e = engine(RATE, clock)
    for _ in range(3):
        e.decide(req())
    clock.advance(-100)
    assert not e.decide(req()).allowed
    clock.advance(100.5)
    assert e.decide(req()).allowed


def test_sweep_drops_only_full_buckets() -> None:
    buckets = RateBuckets()
    busy = ("r", ("agent",), ("a",))
    idle = ("r", ("agent",), ("b",))
    buckets.take(busy, 1.0, 2, 0.0)
    buckets.take(idle, 1.0, 2, 0.0)
    buckets.take(busy, 1.0, 2, 0.0)
    assert buckets.sweep(1.0) == 1  # idle refilled to 2; busy has 1
    assert buckets.tokens(idle, 1.0) is None
    assert buckets.tokens(busy, 1.0) == 1.0


def test_sweep_runs_as_buckets_grow() -> None:
    clock = FakeMonotonic()
    e = engine(
        "rules: [{name: r, effect: rate_limit, rate: {perSecond: 1, burst: 5, key: [agent]}}]",
        clock,
    )
    for i in range(5000):
        assert e.decide(req(agent=f"a{i}")).allowed
        clock.advance(1)  # every earlier bucket is full again
    assert len(e.buckets) <= 1024


def identity() -> Identity:
    return Identity(tenant="acme", agent="planner")


def info(path: str) -> Any:
    parsed = parse_method(path)
    assert parsed is not None
    return parsed


def test_from_message_reads_namespace_and_size() -> None:
    message = kv_pb2.PutRequest(namespace="scratch", key="k")
    r = PolicyRequest.from_message(identity(), info("/memsidecar.kv.v1.KV/Put"), message)
    assert r == PolicyRequest(
        tenant="acme",
        agent="planner",
        block="kv",
        namespace="scratch",
        op="kv.put",
        size_bytes=message.ByteSize(),
    )
    assert r.size_bytes and r.size_bytes > 0


def test_from_message_reads_top_k_limit_and_last_n() -> None:
    search = semantic_pb2.SearchRequest(namespace="docs", query_text="x", top_k=7)
    r = PolicyRequest.from_message(
        identity(), info("/memsidecar.semantic.v1.Semantic/Search"), search
    )
    assert (r.op, r.namespace, r.top_k, r.limit) == ("semantic.search", "docs", 7, None)
    scan = kv_pb2.ScanRequest(namespace="n", limit=30)
    r = PolicyRequest.from_message(identity(), info("/memsidecar.kv.v1.KV/Scan"), scan)
    assert (r.limit, r.limit_field, r.top_k) == (30, "limit", None)
    window = episodic_pb2.WindowRequest(namespace="n", session_id="s", last_n=12)
    r = PolicyRequest.from_message(
        identity(), info("/memsidecar.episodic.v1.Episodic/Window"), window
    )
    assert (r.op, r.limit, r.limit_field) == ("episodic.window", 12, "last_n")


def test_from_message_treats_zero_as_not_given() -> None:
    scan = kv_pb2.ScanRequest(namespace="n")
    r = PolicyRequest.from_message(identity(), info("/memsidecar.kv.v1.KV/Scan"), scan)
    assert r.limit is None


def test_from_message_header_namespace_and_no_message() -> None:
    put = artifact_pb2.PutRequest(header=artifact_pb2.PutHeader(namespace="files"))
    call = info("/memsidecar.artifact.v1.Artifact/Put")
    assert PolicyRequest.from_message(identity(), call, put).namespace == "files"
    chunk = artifact_pb2.PutRequest(chunk=b"abc")
    assert PolicyRequest.from_message(identity(), call, chunk).namespace == ""
    r = PolicyRequest.from_message(identity(), call, None)
    assert (r.namespace, r.size_bytes, r.op, r.block) == ("", None, "artifact.put", "artifact")
    open_req = session_pb2.OpenRequest(checkpoint_namespace="ckpt")
    r = PolicyRequest.from_message(
        identity(), info("/memsidecar.session.v1.Session/Open"), open_req
    )
    assert r.namespace == ""
