"""The operator against the real kube-apiserver, Postgres and MinIO of the test ground.

Each test works in its own namespace (deleted afterwards); waits are bounded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import yaml

from tests.operator.cluster import Kubectl, OperatorProcess, condition, wait_for

S3_ENDPOINT = os.environ.get("MEMSIDECAR_S3_ENDPOINT", "http://127.0.0.1:59000")
S3_KEY = os.environ.get("MEMSIDECAR_S3_ACCESS_KEY", "memsidecar")
S3_SECRET = os.environ.get("MEMSIDECAR_S3_SECRET_KEY", "memsidecar-secret")


def secret(namespace: str, name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def memorystore(namespace: str, name: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "memsidecar.io/v1alpha1",
        "kind": "MemoryStore",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def pg_spec(secret_name: str = "pg") -> dict[str, Any]:
    return {
        "postgres": {"dsnSecretRef": {"name": secret_name}},
        "blocks": {
            "kv": {"driver": "postgres"},
            "episodic": {"driver": "postgres"},
            "lease": {"driver": "postgres"},
        },
    }


def memorypolicy(namespace: str, name: str, rules: list[Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "memsidecar.io/v1alpha1",
        "kind": "MemoryPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"rules": rules, **spec},
    }


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(kubectl: Kubectl, kind: str, name: str, namespace: str, status: str = "True") -> Any:
    """Wait until `kind` has Ready=<status> for its current generation; return it."""

    def probe() -> dict[str, Any] | None:
        obj = kubectl.get(kind, name, namespace)
        if obj is None:
            return None
        cond = condition(obj, "Ready")
        generation = obj["metadata"]["generation"]
        if cond is None or cond["status"] != status:
            return None
        if obj["status"].get("observedGeneration") != generation:
            return None
        return obj

    return wait_for(probe, f"{kind} {namespace}/{name} Ready={status}", timeout=30)


def events(kubectl: Kubectl, namespace: str, name: str) -> list[tuple[str, str, str]]:
    items = kubectl.items("events", namespace, "--field-selector", f"involvedObject.name={name}")
    return [(e["type"], e["reason"], e["message"]) for e in items]


# --- MemoryStore ----------------------------------------------------------------------------


def test_postgres_store_is_migrated_rendered_and_ready(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, database: str
) -> None:
    kubectl.apply(secret(namespace, "pg", dsn=database))
    kubectl.apply(memorystore(namespace, **pg_spec()))
    store = ready(kubectl, "memorystore", "default", namespace)

    status = store["status"]
    assert status["observedGeneration"] == store["metadata"]["generation"] == 1
    assert status["reason"] == "Ready" and status["message"] == ""
    assert status["drivers"].startswith("kv=postgres episodic=postgres semantic=memory")
    migrated = condition(store, "Migrated")
    reachable = condition(store, "BackendReachable")
    assert migrated and migrated["status"] == "True" and migrated["reason"] == "SchemaUpToDate"
    where = "127.0.0.1:55432/" + database.rsplit("/", 1)[1]
    assert migrated["message"].startswith(
        f"schema up to date in postgres at {where}: kv (postgres)"
    )
    assert reachable and reachable["status"] == "True"
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])

    # The migration really ran, once, in the store's database.
    async def schema() -> dict[str, int]:
        conn = await asyncpg.connect(database, timeout=10)
        try:
            rows = await conn.fetch("SELECT block, version FROM memsidecar_schema")
        finally:
            await conn.close()
        return {r["block"]: r["version"] for r in rows}

    versions = asyncio.run(schema())
    assert versions.get("kv", 0) >= 1 and versions.get("lease", 0) >= 1

    # The rendered config: owned by the store, naming the DSN's env var, never the DSN.
    cm = kubectl.get("configmap", "memsidecar-default", namespace)
    assert cm is not None
    owner = cm["metadata"]["ownerReferences"][0]
    assert owner == {
        "apiVersion": "memsidecar.io/v1alpha1",
        "kind": "MemoryStore",
        "name": "default",
        "uid": store["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    config = yaml.safe_load(cm["data"]["sidecar.yaml"])
    assert config["blocks"]["kv"] == {
        "driver": "postgres",
        "options": {"dsn_env": "MEMSIDECAR_PG_DSN"},
    }
    assert config["identity"]["tenant"] == namespace
    assert "memsidecar@" not in cm["data"]["sidecar.yaml"]
    assert status["configHash"] == cm["metadata"]["annotations"]["memsidecar.io/config-hash"]

    reasons = wait_for(
        lambda: (
            {r for _t, r, _m in events(kubectl, namespace, "default")}
            >= {
                "ConfigRendered",
                "Migrated",
                "Ready",
            }
        ),
        "ConfigRendered, Migrated and Ready events",
        timeout=10,
    )
    assert reasons
    # The operator never writes the spec.
    assert store["spec"]["blocks"]["kv"] == {"driver": "postgres"}

    # A spec change: a new generation is observed and the ConfigMap follows.
    kubectl.run(
        "patch", "memorystore", "default", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"sidecar": {"logLevel": "debug"}}}),
    )  # fmt: skip
    store = wait_for(
        lambda: (
            (s := kubectl.get("memorystore", "default", namespace))
            and s["status"].get("observedGeneration") == 2
            and s
        ),
        "observedGeneration 2",
    )
    assert condition(store, "Ready")["status"] == "True"  # type: ignore[index]
    cm = kubectl.get("configmap", "memsidecar-default", namespace)
    assert cm and yaml.safe_load(cm["data"]["sidecar.yaml"])["log_level"] == "debug"


def test_unreachable_postgres_is_reported_then_recovers(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, database: str
) -> None:
    port = closed_port()
    kubectl.apply(secret(namespace, "pg", dsn=f"postgresql://u:pw@127.0.0.1:{port}/db"))
    kubectl.apply(memorystore(namespace, **pg_spec()))

    def unreachable() -> dict[str, Any] | None:
        store = kubectl.get("memorystore", "default", namespace)
        cond = condition(store, "BackendReachable")
        return store if cond and cond["status"] == "False" else None

    store = wait_for(unreachable, "BackendReachable=False", timeout=20)
    reachable = condition(store, "BackendReachable")
    assert reachable is not None and reachable["reason"] == "PostgresUnreachable"
    assert reachable["message"] == (
        f"postgres at 127.0.0.1:{port}/db refused the connection; is it running and "
        f"listening there? (DSN from Secret {namespace}/pg key 'dsn')"
    )
    assert (condition(store, "Ready") or {}).get("status") == "False"
    assert (condition(store, "Reconciling") or {}).get("status") == "True"
    assert (condition(store, "Migrated") or {}).get("reason") == "WaitingForBackend"
    assert store["status"]["message"] == reachable["message"]
    # The config is rendered anyway: it does not depend on the backend.
    assert kubectl.get("configmap", "memsidecar-default", namespace) is not None
    warnings = wait_for(
        lambda: [e for e in events(kubectl, namespace, "default") if e[0] == "Warning"],
        "a Warning event",
        timeout=10,
    )
    assert warnings[0][1] == "PostgresUnreachable"

    # Fixing the Secret is enough: the retry (with backoff) picks it up.
    kubectl.apply(secret(namespace, "pg", dsn=database))
    store = ready(kubectl, "memorystore", "default", namespace)
    assert condition(store, "Reconciling") is None
    assert (condition(store, "Migrated") or {}).get("status") == "True"


def test_missing_secret_names_the_secret_and_key(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, database: str
) -> None:
    kubectl.apply(memorystore(namespace, **pg_spec("pg-creds")))
    store = ready(kubectl, "memorystore", "default", namespace, status="False")
    assert store["status"]["reason"] == "SecretNotFound"
    assert store["status"]["message"] == (
        f"Secret {namespace}/pg-creds not found; create it with key 'dsn' (named by "
        "spec.postgres.dsnSecretRef)"
    )
    kubectl.apply(secret(namespace, "pg-creds", url=database))
    wait_for(
        lambda: (
            (s := kubectl.get("memorystore", "default", namespace))
            and s["status"]["reason"] == "SecretKeyMissing"
            and s
        ),
        "SecretKeyMissing",
    )
    kubectl.apply(secret(namespace, "pg-creds", url=database, dsn=database))
    ready(kubectl, "memorystore", "default", namespace)


def test_a_second_reconcile_changes_nothing_and_drift_is_repaired(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    kubectl.apply(memorystore(namespace, "mem"))
    ready(kubectl, "memorystore", "mem", namespace)

    # kopf records the handled spec in an annotation right after the handler; from then
    # on nothing should write to the store or its ConfigMap any more.
    def handled() -> dict[str, Any] | None:
        obj = kubectl.get("memorystore", "mem", namespace)
        annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
        return obj if "operator.memsidecar.io/last-handled-configuration" in annotations else None

    store = wait_for(handled, "kopf's last-handled-configuration annotation")
    assert (condition(store, "BackendReachable") or {}).get("reason") == "NoExternalBackend"
    assert (condition(store, "Migrated") or {}).get("reason") == "NoDatabase"
    cm = kubectl.get("configmap", "memsidecar-mem", namespace)
    assert cm is not None

    # Let the periodic resync reconcile everything at least twice more.
    def reconciles() -> float:
        return operator.metric(
            "memsidecar_operator_reconciles_total", kind="MemoryStore", outcome="ready"
        )

    count = reconciles()
    wait_for(lambda: reconciles() >= count + 2, "two more reconciles", timeout=15)
    again = kubectl.get("memorystore", "mem", namespace)
    cm_again = kubectl.get("configmap", "memsidecar-mem", namespace)
    assert again and cm_again
    assert again["status"] == store["status"]
    assert again["metadata"] == store["metadata"]
    assert cm_again["metadata"]["resourceVersion"] == cm["metadata"]["resourceVersion"]

    # Someone deletes or edits the ConfigMap: the next pass puts it back.
    kubectl.run("delete", "configmap", "memsidecar-mem", "-n", namespace)
    restored = wait_for(
        lambda: kubectl.get("configmap", "memsidecar-mem", namespace), "the ConfigMap back"
    )
    assert restored["data"] == cm["data"]
    kubectl.run(
        "patch", "configmap", "memsidecar-mem", "-n", namespace, "--type=merge",
        "-p", json.dumps({"data": {"sidecar.yaml": "log_level: debug\n"}}),
    )  # fmt: skip
    wait_for(
        lambda: (
            (c := kubectl.get("configmap", "memsidecar-mem", namespace)) and c["data"] == cm["data"]
        ),
        "the edit reverted",
    )


def test_foreign_configmap_is_not_overwritten(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "memsidecar-taken", "namespace": namespace},
            "data": {"mine": "yes"},
        }
    )
    kubectl.apply(memorystore(namespace, "taken"))
    store = ready(kubectl, "memorystore", "taken", namespace, status="False")
    assert store["status"]["reason"] == "ConfigMapConflict"
    assert (condition(store, "Stalled") or {}).get("status") == "True"
    cm = kubectl.get("configmap", "memsidecar-taken", namespace)
    assert cm and cm["data"] == {"mine": "yes"}


def test_invalid_store_is_stalled(
    kubectl: Kubectl, operator: OperatorProcess, plain_namespace: str
) -> None:
    # Passes the CRD schema, but names an embedder that is not defined (the validating
    # webhook refuses it; this namespace is not covered by it, as if the webhook were down).
    kubectl.apply(
        memorystore(
            plain_namespace,
            "broken",
            blocks={"semantic": {"namespaces": {"*": {"embedder": "nope"}}}},
        )
    )
    store = ready(kubectl, "memorystore", "broken", plain_namespace, status="False")
    assert store["status"]["reason"] == "InvalidSpec"
    assert "uses embedder 'nope', which is not defined" in store["status"]["message"]
    assert (condition(store, "Stalled") or {}).get("status") == "True"
    assert (condition(store, "BackendReachable") or {}).get("status") == "Unknown"
    assert kubectl.get("configmap", "memsidecar-broken", plain_namespace) is None


@pytest.fixture
def bucket() -> Iterator[str]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    name = f"msop-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=S3_ENDPOINT,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )
    try:
        s3.create_bucket(Bucket=name)
    except (BotoCoreError, ClientError) as exc:
        pytest.fail(f"MinIO is not usable at {S3_ENDPOINT} ({exc}): run `scripts/minio.sh up`")
    yield name
    s3.delete_bucket(Bucket=name)


def test_s3_store_checks_the_bucket(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, bucket: str
) -> None:
    kubectl.apply(
        secret(namespace, "minio", AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    )

    def store(bucket_name: str) -> dict[str, Any]:
        return memorystore(
            namespace,
            "files",
            s3={
                "endpoint": S3_ENDPOINT,
                "bucket": bucket_name,
                "region": "us-east-1",
                "forcePathStyle": True,
                "credentialsSecretRef": {"name": "minio"},
            },
            blocks={"artifact": {"driver": "s3"}},
        )

    kubectl.apply(store(bucket + "-gone"))
    missing = ready(kubectl, "memorystore", "files", namespace, status="False")
    assert missing["status"]["reason"] == "BucketNotFound"
    assert f"bucket {bucket}-gone at {S3_ENDPOINT} does not exist" in missing["status"]["message"]
    kubectl.apply(store(bucket))
    found = ready(kubectl, "memorystore", "files", namespace)
    reachable = condition(found, "BackendReachable")
    assert reachable and reachable["message"] == f"bucket {bucket} at {S3_ENDPOINT} reachable"


# --- MemoryPolicy --------------------------------------------------------------------------

RULES = [{"name": "no-deletes", "effect": "deny", "match": {"ops": ["kv.delete"]}}]
BAD_RULES = [{"name": "typo", "effect": "deny", "match": {"ops": ["kv.frobnicate"]}}]


def test_invalid_policy_is_not_ready_until_fixed(
    kubectl: Kubectl, operator: OperatorProcess, plain_namespace: str
) -> None:
    kubectl.apply(memorypolicy(plain_namespace, "limits", BAD_RULES))
    policy = ready(kubectl, "memorypolicy", "limits", plain_namespace, status="False")
    assert policy["status"]["reason"] == "InvalidRules"
    assert (
        "spec.rules[0] (name 'typo'): match.ops: op pattern 'kv.frobnicate'"
        in (policy["status"]["message"])
    )
    assert (condition(policy, "Stalled") or {}).get("status") == "True"
    assert "version" not in policy["status"]

    kubectl.apply(memorypolicy(plain_namespace, "limits", RULES))
    policy = ready(kubectl, "memorypolicy", "limits", plain_namespace)
    assert condition(policy, "Stalled") is None
    assert len(policy["status"]["version"]) == 16
    assert policy["status"]["observedGeneration"] == 2


def test_webhooks_deny_invalid_policies_and_missing_stores(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    refused = kubectl.apply(memorypolicy(namespace, "limits", BAD_RULES), check=False)
    assert refused.returncode != 0
    assert 'admission webhook "memorypolicies.validate.memsidecar.io" denied the request' in (
        refused.stderr
    )
    assert "kv.frobnicate" in refused.stderr
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "agent",
            "namespace": namespace,
            "annotations": {"memsidecar.io/inject": "true", "memsidecar.io/store": "nope"},
        },
        "spec": {"containers": [{"name": "agent", "image": "python:3.11-slim"}]},
    }
    refused = kubectl.apply(pod, check=False)
    assert refused.returncode != 0
    assert f"MemoryStore {namespace}/nope does not exist" in refused.stderr


def test_deployment_pods_are_injected_and_policy_loads_are_counted(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    kubectl.apply(memorystore(namespace))
    ready(kubectl, "memorystore", "default", namespace)
    kubectl.apply(
        memorypolicy(namespace, "limits", RULES, podSelector={"matchLabels": {"app": "agent"}})
    )
    policy = ready(kubectl, "memorypolicy", "limits", namespace)
    version = policy["status"]["version"]
    generation = policy["metadata"]["generation"]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "agent", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {
                    "labels": {"app": "agent"},
                    "annotations": {"memsidecar.io/inject": "true"},
                },
                "spec": {"containers": [{"name": "agent", "image": "python:3.11-slim"}]},
            },
        },
    }
    kubectl.apply(deployment)

    # kube-controller-manager creates the pods, through the operator's webhook.
    def two_pods() -> list[dict[str, Any]] | None:
        items = kubectl.items("pods", namespace, "-l", "app=agent")
        return items if len(items) == 2 else None

    pods = wait_for(two_pods, "two pods of the Deployment")
    for pod in pods:
        assert pod["metadata"]["annotations"]["memsidecar.io/status"] == "injected"
        sidecar = pod["spec"]["initContainers"][0]
        assert sidecar["name"] == "memsidecar" and sidecar["restartPolicy"] == "Always"
        assert sidecar["image"] == "example.test/memsidecar-sidecar:test"

    def counts() -> tuple[int, int] | None:
        p = kubectl.get("memorypolicy", "limits", namespace)
        s = (p or {}).get("status") or {}
        return (s.get("sidecarsSelected"), s.get("sidecarsLoaded"))  # type: ignore[return-value]

    wait_for(lambda: counts() == (2, 0), "2 selected, 0 loaded", timeout=15)
    # A sidecar reports the policy generation it loaded on its own Pod.
    report = {"memsidecar.io/policy": json.dumps({"limits": str(generation)})}
    kubectl.run(
        "annotate", "pod", pods[0]["metadata"]["name"], "-n", namespace, "--overwrite",
        *(f"{k}={v}" for k, v in report.items()),
    )  # fmt: skip
    wait_for(lambda: counts() == (2, 1), "1 loaded", timeout=15)
    # New rules: a new generation (and version), which that sidecar has not loaded yet.
    kubectl.apply(
        memorypolicy(
            namespace,
            "limits",
            [*RULES, {"name": "cap", "effect": "cap", "caps": {"topK": 5}}],
            podSelector={"matchLabels": {"app": "agent"}},
        )
    )
    wait_for(
        lambda: (
            (p := kubectl.get("memorypolicy", "limits", namespace))
            and p["status"].get("version") != version
            and counts() == (2, 0)
        ),
        "a new version, 0 loaded",
        timeout=15,
    )
