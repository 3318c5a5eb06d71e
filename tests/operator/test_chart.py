"""The Helm chart: lint, render, agree with the Python sources of truth, and pass a
server-side dry run (with the restricted Pod Security Standard enforced) on the real
kube-apiserver."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from memsidecar.operator.settings import OperatorSettings, load_settings
from memsidecar.webhooks.configuration import (
    WebhookEndpoint,
    mutating_webhook_configuration,
    validating_webhook_configuration,
)
from tests.operator.cluster import Kubectl
from tests.support import REPO

CHART = REPO / "charts" / "memsidecar"
NAMESPACE = "memsidecar-system"
RELEASE = "ms"
KUBE_VERSION = "1.35.4"
HELM_HINT = (
    "helm is needed for the chart tests: GOBIN=~/.cache/memsidecar/bin go install "
    "helm.sh/helm/v3/cmd/helm@v3.19.0"
)


@pytest.fixture(scope="module")
def helm() -> str:
    cache = Path(os.environ.get("MEMSIDECAR_CACHE") or Path.home() / ".cache/memsidecar")
    found = shutil.which("helm") or (
        str(cache / "bin" / "helm") if (cache / "bin" / "helm").is_file() else None
    )
    if found is None:
        pytest.fail(HELM_HINT, pytrace=False)
    return found


def render(
    helm: str, *sets: str, namespace: str = NAMESPACE, crds: bool = False, check: bool = True
) -> subprocess.CompletedProcess[str]:
    args = [
        helm,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
    ]
    if crds:
        args.append("--include-crds")
    for value in sets:
        args += ["--set", value]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm template failed:\n{result.stderr}")
    return result


def objects(helm: str, *sets: str, **kw: Any) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render(helm, *sets, **kw).stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_lint(helm: str) -> None:
    result = subprocess.run(
        [helm, "lint", str(CHART), "--kube-version", KUBE_VERSION],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_render(helm: str) -> None:
    docs = objects(helm, crds=True)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ServiceAccount",
            "Secret",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ]
    )
    # The chart's crds/ is the repository's crds/ (one source).
    crd_names = {d["metadata"]["name"] for d in by_kind(docs, "CustomResourceDefinition")}
    assert crd_names == {"memorystores.memsidecar.io", "memorypolicies.memsidecar.io"}
    assert (CHART / "crds").resolve() == (REPO / "crds").resolve()


def test_pods_are_restricted(helm: str) -> None:
    (deployment,) = by_kind(objects(helm), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True


def test_operator_env_is_valid_operator_settings(
    helm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = objects(
        helm,
        "operator.watchNamespaces={team-*,!team-legacy}",
        "sidecar.image.digest=sha256:" + "a" * 64,
    )
    (deployment,) = by_kind(docs, "Deployment")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    values = {e["name"]: e.get("value") for e in env}
    prefix = "MEMSIDECAR_OPERATOR_"
    fields = {f"{prefix}{name.upper()}" for name in OperatorSettings.model_fields}
    ours = {name for name in values if name.startswith(prefix)}
    assert ours <= fields, f"env vars that are no operator setting: {ours - fields}"
    for name, value in values.items():
        if name.startswith(prefix) and value is not None:
            monkeypatch.setenv(name, value)
    settings = load_settings({"namespace": NAMESPACE})
    assert settings.watch_namespaces == ["team-*", "!team-legacy"]
    assert settings.sidecar_image == "ghcr.io/memsidecar/memsidecar-sidecar@sha256:" + "a" * 64
    assert settings.sidecar_resources["limits"] == {"memory": "256Mi"}
    assert settings.webhook_cert_dir == Path("/etc/memsidecar-operator/tls")
    assert not settings.webhook_manage_configuration  # the chart owns the configurations


def _strip(webhooks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for hook in webhooks:
        hook = dict(hook)
        hook["clientConfig"] = {k: v for k, v in hook["clientConfig"].items() if k != "caBundle"}
        out.append(hook)
    return out


def test_webhook_configurations_match_configuration_py(helm: str) -> None:
    docs = objects(
        helm,
        "webhook.failurePolicy=Ignore",
        "webhook.validationFailurePolicy=Ignore",
        "webhook.timeoutSeconds=3",
    )
    (mutating,) = by_kind(docs, "MutatingWebhookConfiguration")
    (validating,) = by_kind(docs, "ValidatingWebhookConfiguration")
    endpoint = WebhookEndpoint(
        service_name=f"{RELEASE}-memsidecar-webhook", service_namespace=NAMESPACE
    )
    want_m = mutating_webhook_configuration(
        endpoint, control_plane_namespace=NAMESPACE, failure_policy="Ignore", timeout_seconds=3
    )
    want_v = validating_webhook_configuration(endpoint, failure_policy="Ignore", timeout_seconds=3)
    assert _strip(mutating["webhooks"]) == want_m["webhooks"]
    assert _strip(validating["webhooks"]) == want_v["webhooks"]


def test_helm_certificate_serves_the_service_and_matches_the_ca_bundle(helm: str) -> None:
    docs = objects(helm)
    (secret,) = by_kind(docs, "Secret")
    ca_pem = base64.b64decode(secret["data"]["ca.crt"])
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{RELEASE}-memsidecar-webhook.{NAMESPACE}.svc" in sans.get_values_for_type(x509.DNSName)
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for hook in by_kind(docs, kind)[0]["webhooks"]:
            assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca_pem


def test_cert_manager_and_provided_certificates(helm: str) -> None:
    docs = objects(helm, "webhook.certificate.source=certManager")
    assert not by_kind(docs, "Secret")
    assert {d["kind"] for d in docs} >= {"Certificate", "Issuer"}
    (mutating,) = by_kind(docs, "MutatingWebhookConfiguration")
    assert mutating["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{RELEASE}-memsidecar-webhook"
    }
    assert "caBundle" not in mutating["webhooks"][0]["clientConfig"]

    missing = render(helm, "webhook.certificate.source=provided", check=False)
    assert missing.returncode != 0 and "is required with source=provided" in missing.stderr
    docs = objects(
        helm,
        "webhook.certificate.source=provided",
        "webhook.certificate.secretName=my-tls",
        "webhook.certificate.caBundle=Q0E=",
    )
    (deployment,) = by_kind(docs, "Deployment")
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "my-tls", "defaultMode": 0o440}} in volumes
    (validating,) = by_kind(docs, "ValidatingWebhookConfiguration")
    assert validating["webhooks"][0]["clientConfig"]["caBundle"] == "Q0E="


def test_sidecar_role_bindings(helm: str) -> None:
    docs = objects(
        helm,
        "sidecar.rbac.bindings[0].namespace=team-a",
        "sidecar.rbac.bindings[0].serviceAccounts={planner,worker}",
        "sidecar.rbac.bindings[1].namespace=team-b",
    )
    bindings = by_kind(docs, "RoleBinding")
    assert [(b["metadata"]["namespace"], [s["name"] for s in b["subjects"]]) for b in bindings] == [
        ("team-a", ["planner", "worker"]),
        ("team-b", ["default"]),
    ]
    sidecar_role = next(
        r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"].endswith("-sidecar")
    )
    assert sidecar_role["rules"] == [
        {
            "apiGroups": ["memsidecar.io"],
            "resources": ["memorypolicies"],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]},
    ]


@pytest.fixture
def restricted_namespace(kubectl: Kubectl, run_id: str) -> Iterator[str]:
    name = f"msop-{run_id}-chart"
    labels = {
        f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
    }
    kubectl.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    )
    try:
        yield name
    finally:
        kubectl.run("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def test_server_side_dry_run_under_restricted_pod_security(
    helm: str, kubectl: Kubectl, restricted_namespace: str
) -> None:
    manifest = render(
        helm,
        f"sidecar.rbac.bindings[0].namespace={restricted_namespace}",
        namespace=restricted_namespace,
        crds=True,
    ).stdout
    result = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=manifest, check=False)
    assert result.returncode == 0, result.stderr
    assert "PodSecurity" not in result.stderr and "violate" not in result.stderr, result.stderr
    assert "deployment.apps/ms-memsidecar-operator created (server dry run)" in result.stdout
