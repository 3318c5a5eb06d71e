"""The operator's webhook certificate and configurations (local-run mode)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from memsidecar.operator.settings import load_settings
from memsidecar.operator.webhookconfig import (
    CertificateError,
    certificate_names,
    configurations,
    prepare_certificates,
)


def test_generated_certificate_covers_the_host_and_is_reused(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "webhook_host": "127.0.0.1",
            "webhook_generate_certificates": True,
            "webhook_cert_dir": tmp_path,
        }
    )
    cert, key, ca = prepare_certificates(settings)
    assert ca is not None and key.stat().st_mode & 0o077 == 0
    sans = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert [str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    again = prepare_certificates(settings)
    assert again[2] == ca  # same CA across restarts: the caBundle stays valid


def test_service_names(tmp_path: Path) -> None:
    settings = load_settings(
        {"webhook_service": "memsidecar-webhook", "namespace": "memsidecar-system"}
    )
    dns, ips = certificate_names(settings)
    assert "memsidecar-webhook.memsidecar-system.svc" in dns and ips == []


def test_mounted_certificate_must_exist(tmp_path: Path) -> None:
    settings = load_settings({"webhook_cert_dir": tmp_path})
    with pytest.raises(CertificateError, match=r"tls\.crt"):
        prepare_certificates(settings)


def test_configurations_use_the_settings() -> None:
    settings = load_settings(
        {
            "namespace": "memsidecar-system",
            "webhook_host": "127.0.0.1",
            "webhook_port": 8443,
            "webhook_failure_policy": "Ignore",
            "webhook_timeout_seconds": 3,
            "webhook_configuration_name": "ms-test",
            "webhook_namespace_labels": {"run": "r1"},
        }
    )
    mutating, validating = configurations(settings, b"-----CA-----")
    hook = mutating["webhooks"][0]
    assert mutating["metadata"]["name"] == "ms-test"
    assert hook["clientConfig"]["url"] == "https://127.0.0.1:8443/mutate-pods"
    assert hook["failurePolicy"] == "Ignore" and hook["timeoutSeconds"] == 3
    assert hook["sideEffects"] == "None" and hook["reinvocationPolicy"] == "IfNeeded"
    selector = hook["namespaceSelector"]
    assert selector["matchLabels"] == {"run": "r1"}
    assert selector["matchExpressions"][0]["values"] == ["kube-system", "memsidecar-system"]
    paths = [w["clientConfig"]["url"].rsplit("/", 1)[1] for w in validating["webhooks"]]
    assert paths == ["validate-memorystores", "validate-memorypolicies"]
    assert all(
        w["namespaceSelector"] == {"matchLabels": {"run": "r1"}} for w in validating["webhooks"]
    )
