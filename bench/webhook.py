"""Row 6: admission latency of the pod webhook. The pure injection function
(webhooks.injection.inject) and the whole AdmissionReview handling as a function
(body bytes → webhooks.admission.review → response bytes), against the JSON decode +
encode of the same AdmissionReview, the floor any Python webhook pays; and the served
endpoint — the operator's kopf webhook server over HTTPS, which looks the MemoryStore up
in the Kubernetes API per pod — against review() as a function, when a control plane is
up (e2e/cluster/up.sh, `make services`); without one that row says so."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.env import REPO, Bench, short_tmpdir
from bench.load import Latency
from memsidecar.webhooks.admission import review
from memsidecar.webhooks.injection import InjectionSettings, inject

SECTION = "webhook"
REFERENCE = "json.loads + json.dumps of the AdmissionReview"
SERVED_CALLS = 300
SETTINGS = InjectionSettings(default_image="ghcr.io/example/memsidecar:0.1.0")


def sample_pod() -> dict[str, Any]:
    """An opted-in agent pod with two app containers, naming the store "prod"."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "agent-0",
            "namespace": "team-a",
            "labels": {"app": "agent"},
            "annotations": {"memsidecar.io/inject": "true", "memsidecar.io/store": "prod"},
        },
        "spec": {
            "serviceAccountName": "agent",
            "containers": [
                {
                    "name": "agent",
                    "image": "python:3.12-slim",
                    "env": [{"name": "LOG_LEVEL", "value": "info"}],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                },
                {"name": "tools", "image": "busybox:1.36", "command": ["sleep", "infinity"]},
            ],
            "volumes": [{"name": "work", "emptyDir": {}}],
        },
    }


def sample_store() -> dict[str, Any]:
    """A MemoryStore with every block on Postgres / pgvector / S3 (the heaviest render)."""
    return {
        "apiVersion": "memsidecar.io/v1alpha1",
        "kind": "MemoryStore",
        "metadata": {"name": "prod", "namespace": "team-a", "uid": "1234-abcd", "generation": 1},
        "spec": {
            "tenant": "acme",
            "postgres": {
                "dsnSecretRef": {"name": "memsidecar-pg", "key": "dsn"},
                "poolMin": 1,
                "poolMax": 5,
            },
            "s3": {
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
            "blocks": {
                "kv": {"driver": "postgres", "limits": {"maxValueBytes": "2MiB"}},
                "semantic": {
                    "driver": "pgvector",
                    "embedders": {"fake": {"type": "fake", "dimension": 384}},
                    "namespaces": {"*": {"embedder": "fake"}},
                },
                "artifact": {"driver": "s3", "limits": {"maxSizeBytes": "1GiB"}},
                "lease": {"driver": "postgres"},
            },
            "sidecar": {"resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
        },
    }


def admission_review(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team-a",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
        },
    }


def timed(call: Callable[[], object], count: int) -> Latency:
    for _ in range(max(1, count // 10)):
        call()
    samples: list[float] = []
    clock = time.perf_counter
    for _ in range(count):
        start = clock()
        call()
        samples.append(clock() - start)
    return Latency(samples)


async def run(bench: Bench) -> None:
    count = bench.settings.webhook_calls
    pod, store = sample_pod(), sample_store()
    patch = inject(pod, store, SETTINGS, namespace="team-a")
    if not patch:
        raise RuntimeError("the sample pod was not injected: the bench sample is out of date")
    body = json.dumps(admission_review(pod)).encode()

    def lookup(namespace: str, name: str) -> dict[str, Any] | None:
        return store if (namespace, name) == ("team-a", "prod") else None

    def end_to_end() -> bytes:
        response = review(json.loads(body), lookup, SETTINGS)
        if not response["response"]["allowed"]:
            raise RuntimeError(f"the sample pod was denied: {response}")
        return json.dumps(response).encode()

    def floor() -> bytes:
        return json.dumps(json.loads(body)).encode()

    injected = timed(lambda: inject(pod, store, SETTINGS, namespace="team-a"), count)
    whole = timed(end_to_end, count)
    json_only = timed(floor, count)
    for what, figures in (
        ("inject() pure function", injected),
        ("review() end to end: decode, review, encode", whole),
    ):
        bench.row(SECTION, f"{what} p50", "µs", figures.p50_us, json_only.p50_us, REFERENCE, False)
        bench.row(SECTION, f"{what} p99", "µs", figures.p99_us, json_only.p99_us, REFERENCE, False)
    # Each served call is a round trip to the API server too: fewer of them.
    served, reason = served_endpoint(bench, pod, store, min(count, SERVED_CALLS))
    what = "served endpoint: operator (kopf, HTTPS, store lookup in the API)"
    for p, ours, ref in (
        ("p50", served.p50_us if served else None, whole.p50_us),
        ("p99", served.p99_us if served else None, whole.p99_us),
    ):
        bench.row(
            SECTION,
            f"{what} {p}",
            "µs",
            ours,
            ref if served else None,
            "review() end to end as a function" if served else f"not measured: {reason}",
            False,
        )


# --- the served endpoint -----------------------------------------------------------------


def _state() -> Path:
    return Path(os.environ.get("MEMSIDECAR_STATE") or Path.home() / ".local/state/memsidecar")


def _kubectl() -> tuple[str, Path] | None:
    """(kubectl, kubeconfig) of the e2e control plane, or None when there is none."""
    kubeconfig = Path(
        os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or _state() / "k8s" / "kubeconfig"
    )
    cache = Path(os.environ.get("MEMSIDECAR_CACHE") or Path.home() / ".cache/memsidecar")
    built = sorted(cache.glob("k8s/*/bin/kubectl"))
    binary = str(built[-1]) if built else shutil.which("kubectl")
    if binary is None or not kubeconfig.is_file():
        return None
    return binary, kubeconfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Cluster:
    def __init__(self, binary: str, kubeconfig: Path) -> None:
        self.binary, self.kubeconfig = binary, kubeconfig

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            timeout=60,
            check=False,
        )


@contextlib.contextmanager
def _operator(cluster: _Cluster, run_id: str) -> Iterator[tuple[int, Path]]:
    """The operator as a local process serving its webhook on 127.0.0.1 (no webhook
    configuration is registered: the bench calls it directly), watching no namespace."""
    tmp = short_tmpdir("msb-operator-")
    port, health = _free_port(), _free_port()
    command = [
        sys.executable,
        "-m",
        "memsidecar.operator",
        "--watch-namespace",
        f"msb-{run_id}-watched-*",
        "--namespace",
        f"msb-{run_id}-system",
        "--webhook-host",
        "127.0.0.1",
        "--webhook-listen",
        "127.0.0.1",
        "--webhook-port",
        str(port),
        "--webhook-generate-certificates",
        "--webhook-cert-dir",
        str(tmp / "certs"),
        "--sidecar-image",
        SETTINGS.default_image,
        "--health-listen",
        "127.0.0.1",
        "--health-port",
        str(health),
        "--metrics-listen",
        "127.0.0.1",
        "--metrics-port",
        str(_free_port()),
        "--log-level",
        "warning",
    ]
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    log = tmp / "operator.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not start:\n{log.read_text()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", health, timeout=1)
                conn.request("GET", "/healthz")
                healthy = conn.getresponse().status == 200
                # kopf opens the webhook server after the health endpoint.
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    pass
                if healthy:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        yield port, tmp / "certs" / "ca.crt"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def served_endpoint(
    bench: Bench, pod: dict[str, Any], store: dict[str, Any], count: int
) -> tuple[Latency | None, str]:
    """Latency of POST /mutate-pods on the operator, over one kept-alive HTTPS connection
    (as the API server keeps one), with the store in the control plane."""
    from memsidecar.webhooks.configuration import MUTATE_PODS_PATH

    found = _kubectl()
    if found is None:
        return None, "no Kubernetes control plane (make services starts one)"
    cluster = _Cluster(*found)
    if cluster.run("get", "--raw", "/readyz").returncode != 0:
        return None, "the Kubernetes API does not answer (make services starts it)"
    applied = cluster.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    if applied.returncode != 0:
        raise RuntimeError(f"kubectl apply crds failed: {applied.stderr}")
    for crd in ("memorystores", "memorypolicies"):
        cluster.run(
            "wait", "--for=condition=Established", f"crd/{crd}.memsidecar.io", "--timeout=30s"
        )
    namespace = f"msb-{bench.run_id}"
    cluster.run("create", "namespace", namespace)
    try:
        placed = {**store, "metadata": {"name": "prod", "namespace": namespace}}
        result = cluster.run("apply", "-f", "-", stdin=json.dumps(placed))
        if result.returncode != 0:
            raise RuntimeError(f"kubectl apply MemoryStore failed: {result.stderr}")
        review_pod = {**pod, "metadata": {**pod["metadata"], "namespace": namespace}}
        body = admission_review(review_pod)
        body["request"]["namespace"] = namespace
        payload = json.dumps(body).encode()
        with _operator(cluster, bench.run_id) as (port, ca):
            context = ssl.create_default_context(cafile=str(ca))
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)

            def call() -> bytes:
                conn.request(
                    "POST", MUTATE_PODS_PATH, payload, {"Content-Type": "application/json"}
                )
                answer = conn.getresponse()
                data = answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"webhook answered {answer.status}: {data[:500]!r}")
                response = json.loads(data)["response"]
                if not response.get("allowed") or not response.get("patch"):
                    raise RuntimeError(f"the served webhook did not inject: {response}")
                return data

            try:
                return timed(call, count), ""
            finally:
                conn.close()
    finally:
        cluster.run("delete", "namespace", namespace, "--wait=false")
