"""Against the real kube-apiserver of e2e/cluster (a failure when it is not running).

The CRDs are installed under a throw-away API group (t<random>.memsidecar.io), so these
tests never touch the real memsidecar.io CRDs another test run may be using, and they
are deleted afterwards. Everything else is a server-side dry run: nothing is left
behind.
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from memsidecar.webhooks.certs import generate_certificates
from memsidecar.webhooks.configuration import (
    WebhookEndpoint,
    mutating_webhook_configuration,
    validating_webhook_configuration,
)
from memsidecar.webhooks.crds import memorypolicy_crd, memorystore_crd
from memsidecar.webhooks.injection import inject
from memsidecar.webhooks.store import drivers_summary
from tests.webhooks.support import (
    SETTINGS,
    Cluster,
    apply_patch,
    find_cluster,
    pod,
    postgres_minio_store,
    store,
)

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "default"


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    found, why = find_cluster()
    if found is None:
        pytest.fail(f"no Kubernetes control plane: {why}", pytrace=False)
    return found


@pytest.fixture(scope="module")
def group(cluster: Cluster) -> Iterator[str]:
    """The CRDs, installed under a unique group for this run, deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:10]}.memsidecar.io"
    crds = []
    for crd in (memorystore_crd(), memorypolicy_crd()):
        crd = copy.deepcopy(crd)
        crd["spec"]["group"] = name
        crd["metadata"]["name"] = f"{crd['spec']['names']['plural']}.{name}"
        crds.append(crd)
    try:
        for crd in crds:
            cluster.apply_json(crd)
        for crd in crds:
            cluster.run(
                "wait",
                "--for=condition=Established",
                f"crd/{crd['metadata']['name']}",
                "--timeout=30s",
            )
        yield name
    finally:
        for crd in crds:
            cluster.run("delete", "crd", crd["metadata"]["name"], "--ignore-not-found", check=False)


def in_group(obj: dict[str, Any], group: str) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["apiVersion"] = f"{group}/v1alpha1"
    out["metadata"]["namespace"] = NAMESPACE
    out["metadata"].pop("uid", None)
    out["metadata"].pop("generation", None)
    return out


def dry_run(cluster: Cluster, obj: dict[str, Any]) -> tuple[bool, str, dict[str, Any] | None]:
    result = cluster.run(
        "create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(obj), check=False
    )
    if result.returncode != 0:
        return False, result.stderr, None
    return True, "", json.loads(result.stdout)


def test_crd_files_pass_server_side_dry_run(cluster: Cluster) -> None:
    result = cluster.run("apply", "--dry-run=server", "-f", str(REPO / "crds"))
    assert "memorystores.memsidecar.io" in result.stdout
    assert "memorypolicies.memsidecar.io" in result.stdout


def explain(cluster: Cluster, field: str, group: str) -> str:
    """kubectl explain, waiting (bounded) for the new CRD's OpenAPI to be published."""
    deadline = time.monotonic() + 60
    while True:
        result = cluster.run("explain", field, f"--api-version={group}/v1alpha1", check=False)
        if result.returncode == 0 or time.monotonic() > deadline:
            assert result.returncode == 0, result.stderr
            return result.stdout
        time.sleep(1)


def test_kubectl_explain_describes_the_fields(cluster: Cluster, group: str) -> None:
    out = explain(cluster, "memorystore.spec.blocks.kv", group)
    assert "Where the block keeps its data" in out
    assert "enum: memory, postgres" in out
    limits = explain(cluster, "memorystore.spec.blocks.kv.limits.maxValueBytes", group)
    assert "Largest value, in bytes" in limits
    assert "token bucket" in explain(cluster, "mpol.spec.rules.rate", group)


def test_empty_store_gets_defaults(cluster: Cluster, group: str) -> None:
    ok, err, created = dry_run(cluster, in_group(store("minimal"), group))
    assert ok, err
    assert created is not None
    blocks = created["spec"]["blocks"]
    assert {
        b: blocks[b]["driver"] for b in ("kv", "episodic", "semantic", "artifact", "lease")
    } == {
        "kv": "memory",
        "episodic": "memory",
        "semantic": "memory",
        "artifact": "localfs",
        "lease": "memory",
    }
    assert created["spec"]["sidecar"]["logLevel"] == "info"


def test_full_store_and_policy_are_accepted(cluster: Cluster, group: str) -> None:
    ok, err, created = dry_run(cluster, in_group(postgres_minio_store(), group))
    assert ok, err
    assert created is not None and created["spec"]["s3"]["forcePathStyle"] is True
    policy = {
        "apiVersion": "x",
        "kind": "MemoryPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
            "defaultEffect": "deny",
            "rules": [
                {"name": "a", "effect": "allow", "match": {"blocks": ["kv"]}},
                {"name": "r", "effect": "rate_limit", "rate": {"perSecond": 2.5, "burst": 5}},
                {"name": "c", "effect": "cap", "caps": {"maxBytes": "1MiB", "topK": 50}},
            ],
        },
    }
    ok, err, _ = dry_run(cluster, in_group(policy, group))
    assert ok, err


def _docs_examples() -> list[dict[str, Any]]:
    text = (REPO / "docs" / "crds.md").read_text()
    out = []
    for block in re.findall(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        for doc in yaml.safe_load_all(block):
            if isinstance(doc, dict) and doc.get("kind") in ("MemoryStore", "MemoryPolicy"):
                out.append(doc)
    return out


def test_docs_examples_are_accepted(cluster: Cluster, group: str) -> None:
    examples = _docs_examples()
    assert {e["kind"] for e in examples} == {"MemoryStore", "MemoryPolicy"}
    for example in examples:
        ok, err, _ = dry_run(cluster, in_group(example, group))
        assert ok, f"{example['kind']} {example['metadata']['name']}: {err}"


STORE_CASES = [
    ({"blocks": {"kv": {"driver": "postgres"}}}, "spec.postgres (with dsnSecretRef) is required"),
    ({"blocks": {"semantic": {"driver": "pgvector"}}}, "spec.postgres (with dsnSecretRef)"),
    ({"postgres": {}}, "spec.postgres.dsnSecretRef: Required value"),
    ({"blocks": {"artifact": {"driver": "s3"}}}, "spec.s3 (with bucket) is required"),
    ({"s3": {"endpoint": "http://m:9000"}}, "spec.s3.bucket: Required value"),
    (
        {"blocks": {"session": {"defaultHeartbeatInterval": "20s"}}},
        "defaultHeartbeatTimeout must be longer than defaultHeartbeatInterval",
    ),
    (
        {
            "blocks": {
                "session": {"defaultHeartbeatInterval": "1m", "defaultHeartbeatTimeout": "30s"}
            }
        },
        "defaultHeartbeatTimeout must be longer",
    ),
    ({"blocks": {"kv": {"driver": "s3"}}}, 'Unsupported value: "s3"'),
    ({"blocks": {"kv": {"limits": {"maxKeyBytes": "lots"}}}}, "spec.blocks.kv.limits.maxKeyBytes"),
    ({"blocks": {"kv": {"limits": {"maxKeyBytes": 0}}}}, "must be at least 1"),
    ({"blocks": {"lease": {"limits": {"maxTtl": "1 hour"}}}}, "spec.blocks.lease.limits.maxTtl"),
    (
        {"blocks": {"kv": {"limits": {"defaultScanLimit": 50, "maxScanLimit": 10}}}},
        "defaultScanLimit must not be over maxScanLimit",
    ),
    ({"blocks": {"kv": {"namespaces": {"a/b": {}}}}}, "namespace patterns may only use"),
    (
        {"blocks": {"semantic": {"embedders": {"e": {"type": "ollama"}}}}},
        "model is required for an ollama or openai embedder",
    ),
    (
        {"blocks": {"semantic": {"embedders": {"Bad Name": {"type": "fake"}}}}},
        "embedder names use",
    ),
    (
        {
            "blocks": {"artifact": {"driver": "s3", "localfs": {"fsync": False}}},
            "s3": {"bucket": "bkt"},
        },
        "localfs options are only used by the localfs driver",
    ),
    (
        {
            "blocks": {
                "semantic": {"driver": "pgvector", "pgvector": {"m": 40, "efConstruction": 50}}
            },
            "postgres": {"dsnSecretRef": {"name": "pg"}},
        },
        "efConstruction must be at least 2 * m",
    ),
    ({"auth": {"mode": "token"}}, "token mode needs at least one key"),
    ({"auth": {"keys": [{"kid": "k", "algorithm": "HS256"}]}}, "an HS256 key needs secretRef"),
    (
        {"postgres": {"dsnSecretRef": {"name": "p"}, "poolMin": 5, "poolMax": 2}},
        "poolMin must not be over poolMax",
    ),
    ({"tenant": "has space"}, "spec.tenant"),
    ({"blocks": {"kv": {"drivr": "postgres"}}}, 'unknown field "spec.blocks.kv.drivr"'),
]


@pytest.mark.parametrize(("spec", "message"), STORE_CASES)
def test_invalid_stores_are_rejected_by_the_schema(
    cluster: Cluster, group: str, spec: dict[str, Any], message: str
) -> None:
    ok, err, _ = dry_run(cluster, in_group(store("bad", **spec), group))
    assert not ok
    assert message in err, err


def test_store_name_length_is_bounded(cluster: Cluster, group: str) -> None:
    ok, err, _ = dry_run(cluster, in_group(store("a" * 243), group))
    assert not ok and "at most 242 characters" in err, err


POLICY_CASES = [
    ([{"name": "r", "effect": "rate_limit"}], "rate is required for a rate_limit rule"),
    ([{"name": "r", "effect": "allow", "rate": {"perSecond": 1, "burst": 1}}], "rate is required"),
    ([{"name": "c", "effect": "cap"}], "caps is required for a cap rule"),
    ([{"name": "c", "effect": "cap", "caps": {}}], "caps sets nothing"),
    ([{"name": "c", "effect": "cap", "caps": {"maxBytes": 0}}], "must be at least 1"),
    ([{"name": "x", "effect": "maybe"}], 'Unsupported value: "maybe"'),
    ([{"name": "-x", "effect": "allow"}], "spec.rules[0].name"),
    ([{"name": "r", "effect": "rate_limit", "rate": {"perSecond": 0, "burst": 1}}], "perSecond"),
    (
        [
            {
                "name": "r",
                "effect": "rate_limit",
                "rate": {"perSecond": 1, "burst": 1, "key": ["tenant", "pod"]},
            }
        ],
        '"pod"',
    ),
]


@pytest.mark.parametrize(("rules", "message"), POLICY_CASES)
def test_invalid_policies_are_rejected_by_the_schema(
    cluster: Cluster, group: str, rules: list[dict[str, Any]], message: str
) -> None:
    policy = {
        "apiVersion": "x",
        "kind": "MemoryPolicy",
        "metadata": {"name": "p"},
        "spec": {"rules": rules},
    }
    ok, err, _ = dry_run(cluster, in_group(policy, group))
    assert not ok
    assert message in err, err


def test_selector_values_must_fit_the_operator(cluster: Cluster, group: str) -> None:
    for expression in (
        {"key": "app", "operator": "In"},
        {"key": "app", "operator": "Exists", "values": ["x"]},
    ):
        policy = {
            "apiVersion": "x",
            "kind": "MemoryPolicy",
            "metadata": {"name": "p"},
            "spec": {"podSelector": {"matchExpressions": [expression]}},
        }
        ok, err, _ = dry_run(cluster, in_group(policy, group))
        assert not ok and "values must be non-empty for In and NotIn" in err, err


def test_printer_columns_and_status_subresource(cluster: Cluster, group: str) -> None:
    name = f"cols-{uuid.uuid4().hex[:6]}"
    obj = in_group(store(name), group)
    resource = f"memorystores.{group}"
    cluster.apply_json(obj)
    try:
        status = {
            "status": {
                "observedGeneration": 1,
                "reason": "Ready",
                "message": "",
                "drivers": drivers_summary(store(name)),
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Ready",
                        "message": "all backends reachable",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                        "observedGeneration": 1,
                    }
                ],
            }
        }
        cluster.run(
            "patch",
            resource,
            name,
            "-n",
            NAMESPACE,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(status),
        )
        table = cluster.run("get", resource, name, "-n", NAMESPACE).stdout.splitlines()
        assert table[0].split() == ["NAME", "READY", "REASON", "DRIVERS", "AGE"]
        assert table[1].split()[:4] == [name, "True", "Ready", "kv=memory"]
        # A spec write through the main resource cannot change status.
        got = json.loads(cluster.run("get", resource, name, "-n", NAMESPACE, "-o", "json").stdout)
        got["status"]["reason"] = "Hacked"
        cluster.apply_json(got)
        after = json.loads(cluster.run("get", resource, name, "-n", NAMESPACE, "-o", "json").stdout)
        assert after["status"]["reason"] == "Ready"
    finally:
        cluster.run("delete", resource, name, "-n", NAMESPACE, "--ignore-not-found", check=False)


def test_webhook_configurations_pass_server_side_dry_run(cluster: Cluster) -> None:
    bundle = generate_certificates(["memsidecar-webhook.memsidecar-system.svc"], ["127.0.0.1"])
    endpoint = WebhookEndpoint(url="https://127.0.0.1:9443", ca_bundle=bundle.ca_bundle)
    name = f"memsidecar-test-{uuid.uuid4().hex[:6]}"
    for config in (
        mutating_webhook_configuration(
            endpoint, control_plane_namespace="memsidecar-system", name=name
        ),
        validating_webhook_configuration(endpoint, name=name),
    ):
        cluster.apply_json(config, "--dry-run=server")
    broken = mutating_webhook_configuration(endpoint, control_plane_namespace="x", name=name)
    broken["webhooks"][0]["matchConditions"][0]["expression"] = "object.metadata.nope("
    result = cluster.apply_json(broken, "--dry-run=server", check=False)
    assert result.returncode != 0, "the dry run must compile matchConditions"


@pytest.mark.parametrize(
    "make",
    [
        lambda: pod(),
        lambda: pod(
            {"memsidecar.io/inject": "true", "memsidecar.io/init-containers": "seed"},
            containers=[
                {
                    "name": "agent",
                    "image": "python:3.12-slim",
                    "env": [{"name": "MEMSIDECAR_SOCKET", "value": "/x.sock"}],
                },
                {
                    "name": "tool",
                    "image": "busybox",
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                },
            ],
            initContainers=[{"name": "seed", "image": "busybox"}],
            volumes=[{"name": "work", "emptyDir": {}}],
            serviceAccountName="default",
            automountServiceAccountToken=False,
        ),
    ],
)
def test_the_injected_pod_is_a_valid_pod(cluster: Cluster, make: Any) -> None:
    p = make()
    p["metadata"]["namespace"] = NAMESPACE
    admitted = apply_patch(p, inject(p, postgres_minio_store(), SETTINGS))
    ok, err, created = dry_run(cluster, admitted)
    assert ok, err
    assert created is not None
    sidecar = created["spec"]["initContainers"][0]
    assert sidecar["name"] == "memsidecar" and sidecar["restartPolicy"] == "Always"
