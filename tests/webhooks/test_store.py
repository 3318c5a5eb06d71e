"""MemoryStore → sidecar config: the rendered file loads in the real sidecar config loader."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel

from memsidecar.sidecar.auth.settings import AuthSettings
from memsidecar.sidecar.backends.postgres import PostgresOptions
from memsidecar.sidecar.blocks.artifact.drivers.localfs import LocalFSOptions
from memsidecar.sidecar.blocks.artifact.drivers.s3 import S3Options
from memsidecar.sidecar.blocks.artifact.settings import ArtifactNamespace, ArtifactSettings
from memsidecar.sidecar.blocks.episodic.settings import EpisodicNamespace, EpisodicSettings
from memsidecar.sidecar.blocks.kv.settings import KVNamespace, KVSettings
from memsidecar.sidecar.blocks.lease.settings import LeaseNamespace, LeaseSettings
from memsidecar.sidecar.blocks.semantic.settings import (
    EmbedderSettings,
    SemanticNamespace,
    SemanticSettings,
)
from memsidecar.sidecar.blocks.session.settings import SessionSettings
from memsidecar.sidecar.config import SidecarConfig, load_config
from memsidecar.webhooks.contract import CONFIG_KEY
from memsidecar.webhooks.fields import (
    BLOCK_LIMITS,
    EMBEDDER_FIELDS,
    NAMESPACE_FIELDS,
    PGVECTOR_FIELDS,
    SESSION_FIELDS,
    SettingField,
)
from memsidecar.webhooks.store import (
    StoreSpecError,
    config_hash,
    drivers_summary,
    render_sidecar_config,
    render_sidecar_yaml,
    secret_names,
    sidecar_config_map,
    store_env,
    validate_store,
)
from tests.webhooks.support import postgres_minio_store, store

BLOCK_MODELS: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "kv": (KVSettings, KVNamespace),
    "episodic": (EpisodicSettings, EpisodicNamespace),
    "semantic": (SemanticSettings, SemanticNamespace),
    "artifact": (ArtifactSettings, ArtifactNamespace),
    "lease": (LeaseSettings, LeaseNamespace),
}


@pytest.fixture(autouse=True)
def _no_sidecar_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("MEMSIDECAR_") and "__" in name:
            monkeypatch.delenv(name)


def load_rendered(tmp_path: Path, obj: dict[str, Any]) -> SidecarConfig:
    """Render like the operator does (the ConfigMap's YAML) and load like the sidecar does."""
    path = tmp_path / CONFIG_KEY
    path.write_text(render_sidecar_yaml(obj))
    return load_config(path)


def as_from_api_server(obj: dict[str, Any]) -> dict[str, Any]:
    """The API server does not keep map key order; sort every map to prove we don't need it."""
    result: dict[str, Any] = json.loads(json.dumps(obj, sort_keys=True))
    return result


# --- the sidecar settings and the CRD fields stay in step ----------------------------------


def test_every_block_setting_is_a_crd_limit() -> None:
    for block, (settings, _) in BLOCK_MODELS.items():
        structural = {"driver", "options", "namespaces", "embedders", "pgvector"}
        expected = set(settings.model_fields) - structural
        assert {f.name for f in BLOCK_LIMITS[block]} == expected, block


def test_every_namespace_session_and_embedder_setting_is_a_crd_field() -> None:
    for block, (_, namespace) in BLOCK_MODELS.items():
        assert {f.name for f in NAMESPACE_FIELDS[block]} == set(namespace.model_fields), block
    assert {f.name for f in SESSION_FIELDS} == set(SessionSettings.model_fields)
    handled_apart = {"type", "model", "url", "api_key_env"}
    assert {f.name for f in EMBEDDER_FIELDS} | handled_apart == set(EmbedderSettings.model_fields)
    pgvector = SemanticSettings.model_fields["pgvector"].annotation
    assert isinstance(pgvector, type) and issubclass(pgvector, BaseModel)
    assert {f.name for f in PGVECTOR_FIELDS} == set(pgvector.model_fields)


# --- rendering ---------------------------------------------------------------------------


def test_empty_store_renders_the_in_pod_defaults(tmp_path: Path) -> None:
    config = load_rendered(tmp_path, store(namespace="team-a"))
    assert config.identity.tenant == "team-a"
    assert str(config.listen.socket) == "/var/run/memsidecar/memsidecar.sock"
    assert config.listen.socket_mode == "0666"
    assert config.log_level == "info"
    assert {b: getattr(config.blocks, b).driver for b in BLOCK_MODELS} == {
        "kv": "memory",
        "episodic": "memory",
        "semantic": "memory",
        "artifact": "localfs",
        "lease": "memory",
    }
    assert config.blocks.artifact.options == {"root": "/var/lib/memsidecar/artifacts"}
    assert LocalFSOptions.model_validate(config.blocks.artifact.options).root == Path(
        "/var/lib/memsidecar/artifacts"
    )
    raw = render_sidecar_config(store())
    assert "auth" not in raw
    assert "options" not in raw["blocks"]["kv"]


def test_postgres_minio_store_renders_and_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_rendered(tmp_path, as_from_api_server(postgres_minio_store()))
    assert config.identity.tenant == "acme"
    assert config.log_level == "debug"
    kv = config.blocks.kv
    assert kv.driver == "postgres"
    assert kv.options == {
        "dsn_env": "MEMSIDECAR_PG_DSN",
        "pool_min": 1,
        "pool_max": 5,
        "command_timeout": 8,
        "connect_timeout": 3,
    }
    assert kv.max_value_bytes == 2 * 1024 * 1024 and kv.max_scan_limit == 500
    # The options are what the real Postgres backend accepts, once the env var is set.
    monkeypatch.setenv("MEMSIDECAR_PG_DSN", "postgresql://u:p@db:5432/memory")
    options = PostgresOptions.model_validate(kv.options)
    assert options.resolved_dsn == "postgresql://u:p@db:5432/memory" and options.pool_max == 5
    for block in ("episodic", "lease"):
        assert getattr(config.blocks, block).options == kv.options
    assert config.blocks.semantic.driver == "pgvector"
    assert config.blocks.semantic.options == kv.options
    assert config.blocks.episodic.namespace("episodic", "audit-7").retention_max_events == 100000
    assert config.blocks.episodic.namespace("episodic", "x").retention_max_age == timedelta(days=30)
    embedders = config.blocks.semantic.embedders
    assert embedders["openai-small"].api_key_env == "MEMSIDECAR_EMBEDDER_OPENAI_SMALL_API_KEY"
    assert embedders["openai-small"].dimension == 1536
    assert embedders["openai-small"].timeout == timedelta(seconds=20)
    assert config.blocks.semantic.namespace("semantic", "docs").embedder == "openai-small"
    assert config.blocks.semantic.namespace("semantic", "other").embedder == "fake"
    assert config.blocks.artifact.driver == "s3"
    assert config.blocks.artifact.options == {
        "bucket": "agent-artifacts",
        "endpoint": "http://minio.storage.svc:9000",
        "region": "us-east-1",
        "addressing_style": "path",
        "access_key_env": "MEMSIDECAR_S3_ACCESS_KEY_ID",
        "secret_key_env": "MEMSIDECAR_S3_SECRET_ACCESS_KEY",
    }
    # The real driver's option model accepts exactly what was rendered.
    with pytest.MonkeyPatch.context() as env:
        for name in ("MEMSIDECAR_S3_ACCESS_KEY_ID", "MEMSIDECAR_S3_SECRET_ACCESS_KEY"):
            env.setenv(name, "from-the-secret")
        S3Options.model_validate(dict(config.blocks.artifact.options))
    assert config.blocks.artifact.max_size_bytes == 1024**3
    assert config.blocks.lease.max_ttl == timedelta(hours=2)
    assert config.blocks.session.default_heartbeat_timeout == timedelta(seconds=30)


def test_no_secret_is_ever_in_the_rendered_config() -> None:
    text = render_sidecar_yaml(postgres_minio_store())
    for secret in ("memsidecar-pg", "memsidecar-minio", "rootUser", "rootPassword", "openai-key"):
        assert secret not in text


def _sample_and_value(field: SettingField) -> tuple[Any, Any]:
    """A CRD value for the field and what the sidecar must load from it."""
    if field.kind == "size":
        return "3KiB", 3072
    if field.kind == "duration":
        return "90s", timedelta(seconds=90)
    if field.kind == "go_duration":
        return "2s", timedelta(seconds=2)
    if field.kind in ("count", "int"):
        number = max(field.minimum, 7)
        return number, number
    if field.kind == "bool":
        return True, True
    if field.kind == "enum":
        return field.choices[-1], field.choices[-1]
    return "sessions-x", "sessions-x"


def _sample(field: SettingField) -> Any:
    return _sample_and_value(field)[0]


def _expected(field: SettingField) -> Any:
    return _sample_and_value(field)[1]


def test_every_limit_field_reaches_the_sidecar_with_its_value(tmp_path: Path) -> None:
    blocks: dict[str, Any] = {
        block: {"limits": {f.camel: _sample(f) for f in fields}}
        for block, fields in BLOCK_LIMITS.items()
    }
    session = {f.camel: _sample(f) for f in SESSION_FIELDS}
    session["defaultHeartbeatTimeout"] = "9s"
    session["maxHeartbeatTimeout"] = "1h"
    blocks["session"] = session
    blocks["semantic"]["embedders"] = {
        "fake": {"type": "fake", **{f.camel: _sample(f) for f in EMBEDDER_FIELDS}}
    }
    blocks["semantic"]["pgvector"] = {f.camel: _sample(f) for f in PGVECTOR_FIELDS}
    blocks["semantic"]["pgvector"].update(m=4, efConstruction=8)
    blocks["semantic"]["limits"]["defaultTopK"] = 7
    blocks["artifact"]["namespaces"] = {"*": {"maxSizeBytes": "3KiB"}}
    blocks["episodic"]["namespaces"] = {"*": {"retentionMaxAge": "90s", "retentionMaxEvents": 7}}
    config = load_rendered(tmp_path, store(blocks=blocks))
    for block, fields in BLOCK_LIMITS.items():
        loaded = getattr(config.blocks, block)
        for f in fields:
            assert getattr(loaded, f.name) == _expected(f), f"{block}.{f.name}"
    for f in SESSION_FIELDS:
        if f.camel not in ("defaultHeartbeatTimeout", "maxHeartbeatTimeout"):
            assert getattr(config.blocks.session, f.name) == _expected(f), f.name
    for f in EMBEDDER_FIELDS:
        assert getattr(config.blocks.semantic.embedders["fake"], f.name) == _expected(f), f.name
    for f in PGVECTOR_FIELDS:
        if f.name not in ("m", "ef_construction"):
            assert getattr(config.blocks.semantic.pgvector, f.name) == _expected(f), f.name
    assert (config.blocks.semantic.pgvector.m, config.blocks.semantic.pgvector.ef_construction) == (
        4,
        8,
    )
    assert config.blocks.artifact.namespace("artifact", "a").max_size_bytes == 3072
    assert config.blocks.episodic.namespace("episodic", "a").retention_max_events == 7


def test_most_specific_namespace_pattern_wins_whatever_the_key_order(tmp_path: Path) -> None:
    patterns = {
        "*": {"retentionMaxEvents": 1},
        "team-*": {"retentionMaxEvents": 2},
        "team-a-*": {"retentionMaxEvents": 3},
        "team-a-1": {"retentionMaxEvents": 4},
        "team-?-2": {"retentionMaxEvents": 5},
    }
    obj = as_from_api_server(store(blocks={"episodic": {"namespaces": patterns}}))
    rendered = list(render_sidecar_config(obj)["blocks"]["episodic"]["namespaces"])
    assert rendered[0] == "team-a-1" and rendered[-1] == "*"
    episodic = load_rendered(tmp_path, obj).blocks.episodic
    picks = {
        ns: episodic.namespace("episodic", ns).retention_max_events
        for ns in ("team-a-1", "team-a-9", "team-b", "team-b-2", "other")
    }
    assert picks == {"team-a-1": 4, "team-a-9": 3, "team-b": 2, "team-b-2": 5, "other": 1}


def test_pod_env_sets_the_agent_on_top_of_the_rendered_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMSIDECAR_IDENTITY__AGENT", "planner")
    monkeypatch.setenv("MEMSIDECAR_IDENTITY__TENANT", "team-a")
    config = load_rendered(tmp_path, store(namespace="team-a"))
    assert (config.identity.tenant, config.identity.agent) == ("team-a", "planner")


def test_token_auth_renders_a_section_the_sidecar_auth_model_accepts() -> None:
    obj = store(
        auth={
            "mode": "token",
            "audience": "memsidecar",
            "leewaySeconds": 10,
            "keys": [
                {"kid": "k1", "algorithm": "paseto-v4-public", "publicKey": "k4.public.AAAA"},
                {"kid": "k2", "algorithm": "HS256", "secretRef": {"name": "hs", "key": "s"}},
            ],
        }
    )
    auth = render_sidecar_config(obj)["auth"]
    assert auth == {
        "socket": "token",
        "keys": [
            {"kid": "k1", "algorithm": "paseto-v4-public", "public_key": "k4.public.AAAA"},
            {"kid": "k2", "algorithm": "HS256", "secret_env": "MEMSIDECAR_AUTH_KEY_1_SECRET"},
        ],
        "audience": "memsidecar",
        "leeway_seconds": 10,
    }
    parsed = AuthSettings.model_validate(auth)
    assert parsed.socket == "token" and parsed.keys[1].secret_env == "MEMSIDECAR_AUTH_KEY_1_SECRET"
    assert {
        "name": "MEMSIDECAR_AUTH_KEY_1_SECRET",
        "valueFrom": {"secretKeyRef": {"name": "hs", "key": "s"}},
    } in store_env(obj)
    assert "auth" not in render_sidecar_config(store(auth={"mode": "ambient"}))


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"blocks": {"kv": {"driver": "postgres"}}}, "spec.postgres.dsnSecretRef.name is required"),
        ({"blocks": {"artifact": {"driver": "s3"}}}, "spec.s3.bucket is required"),
        (
            {"blocks": {"kv": {"limits": {"maxKeyByte": 1}}}},
            "spec.blocks.kv.limits.maxKeyByte is not",
        ),
        ({"blocks": {"graph": {}}}, "spec.blocks.graph is not a block"),
        ({"blocks": {"kv": {"driver": "s3"}}}, "'s3' is not a kv driver"),
        ({"blocks": {"lease": {"namespaces": {"*": {"ttl": 1}}}}}, "namespaces.*.ttl is not"),
    ],
)
def test_unrenderable_stores_name_the_field(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(StoreSpecError) as info:
        render_sidecar_config(store(**spec))
    assert any(problem in p for p in info.value.problems), info.value.problems


def test_store_without_namespace_or_tenant_cannot_render() -> None:
    obj = store()
    del obj["metadata"]["namespace"]
    with pytest.raises(StoreSpecError, match=r"spec\.tenant is unset"):
        render_sidecar_config(obj)


# --- validation with the sidecar's own models ----------------------------------------------


def test_valid_stores_have_no_problems() -> None:
    assert validate_store(store()) == []
    assert validate_store(postgres_minio_store()) == []


@pytest.mark.parametrize(
    ("blocks", "problem"),
    [
        (
            {"semantic": {"namespaces": {"docs": {"embedder": "missing"}}}},
            "uses embedder 'missing', which is not defined",
        ),
        (
            # Defining embedders drops the implicit 'fake' the default namespace entry uses.
            {"semantic": {"embedders": {"big": {"type": "fake", "dimension": 8}}}},
            "uses embedder 'fake', which is not defined",
        ),
        (
            {"semantic": {"limits": {"defaultTopK": 50, "maxTopK": 10}}},
            "default_top_k (50) must not be over max_top_k (10)",
        ),
        ({"kv": {"limits": {"maxKeyBytes": "12 parsecs"}}}, "spec.blocks.kv.limits.maxKeyBytes"),
    ],
)
def test_sidecar_model_problems_are_reported(blocks: dict[str, Any], problem: str) -> None:
    problems = validate_store(store(blocks=blocks))
    assert any(problem in p for p in problems), problems
    assert all(p.startswith("spec.") for p in problems), problems


def test_invalid_tenant_is_reported_against_spec_tenant() -> None:
    problems = validate_store(store(tenant="no spaces"))
    assert problems and problems[0].startswith("spec.tenant:"), problems


def test_embedder_names_that_collide_as_env_vars_are_reported() -> None:
    ref = {"name": "k"}
    embedders = {
        "a-b": {"type": "openai", "model": "m", "apiKeySecretRef": ref},
        "a_b": {"type": "openai", "model": "m", "apiKeySecretRef": ref},
        "fake": {"type": "fake"},
    }
    problems = validate_store(store(blocks={"semantic": {"embedders": embedders}}))
    assert any("MEMSIDECAR_EMBEDDER_A_B_API_KEY" in p for p in problems), problems


def test_invalid_auth_is_reported() -> None:
    obj = store(auth={"mode": "token", "keys": []})
    problems = validate_store(obj)
    assert any(p.startswith("spec.auth") and "auth.keys is empty" in p for p in problems), problems


# --- env, summary, ConfigMap ---------------------------------------------------------------


def test_secret_env_only_for_backends_in_use() -> None:
    obj = store(
        postgres={"dsnSecretRef": {"name": "pg"}},
        s3={"bucket": "b", "credentialsSecretRef": {"name": "minio"}},
    )
    assert store_env(obj) == []
    obj["spec"]["blocks"] = {"lease": {"driver": "postgres"}, "artifact": {"driver": "s3"}}
    assert store_env(obj) == [
        {"name": "MEMSIDECAR_PG_DSN", "valueFrom": {"secretKeyRef": {"name": "pg", "key": "dsn"}}},
        {
            "name": "MEMSIDECAR_S3_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": "minio", "key": "AWS_ACCESS_KEY_ID"}},
        },
        {
            "name": "MEMSIDECAR_S3_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "minio", "key": "AWS_SECRET_ACCESS_KEY"}},
        },
    ]
    assert secret_names(obj) == ["pg", "minio"]


def test_drivers_summary() -> None:
    assert drivers_summary(store()) == (
        "kv=memory episodic=memory semantic=memory artifact=localfs lease=memory"
    )
    assert drivers_summary(postgres_minio_store()) == (
        "kv=postgres episodic=postgres semantic=pgvector artifact=s3 lease=postgres"
    )


def test_config_map_is_owned_by_the_store_and_hashes_its_content(tmp_path: Path) -> None:
    obj = postgres_minio_store()
    cm = sidecar_config_map(obj)
    assert cm["metadata"]["name"] == "memsidecar-prod"
    assert cm["metadata"]["namespace"] == "team-a"
    assert cm["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "memsidecar.io/v1alpha1",
            "kind": "MemoryStore",
            "name": "prod",
            "uid": "1234-abcd",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert yaml.safe_load(cm["data"]["sidecar.yaml"]) == render_sidecar_config(obj)
    digest = cm["metadata"]["annotations"]["memsidecar.io/config-hash"]
    assert digest == config_hash(render_sidecar_config(as_from_api_server(obj)))
    obj["spec"]["sidecar"]["logLevel"] = "info"
    assert sidecar_config_map(obj)["metadata"]["annotations"]["memsidecar.io/config-hash"] != digest


def test_log_levels_match_the_sidecar() -> None:
    from memsidecar.webhooks.crds import memorystore_crd

    schema = memorystore_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    levels = schema["properties"]["spec"]["properties"]["sidecar"]["properties"]["logLevel"]["enum"]
    assert tuple(levels) == get_args(SidecarConfig.model_fields["log_level"].annotation)
