"""Episodic settings are checked when the config loads."""

from __future__ import annotations

from datetime import timedelta

import pytest

from memsidecar.sidecar.config import ConfigError, load_config


def test_retention_settings_parse() -> None:
    config = load_config(
        None,
        {
            "blocks.episodic.namespaces": {
                "chat": {"retention_max_age": "7d", "retention_max_events": 100}
            }
        },
    )
    chat = config.blocks.episodic.namespace("episodic", "chat")
    assert chat.retention_max_age == timedelta(days=7)
    assert chat.retention_max_events == 100


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"namespaces": {"x": {"retention_max_age": "0s"}}}, "retention_max_age must be positive"),
        ({"namespaces": {"x": {"retention_max_events": 0}}}, "retention_max_events"),
        ({"namespaces": {"x": {"retention": "1d"}}}, "retention"),
        ({"max_idempotency_key_chars": 35}, "max_idempotency_key_chars"),
        ({"tail_buffer": 0}, "tail_buffer"),
    ],
)
def test_bad_settings_are_rejected(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, {f"blocks.episodic.{k}": v for k, v in settings.items()})
