"""StoreReconciler and PolicyReconciler over an in-memory API (no cluster): what they
write, and that a second pass on the same input writes nothing."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest

from memsidecar.operator.kube import KubeError
from memsidecar.operator.policies import PodInfo, PolicyReconciler, policy_path
from memsidecar.operator.stores import StoreReconciler, store_path

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class MemoryKube:
    """GET / POST / merge-PATCH on a dict of path → object; records every write."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self.forbidden: set[str] = set()

    async def get(self, path: str) -> dict[str, Any] | None:
        if path in self.forbidden:
            raise KubeError(403, "Forbidden", "no")
        obj = self.objects.get(path)
        return copy.deepcopy(obj) if obj is not None else None

    async def create(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        path = f"{collection}/{body['metadata']['name']}"
        self.objects[path] = copy.deepcopy(body)
        self.writes.append(("create", path))
        return body

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        target = path.removesuffix("/status")
        merge(self.objects[target], patch)
        self.writes.append(("patch", path))
        return self.objects[target]


def store(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "memsidecar.io/v1alpha1",
        "kind": "MemoryStore",
        "metadata": {"name": "main", "namespace": "team-a", "uid": "u1", "generation": 1},
        "spec": spec,
    }


@pytest.fixture
def kube() -> MemoryKube:
    return MemoryKube()


def reconciler(kube: MemoryKube, events: list[tuple[str, str]]) -> StoreReconciler:
    return StoreReconciler(
        kube,  # type: ignore[arg-type]
        backend_timeout=2,
        migration_timeout=10,
        events=lambda _body, type_, reason, _msg: events.append((type_, reason)),
        clock=lambda: T0,
    )


async def test_memory_store_renders_once_and_then_writes_nothing(kube: MemoryKube) -> None:
    kube.objects[store_path("team-a", "main")] = store()
    events: list[tuple[str, str]] = []
    rec = reconciler(kube, events)
    outcome = await rec.reconcile("team-a", "main")
    assert outcome is not None and outcome.ready and not outcome.retry
    assert outcome.config_map == "created"
    assert kube.writes == [
        ("create", "/api/v1/namespaces/team-a/configmaps/memsidecar-main"),
        ("patch", "/apis/memsidecar.io/v1alpha1/namespaces/team-a/memorystores/main/status"),
    ]
    assert ("Normal", "Ready") in events and ("Normal", "ConfigRendered") in events

    kube.writes.clear()
    events.clear()
    again = await rec.reconcile("team-a", "main")
    assert again is not None and again.ready and not again.status_written
    assert again.config_map == "unchanged"
    assert kube.writes == [] and events == []


async def test_gone_store_is_none(kube: MemoryKube) -> None:
    assert await reconciler(kube, []).reconcile("team-a", "main") is None


async def test_unreadable_secret_is_reported(kube: MemoryKube) -> None:
    kube.objects[store_path("team-a", "main")] = store(
        postgres={"dsnSecretRef": {"name": "pg"}}, blocks={"kv": {"driver": "postgres"}}
    )
    kube.forbidden.add("/api/v1/namespaces/team-a/secrets/pg")
    outcome = await reconciler(kube, []).reconcile("team-a", "main")
    assert outcome is not None and outcome.retry and outcome.reason == "SecretForbidden"
    assert "needs get on secrets" in outcome.message


async def test_policy_reconciler_counts_and_is_quiet_when_nothing_changes(
    kube: MemoryKube,
) -> None:
    path = policy_path("team-a", "limits")
    kube.objects[path] = {
        "apiVersion": "memsidecar.io/v1alpha1",
        "kind": "MemoryPolicy",
        "metadata": {"name": "limits", "namespace": "team-a", "generation": 2},
        "spec": {"rules": [{"name": "r", "effect": "deny", "match": {"ops": ["kv.delete"]}}]},
    }
    events: list[str] = []
    rec = PolicyReconciler(
        kube,  # type: ignore[arg-type]
        events=lambda _b, _t, reason, _m: events.append(reason),
        clock=lambda: T0,
    )
    pods = [PodInfo("a", (), (("limits", "2"),)), PodInfo("b", (), (("limits", "1"),))]
    outcome = await rec.reconcile("team-a", "limits", pods)
    assert outcome is not None and (outcome.selected, outcome.loaded) == (2, 1)
    assert events == ["Valid"] and outcome.status_written
    assert not rec.stale(kube.objects[path], pods)
    again = await rec.reconcile("team-a", "limits", pods)
    assert again is not None and not again.status_written and events == ["Valid"]
    assert rec.stale(kube.objects[path], pods[:1])
