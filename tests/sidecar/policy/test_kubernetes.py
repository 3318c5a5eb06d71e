"""MemoryPolicy objects as the policy source: selection, merge, and the watch.

The unit tests cover the label selector, the Downward API labels file, the merge and
the fallback to the last valid version, and the watch loop against a fake API (410
Gone, reconnects, prompt stop, patch retries). The cluster tests run against the real
kube-apiserver of e2e/cluster (they fail, not skip, when it is not running): the real
CRD, a pod, a least-privilege service account, kubectl apply / delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from memsidecar.sidecar.policy import PolicyEngine, PolicyHolder, PolicyRequest
from memsidecar.sidecar.policy.kubernetes import (
    POLICY_ANNOTATION,
    KubeApiError,
    KubePolicyApi,
    KubernetesPolicySource,
    LabelSelectorError,
    LoadedPolicy,
    PolicySourceError,
    evaluate,
    load_policy_object,
    merge_policies,
    parse_downward_labels,
    parse_label_selector,
    read_downward_labels,
)
from memsidecar.sidecar.policy.model import PolicyError
from tests.sidecar.policy.support import req

REPO = Path(__file__).resolve().parents[3]
WAIT_SECONDS = 5.0


async def eventually(
    condition: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS
) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def effect(holder: PolicyHolder, op: str = "kv.put", **fields: Any) -> str:
    request: PolicyRequest = req(op=op, **fields)
    return holder.current().decide(request).effect


def mpol(
    name: str,
    rules: list[dict[str, Any]] | None = None,
    *,
    selector: dict[str, Any] | None = None,
    default: str | None = None,
    generation: int = 1,
    uid: str | None = None,
    namespace: str = "team-a",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": rules or []}
    if selector is not None:
        spec["podSelector"] = selector
    if default is not None:
        spec["defaultEffect"] = default
    return {
        "apiVersion": "memsidecar.io/v1alpha1",
        "kind": "MemoryPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or f"uid-{name}",
            "generation": generation,
            "resourceVersion": str(100 + generation),
        },
        "spec": spec,
    }


def deny(name: str, *ops: str) -> dict[str, Any]:
    return {"name": name, "effect": "deny", "match": {"ops": list(ops)}}


def loaded(obj: dict[str, Any]) -> LoadedPolicy:
    return load_policy_object(obj)


# --- label selectors -----------------------------------------------------------------


LABELS = {"app": "agent", "tier": "backend", "example.com/team": "red"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (None, True),
        ({}, True),
        ({"matchLabels": {}, "matchExpressions": []}, True),
        ({"matchLabels": {"app": "agent"}}, True),
        ({"matchLabels": {"app": "agent", "tier": "frontend"}}, False),
        ({"matchLabels": {"missing": "x"}}, False),
        ({"matchLabels": {"example.com/team": "red"}}, True),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "backend"]}]},
            True,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend"]}]}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x"]}]}, False),
        (
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["backend"]}]},
            False,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}, True),
        # NotIn matches a pod that lacks the label, as in Kubernetes.
        ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["x"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "zone", "operator": "Exists", "values": []}]}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, False),
        (
            {
                "matchLabels": {"app": "agent"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["backend"]},
                    {"key": "zone", "operator": "DoesNotExist"},
                ],
            },
            True,
        ),
        (
            {
                "matchLabels": {"app": "agent"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["backend"]}],
            },
            False,
        ),
    ],
)
def test_label_selector_matches_as_kubernetes_does(
    selector: dict[str, Any] | None, expected: bool
) -> None:
    assert parse_label_selector(selector).matches(LABELS) is expected


def test_empty_selector_selects_a_pod_without_labels() -> None:
    assert parse_label_selector({}).matches({})
    assert parse_label_selector({}).selects_everything
    assert not parse_label_selector({"matchLabels": {"a": "b"}}).matches({})


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}, "non-empty"),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn"}]}, "non-empty"),
        ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}, "empty"),
        (
            {"matchExpressions": [{"key": "a", "operator": "DoesNotExist", "values": ["x"]}]},
            "empty",
        ),
        ({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}, "operator"),
        ({"matchExpressions": [{"operator": "Exists"}]}, "label key"),
        ({"matchLabels": {"bad key": "x"}}, "label key"),
        ({"matchLabels": {"Example.COM/x": "y"}}, "prefix"),
        ({"matchLabels": {"app": "not valid!"}}, "label value"),
        ({"matchLabels": {"app": "x" * 64}}, "label value"),
        ({"matchLabels": {"app": 3}}, "must be a string"),
        ({"matchLabel": {"app": "x"}}, "unknown field"),
        ({"matchExpressions": {"key": "a"}}, "must be a list"),
        ("app=agent", "must be a mapping"),
    ],
)
def test_invalid_label_selectors_are_errors(selector: object, message: str) -> None:
    with pytest.raises(LabelSelectorError, match=message):
        parse_label_selector(selector)


def test_downward_api_labels_file(tmp_path: Path) -> None:
    text = 'app="agent"\nexample.com/team="red"\nempty=""\nquoted="a\\"b"\n'
    assert parse_downward_labels(text) == {
        "app": "agent",
        "example.com/team": "red",
        "empty": "",
        "quoted": 'a"b',
    }
    path = tmp_path / "labels"
    path.write_text('app="agent"\n')
    assert read_downward_labels(path) == {"app": "agent"}
    for bad in ("app=agent\n", 'noequals"\n', '="x"\n', 'a="unterminated\n'):
        with pytest.raises(ValueError, match="expected key="):
            parse_downward_labels(bad)


# --- merge -----------------------------------------------------------------------------


def test_merge_orders_by_name_prefixes_rules_and_denies_by_default_if_any_denies() -> None:
    b = loaded(mpol("b-team", [deny("no-puts", "kv.put")]))
    a = loaded(
        mpol(
            "a-base",
            [
                {"name": "readers", "effect": "allow", "match": {"agents": ["reader"]}},
                {"name": "writes", "effect": "rate_limit", "rate": {"perSecond": 5, "burst": 10}},
            ],
            default="deny",
        )
    )
    spec = merge_policies([b, a])
    assert [r.name for r in spec.rules] == ["a-base.readers", "a-base.writes", "b-team.no-puts"]
    assert spec.default_effect == "deny"
    assert spec.rules[1].rate is not None and spec.rules[1].rate.burst == 10
    assert merge_policies([b]).default_effect == "allow"
    # The merge does not depend on the order the objects came in.
    assert merge_policies([a, b]).version() == spec.version()


def test_merge_of_nothing_allows_everything() -> None:
    spec = merge_policies([])
    assert spec.rules == [] and spec.default_effect == "allow"


def test_merge_keeps_every_field_of_a_rule() -> None:
    rule = {
        "name": "caps",
        "effect": "cap",
        "match": {"tenants": ["t*"], "agents": ["a"], "blocks": ["kv"], "namespaces": ["n"]},
        "caps": {"topK": 5, "limit": 7, "maxBytes": "1KiB"},
        "message": "keep it small",
    }
    spec = merge_policies([loaded(mpol("p", [rule]))])
    merged = spec.rules[0]
    assert merged.name == "p.caps"
    assert merged.caps is not None and merged.caps.max_bytes == 1024 and merged.caps.top_k == 5
    assert merged.match.tenants == ["t*"] and merged.message == "keep it small"


def test_merge_rejects_a_catch_all_that_shadows_a_later_policy() -> None:
    everything = loaded(mpol("a", [{"name": "all", "effect": "allow"}]))
    later = loaded(mpol("b", [deny("no-puts", "kv.put")]))
    with pytest.raises(PolicyError, match=r"'b.no-puts'.*unreachable.*'a.all'"):
        merge_policies([everything, later])


def test_merge_rejects_a_merged_rule_name_that_is_too_long() -> None:
    name = "p" * 120
    with pytest.raises(PolicyError, match="shorten the policy or the rule name"):
        merge_policies([loaded(mpol(name, [deny("rule-name", "kv.put")]))])


def test_load_policy_object_reports_selector_and_rule_problems_together() -> None:
    obj = mpol(
        "bad",
        [deny("r", "kv.pt")],
        selector={"matchExpressions": [{"key": "a", "operator": "In"}]},
    )
    with pytest.raises(PolicyError) as err:
        load_policy_object(obj)
    text = str(err.value)
    assert "MemoryPolicy team-a/bad (generation 1)" in text
    assert "values must be non-empty" in text and "kv.pt" in text


# --- evaluate: selection and fallback ----------------------------------------------------


def test_evaluate_selects_by_labels() -> None:
    objects = {
        "mine": mpol("mine", [deny("x", "kv.put")], selector={"matchLabels": {"app": "agent"}}),
        "other": mpol("other", [deny("y", "kv.get")], selector={"matchLabels": {"app": "web"}}),
        "all": mpol("all", [deny("z", "kv.delete")], selector={}),
    }
    result = evaluate(objects, {"app": "agent"}, {})
    assert [p.name for p in result.selected] == ["all", "mine"]
    assert result.spec is not None
    assert [r.name for r in result.spec.rules] == ["all.z", "mine.x"]
    assert set(result.policies) == {"mine", "other", "all"}
    assert json.loads(result.annotation()) == {"all": "1", "mine": "1"}


def test_evaluate_keeps_the_last_valid_version_of_an_invalid_policy() -> None:
    good = loaded(mpol("guard", [deny("no-puts", "kv.put")], generation=1))
    bad = mpol("guard", [deny("no-puts", "kv.pt")], generation=2)
    result = evaluate({"guard": bad}, {}, {"guard": good})
    assert result.selected == (good,)
    assert result.spec is not None and [r.name for r in result.spec.rules] == ["guard.no-puts"]
    (rejection,) = result.rejections
    assert rejection.kept == good and rejection.relevant and rejection.generation == 2
    assert "kv.pt" in rejection.message
    assert json.loads(result.annotation()) == {"guard": "1"}


def test_evaluate_ignores_an_invalid_policy_never_loaded_or_recreated() -> None:
    bad = mpol("guard", [deny("no-puts", "kv.pt")])
    result = evaluate({"guard": bad}, {}, {})
    assert result.selected == () and result.rejections[0].kept is None
    # Same name, new object (another uid): the old object's rules are not kept.
    old = loaded(mpol("guard", [deny("no-puts", "kv.put")], uid="old-uid"))
    result = evaluate({"guard": bad}, {}, {"guard": old})
    assert result.selected == () and result.rejections[0].kept is None


def test_evaluate_does_not_validate_an_unchanged_generation_again() -> None:
    prev = loaded(mpol("guard", [deny("no-puts", "kv.put")]))
    relabelled = mpol("guard", [deny("no-puts", "kv.put")])
    relabelled["metadata"]["resourceVersion"] = "999"
    result = evaluate({"guard": relabelled}, {}, {"guard": prev})
    assert result.policies["guard"] is prev and result.selected == (prev,)


def test_rejections_of_policies_for_other_pods_are_not_relevant() -> None:
    bad = mpol("web-only", [deny("r", "kv.pt")], selector={"matchLabels": {"app": "web"}})
    (rejection,) = evaluate({"web-only": bad}, {"app": "agent"}, {}).rejections
    assert not rejection.relevant
    unreadable = mpol("x", [], selector={"matchExpressions": [{"key": "a", "operator": "In"}]})
    (rejection,) = evaluate({"x": unreadable}, {"app": "agent"}, {}).rejections
    assert rejection.relevant


def test_evaluate_reports_a_merge_error_without_a_spec() -> None:
    objects = {
        "a": mpol("a", [{"name": "all", "effect": "deny"}]),
        "b": mpol("b", [deny("x", "kv.put")]),
    }
    result = evaluate(objects, {}, {})
    assert result.spec is None and result.merge_error is not None
    assert "unreachable" in str(result.merge_error)


# --- docs/policy.md, section "Kubernetes: MemoryPolicy objects" ---------------------------

DOC = REPO / "docs" / "policy.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def doc_section() -> str:
    text = DOC.read_text()
    start = text.index("## Kubernetes: MemoryPolicy objects")
    return text[start : text.index("\n## ", start)]


def doc_blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(doc_section()) if lang == language]


def doc_manifests() -> list[dict[str, Any]]:
    return [obj for block in doc_blocks("yml") for obj in yaml.safe_load_all(block) if obj]


def doc_policies(generations: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
    policies = {}
    for obj in doc_manifests():
        if obj["kind"] == "MemoryPolicy":
            name = obj["metadata"]["name"]
            obj["metadata"].update(
                uid=f"uid-{name}", generation=(generations or {}).get(name, 1), resourceVersion="1"
            )
            policies[name] = obj
    return policies


def test_doc_policies_merge_as_the_doc_shows() -> None:
    policies = doc_policies()
    assert list(policies) == ["10-baseline", "50-planners"]
    table = next(b for b in doc_blocks("text") if "defaultEffect" in b)
    expected = [line.split() for line in table.splitlines()]
    planner = evaluate(policies, {"app": "planner"}, {}, "team-a")
    assert planner.spec is not None and not planner.rejections
    got = [[r.name, r.effect] for r in planner.spec.rules]
    assert [*got, ["defaultEffect", planner.spec.default_effect]] == expected
    canary = evaluate(policies, {"app": "planner", "track": "canary"}, {}, "team-a")
    assert canary.spec is not None
    assert [r.name for r in canary.spec.rules] == ["10-baseline.prod-is-read-only"]
    spec = planner.spec
    denied = PolicyEngine(spec).decide(req(namespace="prod", op="kv.put"))
    assert denied.error is not None
    assert "policy rule '10-baseline.prod-is-read-only' denies kv.put by" in denied.error.message
    assert "`policy rule '10-baseline.prod-is-read-only' denies kv.put by ...`" in doc_section()


def test_doc_annotation_example_is_what_the_sidecar_writes() -> None:
    result = evaluate(doc_policies({"10-baseline": 3}), {"app": "planner"}, {}, "team-a")
    line = f"{POLICY_ANNOTATION}: {result.annotation()}\n"
    assert line in doc_blocks("text")


async def test_doc_rejection_log_is_what_the_sidecar_logs(caplog: pytest.LogCaptureFixture) -> None:
    policies = doc_policies({"10-baseline": 3})
    api = FakeApi(policies)
    async with fake_source(api, PolicyHolder(), pod_labels={}):
        await eventually(lambda: len(api.watches) == 1, "the watch")
        broken = json.loads(json.dumps(policies["10-baseline"]))
        broken["metadata"]["generation"] = 4
        broken["spec"]["rules"][0]["match"]["ops"] = ["kv.pt"]
        with caplog.at_level(logging.WARNING, logger="memsidecar.policy"):
            api.event("MODIFIED", broken)
            await eventually(lambda: bool(caplog.records), "the rejection log")
    assert caplog.records[0].getMessage() + "\n" in doc_blocks("text")


# --- the source against a fake API -------------------------------------------------------


class FakeWatch:
    def __init__(self) -> None:
        self.events: queue.Queue[dict[str, Any] | Exception | None] = queue.Queue()
        self.closed = threading.Event()

    def next_event(self) -> dict[str, Any] | None:
        try:
            item = self.events.get(timeout=10)
        except queue.Empty as exc:
            raise KubeApiError(None, "fake watch: nothing happened for 10s") from exc
        if isinstance(item, Exception):
            raise item
        return item

    def shutdown(self) -> None:
        self.events.put(KubeApiError(None, "shut down"))

    def close(self) -> None:
        self.closed.set()


@dataclass
class FakeApi:
    """An in-memory PolicyApi: tests change `objects`, push events and inject errors."""

    objects: dict[str, dict[str, Any]]
    rv: int = 1
    list_errors: list[Exception] | None = None
    watch_errors: list[Exception] | None = None
    patch_errors: list[Exception] | None = None
    hang: threading.Event | None = None

    def __post_init__(self) -> None:
        self.lists = 0
        self.watches: list[tuple[str, FakeWatch]] = []
        self.patches: list[tuple[str, str, str]] = []
        self.closed = False

    def list_policies(self) -> tuple[list[dict[str, Any]], str]:
        self.lists += 1
        if self.hang is not None:
            self.hang.wait(5)
        if self.list_errors:
            raise self.list_errors.pop(0)
        return [dict(o) for o in self.objects.values()], str(self.rv)

    def watch_policies(self, resource_version: str, timeout_seconds: int) -> FakeWatch:
        if self.watch_errors:
            raise self.watch_errors.pop(0)
        watch = FakeWatch()
        self.watches.append((resource_version, watch))
        return watch

    def patch_pod_annotation(self, pod_name: str, key: str, value: str) -> None:
        if self.patch_errors:
            raise self.patch_errors.pop(0)
        self.patches.append((pod_name, key, value))

    def close(self) -> None:
        self.closed = True

    def event(self, kind: str, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if kind == "DELETED":
            self.objects.pop(obj["metadata"]["name"], None)
        else:
            self.objects[obj["metadata"]["name"]] = obj
        self.watches[-1][1].events.put({"type": kind, "object": obj})


@contextlib.asynccontextmanager
async def fake_source(
    api: FakeApi, holder: PolicyHolder, **options: Any
) -> AsyncIterator[KubernetesPolicySource]:
    options.setdefault("backoff_initial_seconds", 0.01)
    options.setdefault("backoff_max_seconds", 0.05)
    source = KubernetesPolicySource(holder, "team-a", api_factory=lambda: api, **options)
    await source.start()
    try:
        yield source
    finally:
        await source.stop()


async def test_fake_source_loads_follows_events_and_annotates() -> None:
    api = FakeApi({"guard": mpol("guard", [deny("no-puts", "kv.put")])})
    holder = PolicyHolder()
    async with fake_source(api, holder, pod_name="agent-0") as source:
        assert effect(holder) == "deny"
        assert holder.source == "kubernetes:team-a/guard@101"
        await eventually(lambda: len(api.watches) == 1, "the watch")
        assert api.watches[0][0] == "1"
        await eventually(lambda: api.patches != [], "the annotation patch")
        assert api.patches == [("agent-0", POLICY_ANNOTATION, '{"guard":"1"}')]
        api.event("MODIFIED", mpol("guard", [deny("no-deletes", "kv.delete")], generation=2))
        await eventually(lambda: effect(holder) == "allow", "the new generation")
        assert effect(holder, "kv.delete") == "deny"
        await eventually(lambda: len(api.patches) == 2, "the second patch")
        assert api.patches[-1][2] == '{"guard":"2"}'
        assert source.in_force == {"guard": 2}
        api.event("DELETED", mpol("guard", generation=2))
        await eventually(lambda: effect(holder, "kv.delete") == "allow", "the deletion")
        await eventually(lambda: api.patches[-1][2] == "{}", "the empty annotation")
        assert "no MemoryPolicy selects this pod" in holder.source
    assert api.closed


async def test_fake_source_relists_after_410_gone() -> None:
    api = FakeApi({})
    holder = PolicyHolder()
    async with fake_source(api, holder):
        await eventually(lambda: len(api.watches) == 1, "the watch")
        # While the watch is down the policy is created; the watch reports 410.
        api.objects["guard"] = mpol("guard", [deny("no-puts", "kv.put")])
        api.rv = 50
        api.watches[0][1].events.put(
            {"type": "ERROR", "object": {"code": 410, "message": "too old"}}
        )
        await eventually(lambda: effect(holder) == "deny", "the policy after a relist")
        assert api.lists == 2
        await eventually(lambda: len(api.watches) == 2, "the new watch")
        assert api.watches[1][0] == "50"


async def test_fake_source_reconnects_after_errors_and_bookmarks_move_the_version() -> None:
    api = FakeApi({}, watch_errors=[KubeApiError(None, "connection refused")] * 2)
    holder = PolicyHolder()
    async with fake_source(api, holder):
        await eventually(lambda: len(api.watches) == 1, "a watch after two failures")
        # Each failure listed again.
        assert api.lists == 3
        watch = api.watches[0][1]
        watch.events.put({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "77"}}})
        # The stream ends (server timeout): the next watch resumes from the bookmark.
        watch.events.put(None)
        await eventually(lambda: len(api.watches) == 2, "the watch to resume")
        assert api.watches[1][0] == "77" and api.lists == 3
        assert watch.closed.wait(2)
        # A stream that worked and then broke resumes without listing again.
        api.event("ADDED", mpol("guard", [deny("no-puts", "kv.put")]))
        await eventually(lambda: effect(holder) == "deny", "the added policy")
        api.watches[1][1].events.put(KubeApiError(None, "connection reset"))
        await eventually(lambda: len(api.watches) == 3, "the watch to resume after a reset")
        assert api.lists == 3 and api.watches[2][0] == str(api.rv)


async def test_fake_source_stop_is_prompt_while_the_watch_blocks() -> None:
    api = FakeApi({})
    source = KubernetesPolicySource(PolicyHolder(), "team-a", api_factory=lambda: api)
    await source.start()
    await eventually(lambda: len(api.watches) == 1, "the watch")
    assert source.running
    start = time.monotonic()
    await source.stop()
    assert time.monotonic() - start < 1.0
    assert not source.running
    assert api.watches[0][1].closed.wait(2)


async def test_fake_source_start_fails_after_the_start_timeout_naming_the_cause() -> None:
    forbidden = KubeApiError(403, "listing memorypolicies.memsidecar.io: HTTP 403: forbidden")
    api = FakeApi({}, list_errors=[forbidden] * 100)
    source = KubernetesPolicySource(
        PolicyHolder(),
        "team-a",
        api_factory=lambda: api,
        start_timeout_seconds=0.3,
        backoff_initial_seconds=0.05,
        backoff_max_seconds=0.1,
    )
    with pytest.raises(PolicySourceError, match="needs list and watch on memorypolicies"):
        await source.start()
    assert api.lists >= 2 and api.closed and not source.running


async def test_fake_source_start_is_bounded_when_the_api_hangs() -> None:
    api = FakeApi({}, hang=threading.Event())
    source = KubernetesPolicySource(
        PolicyHolder(), "team-a", api_factory=lambda: api, start_timeout_seconds=0.3
    )
    start = time.monotonic()
    try:
        with pytest.raises(PolicySourceError, match="did not answer"):
            await source.start()
        assert time.monotonic() - start < 2.0
    finally:
        assert api.hang is not None
        api.hang.set()


async def test_fake_source_relists_when_the_watch_request_gets_410() -> None:
    api = FakeApi({}, watch_errors=[KubeApiError(410, "too old resource version")])
    async with fake_source(api, PolicyHolder(), backoff_initial_seconds=5, backoff_max_seconds=5):
        # No backoff pause for a 410: listed again at once.
        await eventually(lambda: len(api.watches) == 1, "the watch", timeout=2)
        assert api.lists == 2


async def test_fake_source_start_retries_until_the_api_answers() -> None:
    api = FakeApi(
        {"guard": mpol("guard", [deny("no-puts", "kv.put")])},
        list_errors=[KubeApiError(None, "connection refused")],
    )
    holder = PolicyHolder()
    async with fake_source(api, holder):
        assert effect(holder) == "deny" and api.lists == 2


async def test_fake_source_keeps_rules_on_an_invalid_version_and_records_the_error() -> None:
    api = FakeApi({"guard": mpol("guard", [deny("no-puts", "kv.put")])})
    holder = PolicyHolder()
    async with fake_source(api, holder, pod_name="agent-0") as source:
        await eventually(lambda: len(api.watches) == 1, "the watch")
        api.event("MODIFIED", mpol("guard", [deny("no-puts", "kv.pt")], generation=2))
        await eventually(lambda: holder.last_error is not None, "the rejection")
        assert "kv.pt" in (holder.last_error or "")
        assert "keeping generation 1" in (holder.last_error or "")
        assert effect(holder) == "deny" and source.in_force == {"guard": 1}
        # Another policy's change still applies.
        api.event("ADDED", mpol("other", [deny("no-gets", "kv.get")]))
        await eventually(lambda: effect(holder, "kv.get") == "deny", "the other policy")
        assert effect(holder) == "deny"
        assert holder.last_error is not None
        await eventually(lambda: api.patches[-1][2] == '{"guard":"1","other":"1"}', "annotation")
        # Fixed: the new generation is in force and the error is gone.
        api.event("MODIFIED", mpol("guard", [deny("no-puts", "kv.delete")], generation=3))
        await eventually(lambda: effect(holder) == "allow", "the fixed generation")
        assert holder.last_error is None and source.in_force == {"guard": 3, "other": 1}


async def test_fake_source_keeps_everything_when_the_merge_fails() -> None:
    api = FakeApi({"b": mpol("b", [deny("no-puts", "kv.put")])})
    holder = PolicyHolder()
    async with fake_source(api, holder) as source:
        await eventually(lambda: len(api.watches) == 1, "the watch")
        version = holder.version
        # Valid on its own, but it shadows policy b.
        api.event("ADDED", mpol("a", [{"name": "everything", "effect": "allow"}]))
        await eventually(lambda: holder.last_error is not None, "the merge error")
        assert "unreachable" in (holder.last_error or "")
        assert holder.version == version and source.in_force == {"b": 1}
        api.event("DELETED", mpol("a"))
        await eventually(lambda: holder.last_error is None, "the error to clear")
        assert holder.version == version


async def test_fake_source_retries_a_failed_annotation_patch() -> None:
    api = FakeApi(
        {"guard": mpol("guard", [deny("no-puts", "kv.put")])},
        patch_errors=[KubeApiError(403, "forbidden"), KubeApiError(None, "timeout")],
    )
    holder = PolicyHolder()
    async with fake_source(api, holder, pod_name="agent-0") as source:
        await eventually(lambda: api.patches != [], "the patch after two failures")
        assert api.patches == [("agent-0", POLICY_ANNOTATION, '{"guard":"1"}')]
        assert source.published_annotation == '{"guard":"1"}'
        assert effect(holder) == "deny"


async def test_fake_source_follows_the_labels_file(tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.write_text('app="agent"\n')
    api = FakeApi(
        {"web": mpol("web", [deny("no-puts", "kv.put")], selector={"matchLabels": {"app": "web"}})}
    )
    holder = PolicyHolder()
    async with fake_source(api, holder, labels_file=labels, labels_poll_seconds=0.05) as source:
        assert effect(holder) == "allow" and source.labels == {"app": "agent"}
        labels.write_text('app="web"\n')
        await eventually(lambda: effect(holder) == "deny", "the relabelled pod to be selected")
        labels.write_text("garbage\n")
        await asyncio.sleep(0.2)
        assert effect(holder) == "deny" and source.labels == {"app": "web"}


def test_source_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="not both"):
        KubernetesPolicySource(PolicyHolder(), "ns", {"a": "b"}, labels_file="/x")
    with pytest.raises(ValueError, match="namespace"):
        KubernetesPolicySource(PolicyHolder(), "")
    with pytest.raises(ValueError, match="backoff"):
        KubernetesPolicySource(PolicyHolder(), "ns", backoff_initial_seconds=0)


async def test_start_fails_when_the_labels_file_is_missing(tmp_path: Path) -> None:
    source = KubernetesPolicySource(
        PolicyHolder(), "ns", labels_file=tmp_path / "nope", api_factory=lambda: FakeApi({})
    )
    with pytest.raises(PolicySourceError, match="cannot read the pod's labels"):
        await source.start()


# --- against the real kube-apiserver (e2e/cluster) ------------------------------------------


@dataclass(frozen=True)
class Kube:
    kubectl: str
    kubeconfig: str

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [self.kubectl, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": self.kubeconfig},
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    async def arun(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return await asyncio.to_thread(self.run, *args, stdin=stdin, check=check)

    async def apply(self, *objects: dict[str, Any]) -> None:
        await self.arun(
            "apply",
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
        )


def _find_kube() -> Kube:
    state = Path(
        os.environ.get("MEMSIDECAR_K8S_STATE")
        or Path(os.environ.get("MEMSIDECAR_STATE") or Path.home() / ".local/state/memsidecar")
        / "k8s"
    )
    kubeconfig = os.environ.get("KUBECONFIG") or str(state / "kubeconfig")
    version = os.environ.get("MEMSIDECAR_K8S_VERSION", "v1.35.4")
    cache = Path(os.environ.get("MEMSIDECAR_CACHE") or Path.home() / ".cache/memsidecar")
    kubectl = shutil.which("kubectl") or str(cache / "k8s" / version / "bin" / "kubectl")
    hint = 'run `eval "$(e2e/cluster/up.sh)"` to start the Kubernetes control plane'
    if not Path(kubeconfig).exists() or not Path(kubectl).exists():
        pytest.fail(f"no kubeconfig ({kubeconfig}) or kubectl ({kubectl}); {hint}", pytrace=False)
    kube = Kube(kubectl, kubeconfig)
    try:
        ready = subprocess.run(
            [kubectl, "get", "--raw", "/readyz"],
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": kubeconfig},
            timeout=10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the apiserver did not answer /readyz within 10s; {hint}", pytrace=False)
    if ready.returncode != 0:
        pytest.fail(f"the apiserver is unreachable ({ready.stderr.strip()}); {hint}", pytrace=False)
    return kube


@pytest.fixture(scope="module")
def kube() -> Kube:
    kube = _find_kube()
    kube.run("apply", "-f", str(REPO / "crds" / "memorypolicies.yaml"))
    kube.run(
        "wait",
        "--for=condition=Established",
        "crd/memorypolicies.memsidecar.io",
        "--timeout=30s",
    )
    return kube


SA = "memsidecar-sidecar"
POD = "agent-0"
POD_LABELS = {"app": "agent", "tier": "backend"}


def sidecar_rbac(namespace: str) -> list[dict[str, Any]]:
    """The Role and RoleBinding of docs/policy.md (moved to `namespace`, bound to SA)."""
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SA, "namespace": namespace},
        }
    ]
    for obj in doc_manifests():
        if obj["kind"] in ("Role", "RoleBinding"):
            obj["metadata"]["namespace"] = namespace
            for subject in obj.get("subjects", []):
                subject.update(name=SA, namespace=namespace)
            objects.append(obj)
    assert [o["kind"] for o in objects] == ["ServiceAccount", "Role", "RoleBinding"]
    return objects


@dataclass
class Env:
    kube: Kube
    namespace: str
    token_kubeconfig: Path

    def api(self, namespace: str | None = None) -> KubePolicyApi:
        """The API as the sidecar's service account (its pod-bound token)."""
        from kubernetes import config

        client = config.new_client_from_config(config_file=str(self.token_kubeconfig))  # type: ignore[no-untyped-call]
        return KubePolicyApi(client, namespace or self.namespace, request_timeout_seconds=5)

    def source(self, holder: PolicyHolder, **options: Any) -> KubernetesPolicySource:
        options.setdefault("pod_labels", POD_LABELS)
        options.setdefault("pod_name", POD)
        options.setdefault("backoff_initial_seconds", 0.05)
        options.setdefault("backoff_max_seconds", 0.5)
        return KubernetesPolicySource(holder, self.namespace, api_factory=self.api, **options)

    async def apply_policy(
        self,
        name: str,
        rules: list[dict[str, Any]],
        selector: dict[str, Any] | None = None,
        **spec: Any,
    ) -> None:
        body: dict[str, Any] = {"rules": rules, **spec}
        if selector is not None:
            body["podSelector"] = selector
        await self.kube.apply(
            {
                "apiVersion": "memsidecar.io/v1alpha1",
                "kind": "MemoryPolicy",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": body,
            }
        )

    async def annotation(self) -> dict[str, str] | None:
        out = await self.kube.arun("get", "pod", POD, "-n", self.namespace, "-o", "json")
        value = (json.loads(out)["metadata"].get("annotations") or {}).get(POLICY_ANNOTATION)
        return None if value is None else dict(json.loads(value))

    async def wait_annotation(self, expected: dict[str, str]) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while (got := await self.annotation()) != expected:
            if time.monotonic() > deadline:
                pytest.fail(f"pod annotation {POLICY_ANNOTATION} is {got}, expected {expected}")
            await asyncio.sleep(0.1)


def _token_kubeconfig(kube: Kube, namespace: str, path: Path) -> Path:
    """A kubeconfig with the admin one's cluster and the sidecar SA's pod-bound token."""
    admin = yaml.safe_load(Path(kube.kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    token = kube.run(
        "create",
        "token",
        SA,
        "-n",
        namespace,
        "--duration=1h",
        "--bound-object-kind=Pod",
        f"--bound-object-name={POD}",
    ).strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "sidecar", "user": {"token": token}}],
        "contexts": [
            {"name": "c", "context": {"cluster": "c", "user": "sidecar", "namespace": namespace}}
        ],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture
def env(kube: Kube, tmp_path: Path) -> Iterator[Env]:
    """A fresh namespace with the sidecar's SA and Role and a (Pending) pod."""
    namespace = f"mpol-{uuid.uuid4().hex[:8]}"
    kube.run(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                    *sidecar_rbac(namespace),
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {"name": POD, "namespace": namespace, "labels": POD_LABELS},
                        "spec": {
                            "serviceAccountName": SA,
                            "automountServiceAccountToken": False,
                            "containers": [{"name": "agent", "image": "registry.invalid/agent:1"}],
                        },
                    },
                ],
            }
        ),
    )
    try:
        yield Env(kube, namespace, _token_kubeconfig(kube, namespace, tmp_path / "kubeconfig"))
    finally:
        kube.run(
            "delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False
        )


@contextlib.asynccontextmanager
async def running(source: KubernetesPolicySource) -> AsyncIterator[KubernetesPolicySource]:
    await source.start()
    try:
        yield source
    finally:
        start = time.monotonic()
        await source.stop()
        assert time.monotonic() - start < 2.0, "stop() took too long"


async def test_cluster_policy_changes_are_enforced_within_seconds(env: Env) -> None:
    holder = PolicyHolder()
    async with running(env.source(holder)) as source:
        assert effect(holder) == "allow"
        await env.wait_annotation({})

        await env.apply_policy("guard", [deny("no-kv", "kv.*")])
        took = await eventually(lambda: effect(holder) == "deny", "kv to be denied")
        assert took < WAIT_SECONDS
        assert effect(holder, "artifact.get") == "allow"
        decision = holder.current().decide(req(op="kv.put"))
        assert decision.rule == "guard.no-kv"
        assert holder.source.startswith(f"kubernetes:{env.namespace}/guard@")
        await env.wait_annotation({"guard": "1"})

        await env.apply_policy("guard", [deny("no-deletes", "kv.delete")], defaultEffect="allow")
        await eventually(lambda: effect(holder) == "allow", "the changed policy")
        assert effect(holder, "kv.delete") == "deny"
        assert source.in_force == {"guard": 2}
        await env.wait_annotation({"guard": "2"})

        await env.kube.arun("delete", "memorypolicy", "guard", "-n", env.namespace)
        await eventually(lambda: effect(holder, "kv.delete") == "allow", "the deleted policy")
        assert holder.current().spec.rules == []
        await env.wait_annotation({})


async def test_cluster_policies_for_other_pods_are_ignored(env: Env) -> None:
    holder = PolicyHolder()
    async with running(env.source(holder)) as source:
        await env.apply_policy(
            "for-web", [deny("no-artifacts", "artifact.*")], {"matchLabels": {"app": "web"}}
        )
        await env.apply_policy(
            "not-backend",
            [deny("no-leases", "lease.*")],
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["backend"]}]},
        )
        await env.apply_policy(
            "for-agents",
            [deny("no-kv", "kv.*")],
            {
                "matchLabels": {"app": "agent"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["backend", "worker"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                ],
            },
        )
        # Watch events arrive in order: once the last policy is in force the others were seen.
        await eventually(lambda: effect(holder) == "deny", "the matching policy")
        assert source.in_force == {"for-agents": 1}
        assert (
            effect(holder, "artifact.get") == "allow" and effect(holder, "lease.acquire") == "allow"
        )
        await env.wait_annotation({"for-agents": "1"})
        # The pod is relabelled (the Downward API file would change): selection follows.
        source.set_labels({"app": "web", "tier": "frontend"})
        assert source.in_force == {"for-web": 1, "not-backend": 1}
        assert effect(holder) == "allow" and effect(holder, "artifact.get") == "deny"
        assert effect(holder, "lease.acquire") == "deny"


async def test_cluster_invalid_policy_keeps_the_rules_in_force(env: Env) -> None:
    holder = PolicyHolder()
    async with running(env.source(holder)) as source:
        await env.apply_policy("guard", [deny("no-puts", "kv.put")])
        await eventually(lambda: effect(holder) == "deny", "the first generation")
        # The apiserver accepts this (CEL cannot know the operation catalog); the sidecar not.
        await env.apply_policy("guard", [deny("no-puts", "kv.pt")])
        await eventually(lambda: holder.last_error is not None, "the rejection")
        assert "kv.pt" in (holder.last_error or "") and "keeping generation 1" in (
            holder.last_error or ""
        )
        assert effect(holder) == "deny" and source.in_force == {"guard": 1}
        await env.wait_annotation({"guard": "1"})
        # Other policies still apply meanwhile.
        await env.apply_policy("extra", [deny("no-gets", "kv.get")])
        await eventually(lambda: effect(holder, "kv.get") == "deny", "the other policy")
        await env.wait_annotation({"extra": "1", "guard": "1"})
        # Fixed: generation 3 is in force.
        await env.apply_policy("guard", [deny("no-puts", "kv.delete")])
        await eventually(lambda: effect(holder) == "allow", "the fixed policy")
        assert holder.last_error is None and source.in_force == {"extra": 1, "guard": 3}
        await env.wait_annotation({"extra": "1", "guard": "3"})


class GoneOnce:
    """The real API, whose first watch reports 410 Gone before anything else."""

    def __init__(self, api: KubePolicyApi) -> None:
        self.api = api
        self.lists = 0
        self.watches = 0

    def list_policies(self) -> tuple[list[dict[str, Any]], str]:
        self.lists += 1
        return self.api.list_policies()

    def watch_policies(self, resource_version: str, timeout_seconds: int) -> Any:
        self.watches += 1
        if self.watches == 1:
            watch = FakeWatch()
            watch.events.put({"type": "ERROR", "object": {"kind": "Status", "code": 410}})
            return watch
        return self.api.watch_policies(resource_version, timeout_seconds)

    def patch_pod_annotation(self, pod_name: str, key: str, value: str) -> None:
        self.api.patch_pod_annotation(pod_name, key, value)

    def close(self) -> None:
        self.api.close()


async def test_cluster_watch_recovers_from_410_gone(env: Env) -> None:
    api = GoneOnce(env.api())
    holder = PolicyHolder()
    source = KubernetesPolicySource(holder, env.namespace, POD_LABELS, POD, api_factory=lambda: api)
    async with running(source):
        await eventually(lambda: api.watches >= 2, "a watch after the 410")
        assert api.lists == 2
        await env.apply_policy("guard", [deny("no-puts", "kv.put")])
        await eventually(lambda: effect(holder) == "deny", "the policy after the relist")


async def test_cluster_start_fails_clearly_without_rbac(env: Env) -> None:
    # The sidecar's service account has no Role in namespace "default".
    source = KubernetesPolicySource(
        PolicyHolder(),
        "default",
        api_factory=lambda: env.api("default"),
        start_timeout_seconds=0.5,
        backoff_initial_seconds=0.1,
    )
    with pytest.raises(PolicySourceError, match=r"HTTP 403.*needs list and watch"):
        await source.start()


def test_cluster_the_sidecar_role_is_least_privilege(env: Env) -> None:
    user = f"system:serviceaccount:{env.namespace}:{SA}"

    def can(*args: str) -> bool:
        out = env.kube.run("auth", "can-i", f"--as={user}", *args, check=False)
        return out.strip() == "yes"

    ns = ["-n", env.namespace]
    assert can("list", "memorypolicies.memsidecar.io", *ns)
    assert can("watch", "memorypolicies.memsidecar.io", *ns)
    assert can("patch", "pods", *ns)
    assert not can("get", "memorypolicies.memsidecar.io", *ns)
    assert not can("update", "memorypolicies.memsidecar.io", *ns)
    assert not can("get", "pods", *ns)
    assert not can("update", "pods", *ns)
    assert not can("list", "memorypolicies.memsidecar.io", "-n", "default")
    assert not can("get", "secrets", *ns)


async def test_cluster_accepts_the_doc_policies(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    for obj in doc_policies().values():
        obj["metadata"] = {"name": obj["metadata"]["name"], "namespace": env.namespace}
        await env.kube.apply(obj)
    # The default client: not in a pod, so from $KUBECONFIG (the sidecar's token).
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(env.token_kubeconfig))
    holder = PolicyHolder()
    source = KubernetesPolicySource(holder, env.namespace, {"app": "planner"}, POD)
    async with running(source):
        assert source.in_force == {"10-baseline": 1, "50-planners": 1}
        assert effect(holder, namespace="prod") == "deny"
        await env.wait_annotation({"10-baseline": "1", "50-planners": "1"})
