"""The operator's admission glue around webhooks.admission.review()."""

from __future__ import annotations

from typing import Any

from memsidecar.operator.admission import Admission, request, verdict
from memsidecar.operator.handlers import (
    MUTATE_PODS,
    VALIDATE_POLICIES,
    VALIDATE_STORES,
    Operator,
    build_registry,
)
from memsidecar.operator.kube import KubeError
from memsidecar.operator.settings import load_settings
from memsidecar.webhooks.admission import allow, deny
from memsidecar.webhooks.configuration import WebhookEndpoint, mutating_webhook_configuration
from memsidecar.webhooks.injection import InjectionSettings

SETTINGS = InjectionSettings(default_image="example/sidecar:1")


class FakeKube:
    """Answers GETs from a dict of path → object; records what was asked."""

    def __init__(self, objects: dict[str, dict[str, Any]] | None = None, fail: bool = False):
        self.objects = objects or {}
        self.fail = fail
        self.asked: list[str] = []

    async def get(self, path: str) -> dict[str, Any] | None:
        self.asked.append(path)
        if self.fail:
            raise KubeError(503, "ServiceUnavailable", "etcd is down")
        return self.objects.get(path)


STORE_PATH = "/apis/memsidecar.io/v1alpha1/namespaces/team-a/memorystores/default"
STORE = {
    "apiVersion": "memsidecar.io/v1alpha1",
    "kind": "MemoryStore",
    "metadata": {"name": "default", "namespace": "team-a", "uid": "u1", "generation": 1},
    "spec": {},
}


def pod(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "agent-",
            "namespace": "team-a",
            "annotations": {"memsidecar.io/inject": "true", **(annotations or {})},
        },
        "spec": {"containers": [{"name": "agent", "image": "python:3.11-slim"}]},
    }


async def test_injects_with_the_store_read_from_the_api() -> None:
    kube = FakeKube({STORE_PATH: STORE})
    admission = Admission(kube, SETTINGS)  # type: ignore[arg-type]
    v = await admission.review_pod(pod(), namespace="team-a", operation="CREATE")
    assert v.allowed and v.result == "patched"
    assert kube.asked == [STORE_PATH]
    sidecar = next(op for op in v.patch if op["path"] == "/spec/initContainers")
    assert sidecar["value"][0]["image"] == "example/sidecar:1"
    assert sidecar["value"][0]["restartPolicy"] == "Always"


async def test_missing_store_is_denied_with_its_name() -> None:
    admission = Admission(FakeKube(), SETTINGS)  # type: ignore[arg-type]
    v = await admission.review_pod(
        pod({"memsidecar.io/store": "nope"}), namespace="team-a", operation="CREATE"
    )
    assert not v.allowed and v.result == "denied"
    assert v.message.startswith("MemoryStore team-a/nope does not exist")


async def test_api_failure_denies_with_retry_hint() -> None:
    admission = Admission(FakeKube(fail=True), SETTINGS)  # type: ignore[arg-type]
    v = await admission.review_pod(pod(), namespace="team-a", operation="CREATE")
    assert not v.allowed and v.code == 503 and "retry" in v.message


async def test_uninterested_pods_cost_no_lookup() -> None:
    kube = FakeKube()
    admission = Admission(kube, SETTINGS)  # type: ignore[arg-type]
    plain = pod()
    plain["metadata"]["annotations"] = {}
    v = await admission.review_pod(plain, namespace="team-a", operation="CREATE")
    assert v.allowed and v.patch == [] and kube.asked == []
    v = await admission.review_pod(pod(), namespace="team-a", operation="UPDATE")
    assert v.allowed and kube.asked == []


async def test_invalid_annotation_is_denied_without_lookup() -> None:
    kube = FakeKube()
    admission = Admission(kube, SETTINGS)  # type: ignore[arg-type]
    v = await admission.review_pod(
        pod({"memsidecar.io/inject": "yes please"}), namespace="team-a", operation="CREATE"
    )
    assert not v.allowed and "memsidecar.io/inject" in v.message and kube.asked == []


def test_object_validation() -> None:
    admission = Admission(FakeKube(), SETTINGS)  # type: ignore[arg-type]
    bad = {
        "metadata": {"name": "p", "namespace": "team-a"},
        "spec": {"rules": [{"name": "r", "effect": "deny", "match": {"ops": ["kv.nope"]}}]},
    }
    v = admission.review_object(
        "memorypolicies", namespace="team-a", operation="CREATE", obj=bad, old=None
    )
    assert not v.allowed and v.code == 422 and "kv.nope" in v.message
    # Metadata-only updates of an object admitted earlier are never refused.
    v = admission.review_object(
        "memorypolicies", namespace="team-a", operation="UPDATE", obj=bad, old=bad
    )
    assert v.allowed


def test_verdict_decoding_round_trips() -> None:
    ops = [{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]
    assert verdict(allow("u", ops, ["careful"])).patch == ops
    assert verdict(allow("u", ops, ["careful"])).warnings == ["careful"]
    denied = verdict(deny("u", "no", 422, "Invalid"))
    assert (denied.allowed, denied.message, denied.code) == (False, "no", 422)
    req = request(group="", version="v1", plural="pods", operation="CREATE", namespace="n", obj={})
    assert req["request"]["resource"] == {"group": "", "version": "v1", "resource": "pods"}


def test_handler_ids_are_the_configured_webhook_paths() -> None:
    settings = load_settings({})
    op = Operator(settings, FakeKube())  # type: ignore[arg-type]
    registry = build_registry(op)
    ids = {handler.id for handler in registry._webhooks.get_all_handlers()}
    assert ids == {MUTATE_PODS, VALIDATE_STORES, VALIDATE_POLICIES}
    config = mutating_webhook_configuration(
        WebhookEndpoint(url="https://127.0.0.1:1"), control_plane_namespace="x"
    )
    assert config["webhooks"][0]["clientConfig"]["url"].endswith("/" + MUTATE_PODS)
    off = build_registry(Operator(load_settings({"webhook_enabled": False}), FakeKube()))  # type: ignore[arg-type]
    assert not off._webhooks.get_all_handlers()
