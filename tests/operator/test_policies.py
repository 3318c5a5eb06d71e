"""MemoryPolicy validation and sidecar counting (pure parts of operator/policies.py)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from memsidecar.operator import conditions as cond
from memsidecar.operator.policies import (
    ANNOTATION_POLICY,
    PodInfo,
    check_policy,
    count,
    loaded_generations,
    pod_info,
    policy_status,
    selector_matches,
)
from memsidecar.sidecar.policy.model import parse_policy

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
RULES = [{"name": "no-deletes", "effect": "deny", "match": {"ops": ["kv.delete"]}}]
BAD_RULES = [{"name": "typo", "effect": "deny", "match": {"ops": ["kv.frobnicate"]}}]


def policy(
    rules: list[dict[str, Any]], selector: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {"defaultEffect": "allow", "rules": rules}
    if selector is not None:
        spec["podSelector"] = selector
    body: dict[str, Any] = {
        "metadata": {
            "name": "limits",
            "namespace": "team-a",
            "generation": kw.pop("generation", 1),
        },
        "spec": spec,
    }
    body.update(kw)
    return body


def pod(
    labels: dict[str, str], loaded: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    annotations = {"memsidecar.io/status": "injected"}
    if loaded is not None:
        annotations[ANNOTATION_POLICY] = json.dumps(loaded)
    body: dict[str, Any] = {
        "metadata": {
            "name": "p",
            "namespace": "team-a",
            "labels": labels,
            "annotations": annotations,
        }
    }
    body.update(extra)
    return body


def test_version_is_the_sidecar_engines_content_hash() -> None:
    version, problems = check_policy(policy(RULES, {"matchLabels": {"app": "x"}}))
    assert problems == []
    assert version == parse_policy({"defaultEffect": "allow", "rules": RULES}).version()


def test_invalid_rules_name_the_rule() -> None:
    version, problems = check_policy(policy(BAD_RULES))
    assert version is None
    assert problems and problems[0].startswith("spec.rules[0] (name 'typo')")


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        (None, {}, True),
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"app": "x"}}, {"app": "x", "b": "2"}, True),
        ({"matchLabels": {"app": "x"}}, {"app": "y"}, False),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
            {"tier": "b"},
            True,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]},
            {"tier": "a"},
            False,
        ),
        ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {"gpu": ""}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {"gpu": ""}, False),
        ({"matchExpressions": [{"key": "gpu", "operator": "Bogus"}]}, {"gpu": ""}, False),
    ],
)
def test_label_selector(selector: Any, labels: dict[str, str], expected: bool) -> None:
    assert selector_matches(selector, labels) is expected


def test_loaded_generations_tolerates_garbage() -> None:
    assert loaded_generations({ANNOTATION_POLICY: '{"a": "3", "b": 2}'}) == {"a": "3", "b": "2"}
    assert loaded_generations({ANNOTATION_POLICY: "not json"}) == {}
    assert loaded_generations({ANNOTATION_POLICY: "[1]"}) == {}
    assert loaded_generations(None) == {}


def test_pod_info_skips_uninjected_finished_and_deleting_pods() -> None:
    assert pod_info(pod({"app": "x"})) == PodInfo("p", (("app", "x"),), ())
    plain = pod({})
    del plain["metadata"]["annotations"]["memsidecar.io/status"]
    assert pod_info(plain) is None
    assert pod_info(pod({}, status={"phase": "Succeeded"})) is None
    deleting = pod({})
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert pod_info(deleting) is None


def test_count_selected_and_loaded() -> None:
    pods = [
        PodInfo("a", (("app", "x"),), (("limits", "2"),)),
        PodInfo("b", (("app", "x"),), (("limits", "1"),)),
        PodInfo("c", (("app", "y"),), (("limits", "2"),)),
        PodInfo("d", (("app", "x"),), ()),
    ]
    assert count("limits", {"matchLabels": {"app": "x"}}, 2, pods) == (3, 1)
    assert count("limits", None, 2, pods) == (4, 2)
    assert count("other", None, 2, pods) == (4, 0)
    assert count("limits", None, 3, pods) == (4, 0)


def test_policy_status_counts_sidecars_running_the_current_generation() -> None:
    body = policy(RULES, {"matchLabels": {"app": "x"}}, generation=3)
    version, _ = check_policy(body)
    assert version is not None
    pods = [
        pod_info(pod({"app": "x"}, {"limits": "3", "other": "1"})),
        pod_info(pod({"app": "x"}, {"limits": "2"})),
        pod_info(pod({"app": "y"}, {"limits": "3"})),
    ]
    status = policy_status(body, [p for p in pods if p], T0)
    assert status["version"] == version
    assert (status["sidecarsSelected"], status["sidecarsLoaded"]) == (2, 1)
    assert status["observedGeneration"] == 3
    assert [c["type"] for c in status["conditions"]] == ["Ready"]
    assert status["reason"] == "Valid" and status["message"] == ""


def test_invalid_policy_keeps_the_version_in_force() -> None:
    valid = policy(RULES)
    good = policy_status(valid, [], T0)
    broken = policy(BAD_RULES, generation=2, status=good)
    # The sidecar keeps generation 1 in force: none loaded generation 2.
    status = policy_status(broken, [PodInfo("a", (), (("limits", "1"),))], T0)
    assert status["version"] == good["version"]
    assert (status["sidecarsSelected"], status["sidecarsLoaded"]) == (1, 0)
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "False",
        "Stalled": "True",
    }
    assert status["reason"] == "InvalidRules"
    assert "kv.frobnicate" in status["message"]
    assert f"keep enforcing the previous rules (version {good['version']})" in status["message"]


def test_invalid_new_policy_has_no_version() -> None:
    status = policy_status(policy(BAD_RULES), [], T0)
    assert "version" not in status
    assert "sidecars have no rules from it" in status["message"]


def test_policy_status_is_stable() -> None:
    body = policy(RULES)
    first = policy_status(body, [], T0)
    body["status"] = first
    assert not cond.changed(first, policy_status(body, [], T0 + datetime.timedelta(hours=1)))
