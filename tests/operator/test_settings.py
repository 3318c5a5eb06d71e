"""Operator settings: flags over env, clear errors, backoff."""

from __future__ import annotations

from pathlib import Path

import pytest

from memsidecar.operator.settings import SettingsError, load_settings, parse_args


def test_defaults_are_valid_and_cluster_wide() -> None:
    settings = parse_args([])
    assert settings.watch_namespaces == []
    assert settings.webhook_port == 9443 and settings.webhook_failure_policy == "Fail"
    assert not settings.webhook_manage_configuration


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSIDECAR_OPERATOR_WEBHOOK_PORT", "9000")
    monkeypatch.setenv("MEMSIDECAR_OPERATOR_SIDECAR_IMAGE", "example/sidecar:env")
    settings = parse_args(["--webhook-port", "9100", "--watch-namespace", "team-*"])
    assert settings.webhook_port == 9100
    assert settings.sidecar_image == "example/sidecar:env"
    assert settings.watch_namespaces == ["team-*"]


def test_json_and_boolean_flags() -> None:
    settings = parse_args(
        [
            "--webhook-namespace-labels",
            '{"memsidecar.io/inject-here": "yes"}',
            "--sidecar-resources",
            '{"requests": {"cpu": "10m"}}',
            "--no-webhook-enabled",
        ]
    )
    assert settings.webhook_namespace_labels == {"memsidecar.io/inject-here": "yes"}
    assert settings.injection().default_resources == {"requests": {"cpu": "10m"}}
    assert settings.webhook_enabled is False


def test_errors_name_the_flag_and_env() -> None:
    with pytest.raises(SettingsError) as info:
        parse_args(["--webhook-port", "0"])
    assert "--webhook-port or env MEMSIDECAR_OPERATOR_WEBHOOK_PORT" in str(info.value)
    with pytest.raises(SettingsError, match="not JSON"):
        parse_args(["--webhook-namespace-labels", "{"])


def test_managed_configuration_needs_an_endpoint() -> None:
    with pytest.raises(SettingsError, match="exactly one of webhook_host"):
        load_settings({"webhook_manage_configuration": True})
    with pytest.raises(SettingsError, match="needs `namespace`"):
        load_settings({"webhook_manage_configuration": True, "webhook_service": "svc"})
    ok = load_settings(
        {"webhook_manage_configuration": True, "webhook_service": "svc", "namespace": "ops"}
    )
    endpoint = ok.endpoint(b"CA")
    assert endpoint.client_config("/p")["service"] == {
        "name": "svc",
        "namespace": "ops",
        "port": 443,
        "path": "/p",
    }


def test_url_endpoint_brackets_ipv6() -> None:
    settings = load_settings({"webhook_host": "::1", "webhook_port": 9443})
    assert settings.endpoint(None).url == "https://[::1]:9443"


def test_retry_delay_doubles_up_to_the_cap() -> None:
    settings = load_settings({"retry_base_seconds": 1, "retry_max_seconds": 10})
    assert [settings.retry_delay(n) for n in range(6)] == [1, 2, 4, 8, 10, 10]
    assert settings.retry_delay(10_000) == 10
    with pytest.raises(SettingsError, match="retry_base_seconds"):
        load_settings({"retry_base_seconds": 5, "retry_max_seconds": 1})


def test_kubeconfig_path(tmp_path: Path) -> None:
    settings = parse_args(["--kubeconfig", str(tmp_path / "kc")])
    assert settings.kubeconfig == tmp_path / "kc"
