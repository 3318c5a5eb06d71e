"""Sample objects and a handle on the e2e control plane for the webhook tests."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch  # type: ignore[import-untyped]

from memsidecar.webhooks.injection import InjectionSettings

SETTINGS = InjectionSettings(default_image="ghcr.io/example/memsidecar:0.1.0")


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply RFC 6902 ops with the jsonpatch library (never mutating `doc`)."""
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(doc), ops)
    return result


def pod(
    annotations: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """An opted-in pod in namespace team-a (pass annotations={} for one that did not)."""
    metadata: dict[str, Any] = {"name": "agent-0", "namespace": "team-a"}
    metadata["annotations"] = (
        {"memsidecar.io/inject": "true"} if annotations is None else dict(annotations)
    )
    if not metadata["annotations"]:
        del metadata["annotations"]
    body: dict[str, Any] = {
        "containers": containers
        if containers is not None
        else [{"name": "agent", "image": "python:3.12-slim"}],
        **spec,
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": body}


def store(name: str = "default", namespace: str = "team-a", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "memsidecar.io/v1alpha1",
        "kind": "MemoryStore",
        "metadata": {"name": name, "namespace": namespace, "uid": "1234-abcd", "generation": 1},
        "spec": spec,
    }


def postgres_minio_store() -> dict[str, Any]:
    """Every block on Postgres / pgvector / MinIO, with limits, embedders and namespaces."""
    return store(
        "prod",
        tenant="acme",
        postgres={
            "dsnSecretRef": {"name": "memsidecar-pg", "key": "dsn"},
            "poolMin": 1,
            "poolMax": 5,
            "commandTimeoutSeconds": 8,
            "connectTimeoutSeconds": 3,
        },
        s3={
            "endpoint": "http://minio.storage.svc:9000",
            "bucket": "agent-artifacts",
            "region": "us-east-1",
            "forcePathStyle": True,
            "credentialsSecretRef": {
                "name": "memsidecar-minio",
                "accessKeyIdKey": "rootUser",
                "secretAccessKeyKey": "rootPassword",
            },
        },
        blocks={
            "kv": {
                "driver": "postgres",
                "namespaces": {"*": {}, "scratch": {}},
                "limits": {"maxValueBytes": "2MiB", "maxScanLimit": 500},
            },
            "episodic": {
                "driver": "postgres",
                "namespaces": {
                    "*": {"retentionMaxAge": "30d"},
                    "audit-*": {"retentionMaxEvents": 100000},
                },
            },
            "semantic": {
                "driver": "pgvector",
                "embedders": {
                    "fake": {"type": "fake", "dimension": 64},
                    "openai-small": {
                        "type": "openai",
                        "model": "text-embedding-3-small",
                        "dimension": 1536,
                        "url": "https://api.openai.com/v1",
                        "apiKeySecretRef": {"name": "openai-key", "key": "apiKey"},
                        "batchSize": 32,
                        "timeout": "20s",
                    },
                },
                "namespaces": {"*": {"embedder": "fake"}, "docs": {"embedder": "openai-small"}},
                "limits": {"maxTopK": 200, "defaultTopK": 20},
            },
            "artifact": {"driver": "s3", "limits": {"maxSizeBytes": "1GiB"}},
            "lease": {"driver": "postgres", "limits": {"maxTtl": "2h"}},
            "session": {"defaultHeartbeatInterval": "10s", "defaultHeartbeatTimeout": "30s"},
        },
        sidecar={
            "image": "registry.example.com/memsidecar:1.2.3",
            "imagePullPolicy": "Always",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "logLevel": "debug",
            "dataSizeLimit": "2Gi",
        },
    )


def admission_review(
    obj: dict[str, Any] | None,
    *,
    resource: tuple[str, str] = ("", "pods"),
    operation: str = "CREATE",
    namespace: str = "team-a",
    old: dict[str, Any] | None = None,
) -> dict[str, Any]:
    group, plural = resource
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group, "version": "v1", "kind": "Pod"},
        "resource": {"group": group, "version": "v1", "resource": plural},
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": obj,
        "oldObject": old,
        "dryRun": False,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


# --- the e2e control plane (e2e/cluster/up.sh) -------------------------------------------


@dataclass(frozen=True)
class Cluster:
    kubectl: str
    kubeconfig: str

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        result = subprocess.run(
            [self.kubectl, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def apply_json(self, obj: dict[str, Any], *args: str, check: bool = True) -> Any:
        return self.run("apply", "-f", "-", *args, stdin=json.dumps(obj), check=check)

    @contextmanager
    def temporary(self, obj: dict[str, Any]) -> Iterator[None]:
        """Create a cluster-scoped object and delete it afterwards, whatever happens."""
        self.apply_json(obj)
        try:
            yield
        finally:
            self.run(
                "delete",
                obj["kind"].lower(),
                obj["metadata"]["name"],
                "--ignore-not-found",
                "--wait=true",
                check=False,
            )


def find_cluster() -> tuple[Cluster | None, str]:
    """The e2e control plane if it answers, else (None, why)."""
    state = Path(
        os.environ.get("MEMSIDECAR_K8S_STATE")
        or Path(os.environ.get("MEMSIDECAR_STATE") or Path.home() / ".local/state/memsidecar")
        / "k8s"
    )
    kubeconfig = os.environ.get("KUBECONFIG") or str(state / "kubeconfig")
    version = os.environ.get("MEMSIDECAR_K8S_VERSION", "v1.35.4")
    cache = Path(os.environ.get("MEMSIDECAR_CACHE") or Path.home() / ".cache/memsidecar")
    kubectl = shutil.which("kubectl") or str(cache / "k8s" / version / "bin" / "kubectl")
    if not Path(kubeconfig).exists() or not Path(kubectl).exists():
        return None, 'no kubeconfig/kubectl; start the cluster: eval "$(e2e/cluster/up.sh)"'
    cluster = Cluster(kubectl, kubeconfig)
    try:
        ready = cluster.run("get", "--raw", "/readyz", check=False, timeout=10)
    except subprocess.TimeoutExpired:
        return None, "the cluster did not answer /readyz within 10s"
    if ready.returncode != 0:
        return None, f'cluster not ready ({ready.stderr.strip()}); run eval "$(e2e/cluster/up.sh)"'
    return cluster, ""
