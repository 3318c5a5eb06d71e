"""The webhook configuration objects."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import yaml

from memsidecar.webhooks.configuration import (
    WebhookEndpoint,
    mutating_webhook_configuration,
    validating_webhook_configuration,
)

SERVICE = WebhookEndpoint(
    service_name="memsidecar-webhook", service_namespace="memsidecar-system", ca_bundle=b"PEM"
)


def test_pod_webhook_skips_kube_system_and_the_control_plane_namespace() -> None:
    config = mutating_webhook_configuration(
        SERVICE, control_plane_namespace="memsidecar-system", extra_excluded_namespaces=["infra"]
    )
    [webhook] = config["webhooks"]
    assert webhook["namespaceSelector"] == {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "memsidecar-system", "infra"],
            }
        ]
    }


def test_pod_webhook_contract() -> None:
    config = mutating_webhook_configuration(SERVICE, control_plane_namespace="memsidecar-system")
    assert config["kind"] == "MutatingWebhookConfiguration"
    [webhook] = config["webhooks"]
    assert webhook["name"] == "inject.memsidecar.io"
    assert webhook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert webhook["sideEffects"] == "None"
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["timeoutSeconds"] == 5
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["matchConditions"][0]["expression"] == (
        "has(object.metadata.annotations) && 'memsidecar.io/inject' in object.metadata.annotations"
    )
    assert webhook["clientConfig"] == {
        "service": {
            "name": "memsidecar-webhook",
            "namespace": "memsidecar-system",
            "port": 443,
            "path": "/mutate-pods",
        },
        "caBundle": base64.b64encode(b"PEM").decode(),
    }


def test_failure_policy_timeout_and_object_selector_are_configurable() -> None:
    config = mutating_webhook_configuration(
        WebhookEndpoint(url="https://127.0.0.1:9443/"),
        control_plane_namespace="ops",
        failure_policy="Ignore",
        timeout_seconds=3,
        object_selector={"matchLabels": {"memory": "on"}},
    )
    [webhook] = config["webhooks"]
    assert webhook["failurePolicy"] == "Ignore" and webhook["timeoutSeconds"] == 3
    assert webhook["objectSelector"] == {"matchLabels": {"memory": "on"}}
    # No CA given: caBundle is left for a CA injector (cert-manager) to fill in.
    assert webhook["clientConfig"] == {"url": "https://127.0.0.1:9443/mutate-pods"}
    with pytest.raises(ValueError, match="Fail or Ignore"):
        mutating_webhook_configuration(SERVICE, control_plane_namespace="x", failure_policy="Nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1-30"):
        mutating_webhook_configuration(SERVICE, control_plane_namespace="x", timeout_seconds=60)


def test_validating_webhooks_cover_both_kinds_on_create_and_update() -> None:
    config = validating_webhook_configuration(SERVICE, annotations={"a": "b"})
    assert config["kind"] == "ValidatingWebhookConfiguration"
    assert config["metadata"]["annotations"] == {"a": "b"}
    by_name = {w["name"]: w for w in config["webhooks"]}
    assert set(by_name) == {
        "memorystores.validate.memsidecar.io",
        "memorypolicies.validate.memsidecar.io",
    }
    for plural, webhook in (
        ("memorystores", by_name["memorystores.validate.memsidecar.io"]),
        ("memorypolicies", by_name["memorypolicies.validate.memsidecar.io"]),
    ):
        assert webhook["rules"][0]["resources"] == [plural]
        assert webhook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
        assert webhook["rules"][0]["apiGroups"] == ["memsidecar.io"]
        assert webhook["sideEffects"] == "None"
        assert "reinvocationPolicy" not in webhook
        assert webhook["clientConfig"]["service"]["path"] == f"/validate-{plural}"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of url or service_name"),
        ({"url": "https://x", "service_name": "s", "service_namespace": "n"}, "exactly one"),
        ({"service_name": "s"}, "service_namespace is required"),
        ({"url": "http://127.0.0.1:9443"}, "must start with https://"),
    ],
)
def test_endpoint_checks(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WebhookEndpoint(**kwargs)  # type: ignore[arg-type]


def test_the_documented_configuration_is_what_the_code_builds() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "injection.md").read_text()
    documented = next(
        doc
        for block in re.findall(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
        for doc in [yaml.safe_load(block.replace("<base64 PEM of the CA>", "UEVN"))]
        if isinstance(doc, dict) and doc.get("kind") == "MutatingWebhookConfiguration"
    )
    built = mutating_webhook_configuration(SERVICE, control_plane_namespace="memsidecar-system")
    del built["metadata"]["labels"]
    assert documented == built
