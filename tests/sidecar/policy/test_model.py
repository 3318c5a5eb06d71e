"""The rule schema: what is accepted, and errors that name the rule and field."""

from __future__ import annotations

from typing import Any

import pytest

from memsidecar.sidecar.policy import PolicyError, PolicySpec, parse_policy
from tests.sidecar.policy.support import spec


def problems(data: Any) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(data, "t.yaml")
    assert str(info.value).startswith("invalid policy (t.yaml):")
    return info.value.problems


def one_rule(**rule: Any) -> dict[str, Any]:
    return {"rules": [{"name": "r1", "effect": "allow", **rule}]}


def test_defaults() -> None:
    s = parse_policy({"rules": []})
    assert s.default_effect == "allow"
    assert s.rules == []


def test_camel_case_and_snake_case_are_both_accepted() -> None:
    camel = spec(
        """
        defaultEffect: deny
        rules:
          - name: lim
            effect: rate_limit
            rate: {perSecond: 2.5, burst: 3, key: [tenant]}
          - name: cap
            effect: cap
            caps: {topK: 5, maxBytes: 1KiB}
        """
    )
    snake = spec(
        """
        default_effect: deny
        rules:
          - name: lim
            effect: rate_limit
            rate: {per_second: 2.5, burst: 3, key: [tenant]}
          - name: cap
            effect: cap
            caps: {top_k: 5, max_bytes: 1024}
        """
    )
    assert camel == snake
    assert camel.version() == snake.version()
    assert camel.rules[1].caps is not None and camel.rules[1].caps.max_bytes == 1024


def test_both_spellings_of_one_field_is_an_error() -> None:
    (problem,) = problems(
        one_rule(effect="rate_limit", rate={"perSecond": 1, "per_second": 2, "burst": 1})
    )
    assert problem.startswith("rules[0] (name 'r1'): rate.per_second:")


def test_version_is_a_content_hash() -> None:
    a = spec("rules: [{name: a, effect: deny, match: {ops: [put]}}]")
    b = spec("rules: [{name: a, effect: deny, match: {ops: [put]}}]  # same")
    c = spec("rules: [{name: a, effect: deny, match: {ops: [get]}}]")
    assert a.version() == b.version() != c.version()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([], "must be a mapping"),
        (None, "the policy is empty"),
        ({"defaultEffect": "maybe"}, "defaultEffect: Input should be 'allow' or 'deny'"),
        ({"rules": [], "podSelector": {}}, "podSelector: Extra inputs are not permitted"),
    ],
)
def test_top_level_errors(data: Any, expected: str) -> None:
    assert any(expected in p for p in problems(data)), problems(data)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"effect": "block"}, "rules[0] (name 'r1'): effect: Input should be"),
        ({"name": "bad name!"}, "rules[0] (name 'bad name!'): name: rule name 'bad name!'"),
        ({"effect": "rate_limit"}, "rules[0] (name 'r1'): rate is required for a rate_limit"),
        ({"effect": "cap"}, "rules[0] (name 'r1'): caps is required for a cap rule"),
        ({"rate": {"perSecond": 1, "burst": 1}}, "rate is only used by rate_limit rules"),
        ({"caps": {"topK": 1}}, "caps is only used by cap rules"),
        (
            {"effect": "rate_limit", "rate": {"perSecond": 0, "burst": 1}},
            "rules[0] (name 'r1'): rate.perSecond: Input should be greater than 0",
        ),
        (
            {"effect": "rate_limit", "rate": {"perSecond": 1, "burst": 0}},
            "rules[0] (name 'r1'): rate.burst: Input should be greater than or equal to 1",
        ),
        (
            {"effect": "rate_limit", "rate": {"perSecond": 1, "burst": 1, "key": ["pod"]}},
            "rules[0] (name 'r1'): rate.key.0: Input should be 'tenant', 'agent'",
        ),
        (
            {"effect": "rate_limit", "rate": {"perSecond": 1, "burst": 1, "key": ["op", "op"]}},
            "rules[0] (name 'r1'): rate.key: key repeats a field",
        ),
        ({"effect": "cap", "caps": {}}, "rules[0] (name 'r1'): caps: caps sets nothing"),
        (
            {"effect": "cap", "caps": {"topK": 0}},
            "rules[0] (name 'r1'): caps.topK: Input should be greater than 0",
        ),
        (
            {"effect": "cap", "caps": {"maxBytes": "lots"}},
            "rules[0] (name 'r1'): caps.maxBytes: 'lots' is not a size",
        ),
        ({"match": {"op": ["put"]}}, "rules[0] (name 'r1'): match.op: Extra inputs"),
        ({"match": {"ops": ["kv.pt"]}}, "match.ops: op pattern 'kv.pt' matches no operation; kv"),
        ({"match": {"ops": ["pt"]}}, "match.ops: op pattern 'pt' matches no method of any block"),
        ({"match": {"ops": ["a.b.c"]}}, "match.ops: op pattern 'a.b.c' has more than one '.'"),
        ({"match": {"blocks": ["vk"]}}, "match.blocks: block pattern 'vk' matches no block"),
        ({"match": {"namespaces": ["kv/x"]}}, "match.namespaces: namespace pattern 'kv/x'"),
        ({"match": {"tenants": [""]}}, "match.tenants: tenant pattern '' must be non-empty"),
        ({"match": {"agents": ["a", "a"]}}, "match.agents: agent patterns repeat an entry"),
        ({"match": {"tenants": "acme"}}, "match.tenants: Input should be a valid list"),
        ({"unknown": 1}, "rules[0] (name 'r1'): unknown: Extra inputs are not permitted"),
    ],
)
def test_rule_errors_name_the_rule_and_field(rule: dict[str, Any], expected: str) -> None:
    found = problems(one_rule(**rule))
    assert any(expected in p for p in found), found


def test_errors_name_the_right_rule_among_several() -> None:
    data = {
        "rules": [
            {"name": "fine", "effect": "deny", "match": {"ops": ["put"]}},
            {"effect": "allow"},
            {"name": "slow", "effect": "rate_limit", "rate": {"burst": 1}},
        ]
    }
    found = problems(data)
    assert "rules[1] (unnamed): name: Field required" in found
    assert "rules[2] (name 'slow'): rate.perSecond: Field required" in found
    assert not any("fine" in p for p in found)


def test_duplicate_rule_names() -> None:
    found = problems(
        {
            "rules": [
                {"name": "a", "effect": "deny", "match": {"ops": ["put"]}},
                {"name": "a", "effect": "allow", "match": {"ops": ["get"]}},
            ]
        }
    )
    assert found == [
        "rules[1] (name 'a'): name is already used by rules[0]; rule names must be unique"
    ]


def test_rules_after_a_catch_all_are_unreachable() -> None:
    found = problems(
        {
            "rules": [
                {"name": "kv-only", "effect": "deny", "match": {"blocks": ["kv"]}},
                {"name": "everyone", "effect": "allow", "match": {"tenants": ["*"]}},
                {"name": "late", "effect": "rate_limit", "rate": {"perSecond": 1, "burst": 1}},
            ]
        }
    )
    assert found == [
        "rules[2] (name 'late'): unreachable, because rules[1] (name 'everyone') above it "
        "allows every request; move it above that rule or remove it"
    ]


def test_catch_all_as_last_rule_is_fine() -> None:
    s = spec(
        """
        defaultEffect: allow
        rules:
          - {name: writes, effect: rate_limit, rate: {perSecond: 1, burst: 1}}
          - {name: nothing-else, effect: deny}
        """
    )
    assert [r.name for r in s.rules] == ["writes", "nothing-else"]


def test_op_glob_forms_that_are_valid() -> None:
    s = parse_policy(
        one_rule(match={"ops": ["kv.put", "put", "kv.*", "*", "*.get", "list_*", "lease.re*"]})
    )
    assert len(s.rules[0].match.ops) == 7


def test_models_are_frozen() -> None:
    s = PolicySpec()
    with pytest.raises(ValueError):
        s.default_effect = "deny"  # type: ignore[misc]


def test_yaml_boolean_names_get_a_hint() -> None:
    with pytest.raises(PolicyError) as info:
        spec("rules: [{name: no, effect: deny}]")
    (problem,) = info.value.problems
    assert problem.startswith("rules[0] (name False): name: Input should be a valid string")
    assert "quote the value" in problem
