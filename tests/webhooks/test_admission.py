"""AdmissionReview round trips through review(): pods mutated, custom resources validated."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from memsidecar.webhooks.admission import review, validate_memorypolicy, validate_memorystore
from memsidecar.webhooks.injection import inject
from tests.webhooks.support import (
    SETTINGS,
    admission_review,
    apply_patch,
    pod,
    postgres_minio_store,
    store,
)

STORE_RESOURCE = ("memsidecar.io", "memorystores")
POLICY_RESOURCE = ("memsidecar.io", "memorypolicies")


class Stores:
    """A lookup_store that records its calls."""

    def __init__(self, *stores: dict[str, Any]) -> None:
        self.stores = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in stores}
        self.calls: list[tuple[str, str]] = []

    def __call__(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append((namespace, name))
        return self.stores.get((namespace, name))


def decoded_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    assert response["response"]["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(response["response"]["patch"]))
    return ops


def policy(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "memsidecar.io/v1alpha1",
        "kind": "MemoryPolicy",
        "metadata": {"name": "limits", "namespace": "team-a"},
        "spec": spec,
    }


# --- pods ----------------------------------------------------------------------------------


def test_opted_in_pod_gets_a_base64_json_patch() -> None:
    p = pod({"memsidecar.io/inject": "true", "memsidecar.io/store": "prod"})
    req = admission_review(p)
    stores = Stores(postgres_minio_store())
    out = review(req, stores, SETTINGS)
    assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
    assert out["response"]["uid"] == req["request"]["uid"]
    assert out["response"]["allowed"] is True
    ops = decoded_patch(out)
    assert ops == inject(p, postgres_minio_store(), SETTINGS)
    admitted = apply_patch(p, ops)
    assert admitted["spec"]["initContainers"][0]["name"] == "memsidecar"
    assert stores.calls == [("team-a", "prod")]
    # The admitted pod, reviewed again (reinvocation), is allowed unchanged.
    again = review(admission_review(admitted), stores, SETTINGS)
    assert again["response"] == {"uid": again["response"]["uid"], "allowed": True}


def test_missing_store_is_denied_with_a_message_that_says_what_to_do() -> None:
    p = pod({"memsidecar.io/inject": "true", "memsidecar.io/store": "prod"})
    del p["metadata"]["namespace"]
    out = review(admission_review(p, namespace="team-b"), Stores(), SETTINGS)
    response = out["response"]
    assert response["allowed"] is False
    assert "patch" not in response
    assert response["status"]["code"] == 403
    assert response["status"]["message"] == (
        "MemoryStore team-b/prod does not exist; create it or set memsidecar.io/store"
    )


def test_pod_that_did_not_opt_in_is_allowed_without_a_lookup() -> None:
    stores = Stores()
    out = review(admission_review(pod(annotations={})), stores, SETTINGS)
    assert out["response"]["allowed"] is True and "patch" not in out["response"]
    assert stores.calls == []


def test_bad_annotation_is_denied() -> None:
    out = review(admission_review(pod({"memsidecar.io/inject": "yes"})), Stores(), SETTINGS)
    assert out["response"]["allowed"] is False
    assert 'memsidecar.io/inject must be "true" or "false"' in out["response"]["status"]["message"]


def test_only_pod_creation_is_mutated() -> None:
    p = pod()
    for operation in ("UPDATE", "DELETE"):
        out = review(admission_review(p, operation=operation), Stores(), SETTINGS)
        assert out["response"]["allowed"] is True and "patch" not in out["response"]


def test_store_that_is_not_ready_adds_a_warning() -> None:
    s = store()
    s["status"] = {
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "SecretNotFound",
                "message": "Secret pg not found",
            }
        ]
    }
    out = review(admission_review(pod()), Stores(s), SETTINGS)
    assert out["response"]["allowed"] is True
    assert out["response"]["warnings"] == [
        "MemoryStore team-a/default is not Ready (SecretNotFound: Secret pg not found); the "
        "sidecar will not become ready until it is"
    ]


# --- MemoryStore validation ----------------------------------------------------------------


def test_valid_store_is_allowed() -> None:
    out = review(
        admission_review(postgres_minio_store(), resource=STORE_RESOURCE), Stores(), SETTINGS
    )
    assert out["response"]["allowed"] is True


def test_store_with_an_undefined_embedder_is_denied_naming_the_field() -> None:
    bad = store(blocks={"semantic": {"namespaces": {"docs": {"embedder": "nope"}}}})
    out = review(admission_review(bad, resource=STORE_RESOURCE), Stores(), SETTINGS)
    response = out["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 422
    message = response["status"]["message"]
    assert message.startswith("MemoryStore team-a/default is invalid:\n  spec.blocks.semantic")
    assert "uses embedder 'nope', which is not defined" in message


def test_metadata_only_update_of_an_invalid_store_is_allowed() -> None:
    bad = store(blocks={"semantic": {"namespaces": {"docs": {"embedder": "nope"}}}})
    finalized = json.loads(json.dumps(bad))
    finalized["metadata"]["finalizers"] = ["memsidecar.io/cleanup"]
    req = admission_review(finalized, resource=STORE_RESOURCE, operation="UPDATE", old=bad)
    assert review(req, Stores(), SETTINGS)["response"]["allowed"] is True
    changed = json.loads(json.dumps(bad))
    changed["spec"]["tenant"] = "x"
    req = admission_review(changed, resource=STORE_RESOURCE, operation="UPDATE", old=bad)
    assert review(req, Stores(), SETTINGS)["response"]["allowed"] is False


def test_delete_is_never_refused() -> None:
    req = admission_review(None, resource=STORE_RESOURCE, operation="DELETE")
    assert review(req, Stores(), SETTINGS)["response"]["allowed"] is True


# --- MemoryPolicy validation ---------------------------------------------------------------


def test_valid_policy_is_allowed() -> None:
    good = policy(
        podSelector={"matchLabels": {"app": "agent"}},
        defaultEffect="deny",
        rules=[
            {"name": "read", "effect": "allow", "match": {"ops": ["get", "scan"]}},
            {
                "name": "slow",
                "effect": "rate_limit",
                "match": {"blocks": ["kv"]},
                "rate": {"perSecond": 5, "burst": 10},
            },
        ],
    )
    req = admission_review(good, resource=POLICY_RESOURCE)
    assert review(req, Stores(), SETTINGS)["response"]["allowed"] is True


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        (
            [{"name": "a", "effect": "allow"}, {"name": "a", "effect": "deny"}],
            "spec.rules[1] (name 'a'): name is already used by rules[0]",
        ),
        (
            [{"name": "all", "effect": "deny"}, {"name": "later", "effect": "allow"}],
            "rules[1] (name 'later'): unreachable",
        ),
        (
            [{"name": "typo", "effect": "deny", "match": {"ops": ["kv.pt"]}}],
            "op pattern 'kv.pt' matches no operation",
        ),
        (
            [{"name": "b", "effect": "deny", "match": {"blocks": ["graph"]}}],
            "block pattern 'graph' matches no block",
        ),
    ],
)
def test_policy_the_engine_rejects_is_denied(rules: list[dict[str, Any]], problem: str) -> None:
    req = admission_review(policy(rules=rules), resource=POLICY_RESOURCE)
    response = review(req, Stores(), SETTINGS)["response"]
    assert response["allowed"] is False
    assert response["status"]["message"].startswith("MemoryPolicy team-a/limits is invalid:")
    assert problem in response["status"]["message"]


# --- malformed input -----------------------------------------------------------------------


def test_unexpected_resource_is_refused_with_a_hint() -> None:
    req = admission_review({"metadata": {}}, resource=("apps", "deployments"))
    response = review(req, Stores(), SETTINGS)["response"]
    assert response["allowed"] is False and response["status"]["code"] == 400
    assert "does not handle deployments.apps" in response["status"]["message"]


def test_review_without_a_request_is_refused() -> None:
    response = review({"apiVersion": "admission.k8s.io/v1"}, Stores(), SETTINGS)["response"]
    assert response["allowed"] is False and response["status"]["code"] == 400


def test_pod_review_without_an_object_is_refused() -> None:
    response = review(admission_review(None), Stores(), SETTINGS)["response"]
    assert response["allowed"] is False and response["status"]["code"] == 400


def test_documented_examples_pass_the_webhook_checks() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "crds.md").read_text()
    kinds = []
    for block in re.findall(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        for doc in yaml.safe_load_all(block):
            if isinstance(doc, dict) and doc.get("kind") == "MemoryStore":
                assert validate_memorystore(doc) == [], doc["metadata"]
                kinds.append("MemoryStore")
            if isinstance(doc, dict) and doc.get("kind") == "MemoryPolicy":
                assert validate_memorypolicy(doc) == [], doc["metadata"]
                kinds.append("MemoryPolicy")
    assert kinds.count("MemoryStore") == 2 and kinds.count("MemoryPolicy") == 1
