"""MemoryStore status computation and ConfigMap glue (pure parts of operator/stores.py)."""

from __future__ import annotations

import datetime
from typing import Any

from memsidecar.operator import conditions as cond
from memsidecar.operator.backends import Probe
from memsidecar.operator.conditions import Condition
from memsidecar.operator.stores import (
    ConfigMapResult,
    Observation,
    config_map_is_ours,
    config_map_patch,
    database_config,
    field_of,
    migrated_message,
    migration_targets,
    secret_refs,
    store_status,
)
from memsidecar.webhooks.store import sidecar_config_map

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(seconds=30)
DSN = "postgresql://u:secret-password@db.example:5432/mem"


def store(generation: int = 1, status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "memsidecar.io/v1alpha1",
        "kind": "MemoryStore",
        "metadata": {"name": "main", "namespace": "team-a", "uid": "u-1", "generation": generation},
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    return body


def pg_store(**kw: Any) -> dict[str, Any]:
    return store(
        postgres={"dsnSecretRef": {"name": "pg", "key": "dsn"}},
        blocks={"kv": {"driver": "postgres"}, "lease": {"driver": "postgres"}},
        **kw,
    )


def ready_observation() -> Observation:
    return Observation(
        config_map=ConfigMapResult("unchanged", "memsidecar-main"),
        config_hash="abc",
        backend=Probe(True, "Reachable", "postgres at db.example:5432/mem reachable"),
        migrated=Condition("Migrated", "True", "SchemaUpToDate", "schema up to date"),
    )


def types(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_ready_store_status_is_kstatus_current() -> None:
    status = store_status(pg_store(generation=5), ready_observation(), T0)
    assert status["observedGeneration"] == 5
    assert types(status) == {"Ready": "True", "BackendReachable": "True", "Migrated": "True"}
    assert all(c["observedGeneration"] == 5 for c in status["conditions"])
    assert status["reason"] == "Ready" and status["message"] == ""
    assert status["configMap"] == "memsidecar-main" and status["configHash"] == "abc"
    assert status["drivers"].startswith("kv=postgres episodic=memory")


def test_unreachable_backend_is_reconciling_with_the_probe_message() -> None:
    obs = ready_observation()
    obs.backend = Probe(False, "PostgresUnreachable", "postgres at db:5432 refused the connection")
    obs.migrated = Condition("Migrated", "Unknown", "WaitingForBackend", "later")
    status = store_status(pg_store(), obs, T0)
    assert types(status) == {
        "Ready": "False",
        "BackendReachable": "False",
        "Migrated": "Unknown",
        "Reconciling": "True",
    }
    assert status["reason"] == "PostgresUnreachable"
    assert status["message"] == "postgres at db:5432 refused the connection"


def test_invalid_spec_is_stalled_and_checks_nothing() -> None:
    obs = Observation(spec_problems=["spec.blocks.kv.driver 'x' is not a kv driver"])
    status = store_status(pg_store(), obs, T0)
    assert types(status) == {
        "Ready": "False",
        "BackendReachable": "Unknown",
        "Migrated": "Unknown",
        "Stalled": "True",
    }
    assert status["reason"] == "InvalidSpec"
    assert "spec.blocks.kv.driver" in status["message"]
    assert "configHash" not in status


def test_invalid_spec_keeps_an_earlier_migrated_condition_and_config_hash() -> None:
    earlier = store_status(pg_store(), ready_observation(), T0)
    obs = Observation(spec_problems=["bad"])
    status = store_status(pg_store(generation=2, status=earlier), obs, T1)
    migrated = cond.find(status["conditions"], "Migrated")
    assert migrated == cond.find(earlier["conditions"], "Migrated")
    assert status["configHash"] == "abc"


def test_recovery_drops_reconciling_and_flips_ready_time() -> None:
    obs = ready_observation()
    obs.backend = Probe(False, "PostgresUnreachable", "down")
    down = store_status(pg_store(), obs, T0)
    up = store_status(pg_store(status=down), ready_observation(), T1)
    assert "Reconciling" not in types(up)
    ready = cond.find(up["conditions"], "Ready")
    assert ready is not None and ready["lastTransitionTime"] == "2026-01-01T12:00:30Z"


def test_same_observation_twice_writes_nothing() -> None:
    first = store_status(pg_store(), ready_observation(), T0)
    second = store_status(pg_store(status=first), ready_observation(), T1)
    assert not cond.changed(first, second)


def test_config_map_conflict_is_stalled() -> None:
    obs = ready_observation()
    obs.config_map = ConfigMapResult("conflict", "memsidecar-main", "not ours")
    status = store_status(pg_store(), obs, T0)
    assert status["reason"] == "ConfigMapConflict"
    assert types(status)["Stalled"] == "True"


def test_missing_non_backend_secret_blocks_ready() -> None:
    obs = ready_observation()
    obs.secret_problems = [Probe(False, "SecretNotFound", "Secret team-a/openai not found")]
    status = store_status(pg_store(), obs, T0)
    assert types(status)["Ready"] == "False"
    assert types(status)["BackendReachable"] == "True"
    assert status["reason"] == "SecretNotFound"


def test_config_map_patch_is_none_when_up_to_date() -> None:
    desired = sidecar_config_map(pg_store())
    assert config_map_patch(desired, desired) is None


def test_config_map_patch_restores_data_and_owner_and_keeps_foreign_bits() -> None:
    desired = sidecar_config_map(pg_store())
    existing = {
        "metadata": {
            "name": "memsidecar-main",
            "labels": {"team": "a"},
            "annotations": {"note": "x"},
            "ownerReferences": [{"kind": "Thing", "name": "t", "uid": "9"}],
        },
        "data": {"sidecar.yaml": "edited by hand", "extra": "1"},
    }
    patch = config_map_patch(existing, desired)
    assert patch is not None
    assert patch["data"] == {"sidecar.yaml": desired["data"]["sidecar.yaml"], "extra": None}
    owners = patch["metadata"]["ownerReferences"]
    assert owners[0]["uid"] == "u-1" and owners[0]["controller"] is True
    assert {"kind": "Thing", "name": "t", "uid": "9"} in owners
    assert "team" not in patch["metadata"]["labels"]


def test_config_map_ownership() -> None:
    body = pg_store()
    ours = sidecar_config_map(body)
    assert config_map_is_ours(ours, body)
    earlier_store = {
        "metadata": {"ownerReferences": [dict(ours["metadata"]["ownerReferences"][0], uid="old")]}
    }
    assert config_map_is_ours(earlier_store, body)
    foreign = {
        "metadata": {"ownerReferences": [{"kind": "Deployment", "name": "x", "controller": True}]}
    }
    assert not config_map_is_ours(foreign, body)
    assert not config_map_is_ours({"metadata": {}}, body)
    orphan = {"metadata": {"labels": ours["metadata"]["labels"]}}
    assert config_map_is_ours(orphan, body)


def test_secret_refs_name_the_spec_field() -> None:
    refs = secret_refs(pg_store())
    assert [(r.env, r.secret, r.key) for r in refs] == [("MEMSIDECAR_PG_DSN", "pg", "dsn")]
    assert field_of("MEMSIDECAR_PG_DSN") == "spec.postgres.dsnSecretRef"
    assert field_of("MEMSIDECAR_S3_ACCESS_KEY_ID") == "spec.s3.credentialsSecretRef"


def test_database_config_carries_the_dsn_only_in_memory() -> None:
    body = pg_store()
    config = database_config(body, DSN)
    assert config.blocks.kv.options == {"dsn": DSN}
    assert config.blocks.semantic.driver == "memory"
    # The rendered ConfigMap never holds it.
    assert "secret-password" not in sidecar_config_map(body)["data"]["sidecar.yaml"]
    targets = migration_targets(config.blocks)
    by_block = {block: (driver, version) for block, driver, version in targets}
    assert by_block["kv"][0] == "postgres" and by_block["kv"][1] >= 1
    assert "semantic" not in by_block  # in memory: nothing to migrate
    message = migrated_message(targets, "db.example:5432/mem")
    assert message.startswith("schema up to date in postgres at db.example:5432/mem: kv (postgres)")
