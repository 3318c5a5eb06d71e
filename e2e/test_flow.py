"""The whole flow on a real cluster (DESIGN.md §10): CRDs, a Postgres-backed MemoryStore and
a MemoryPolicy applied with kubectl → the operator makes them Ready → an annotated
Deployment → kube-controller-manager creates the Pod through the webhook → the admitted
Pod spec → the sidecar runs (a kubelet, or the harness playing one) → an agent process
uses every block through the SDK → a policy change via kubectl is enforced → deleting
the store and the Deployment cleans up.

The tests run in file order and share one module-scoped `Flow`; each asserts one step
with bounded waits. Without a kubelet (no Ready node, as on e2e/cluster) the harness
starts the injected sidecar itself (e2e/harness.py); with one, the pod runs for real and
the agent runs in its app container through `kubectl exec`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.harness import VENV_BIN, PodRunner, app_env, has_kubelet
from tests.operator.cluster import Kubectl, OperatorProcess, condition, wait_for
from tests.support import REPO

AGENT_ID = "e2e-agent"
APP_LABELS = {"app": "e2e-agent"}
# With a real kubelet the agent runs inside the pod's app container: an image with
# Python and the memsidecar SDK (the sidecar image has both).
AGENT_IMAGE = os.environ.get(
    "MEMSIDECAR_E2E_AGENT_IMAGE", "ghcr.io/memsidecar/memsidecar-sidecar:0.1.0"
)
POLICY_WAIT = 15.0

# The agent: every block through the SDK; prints one JSON line of what it saw.
AGENT = textwrap.dedent(
    """
    import json, sys
    from memsidecar import MemSidecar
    from memsidecar.client import PermissionDeniedError

    mode = sys.argv[1]
    with MemSidecar.from_env() as m:
        m.wait_ready(10)
        if mode == "kv-only":
            try:
                m.kv.put("e2e-kv", "probe", 1)
                print(json.dumps({"kv": "allowed"}))
            except PermissionDeniedError as exc:
                print(json.dumps({"kv": "denied", "message": exc.message}))
            sys.exit(0)
        out = {}
        m.kv.put("e2e-kv", "greeting", {"text": "hello"})
        out["kv"] = m.kv.get("e2e-kv", "greeting").value
        first = m.episodic.append("e2e-ep", "message", {"n": 1}, session_id="s1")
        second = m.episodic.append("e2e-ep", "message", {"n": 2}, session_id="s1")
        assert second.cursor > first.cursor
        out["episodic"] = [e.payload["n"] for e in m.episodic.window("e2e-ep", "s1", 2)]
        m.semantic.upsert("e2e-sem", "Ann prefers green tea", id="ann")
        m.semantic.upsert("e2e-sem", "The report is due on Friday", id="report")
        out["semantic"] = m.semantic.search("e2e-sem", "what tea does Ann like?", top_k=1)[
            0
        ].record.id
        m.artifact.put("e2e-art", b"artifact bytes", id="a/1", content_type="text/plain")
        out["artifact"] = m.artifact.get("e2e-art", "a/1").decode()
        lease = m.lease.acquire("e2e-lease", "job", ttl=30)
        out["lease_token"] = lease.fencing_token
        out["lease_released"] = m.lease.release("e2e-lease", "job", lease.fencing_token)
        s = m.session.open(checkpoint_namespace="e2e-session")
        held = m.lease.acquire("e2e-session", "task", ttl=60, session_id=s.session_id)
        out["session_lease"] = held.session_id == s.session_id
        out["session_released"] = s.close(checkpoint=True).released_leases
        print(json.dumps(out))
    """
)


def secret(namespace: str, name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def store(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "memsidecar.io/v1alpha1",
        "kind": "MemoryStore",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": {
            "postgres": {"dsnSecretRef": {"name": "pg"}},
            "blocks": {
                "kv": {"driver": "postgres"},
                "episodic": {"driver": "postgres"},
                "lease": {"driver": "postgres"},
                "semantic": {"driver": "memory"},
                "artifact": {"driver": "localfs"},
            },
        },
    }


def policy(namespace: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "memsidecar.io/v1alpha1",
        "kind": "MemoryPolicy",
        "metadata": {"name": "e2e", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": APP_LABELS},
            "defaultEffect": "allow",
            "rules": rules,
        },
    }


ALLOW_ALL = [{"name": "everything", "effect": "allow"}]
DENY_KV = [{"name": "no-kv", "effect": "deny", "match": {"blocks": ["kv"]}}]


def deployment(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "e2e-agent", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": APP_LABELS},
            "template": {
                "metadata": {
                    "labels": APP_LABELS,
                    "annotations": {
                        "memsidecar.io/inject": "true",
                        "memsidecar.io/agent-id": AGENT_ID,
                    },
                },
                "spec": {
                    "serviceAccountName": "e2e-agent",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [
                        {
                            "name": "agent",
                            "image": AGENT_IMAGE,
                            "command": ["python", "-c", "import time; time.sleep(10**9)"],
                        }
                    ],
                },
            },
        },
    }


def sidecar_rbac(namespace: str) -> list[dict[str, Any]]:
    """The sidecar's Role and RoleBinding as docs/policy.md ("Permissions") gives them."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "e2e-agent", "namespace": namespace}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "memsidecar-sidecar", "namespace": namespace},
            "rules": [
                {"apiGroups": ["memsidecar.io"], "resources": ["memorypolicies"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "memsidecar-sidecar", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "memsidecar-sidecar"},
            "subjects": [{"kind": "ServiceAccount", "name": "e2e-agent",
                          "namespace": namespace}],
        },
    ]  # fmt: skip


def ready(kubectl: Kubectl, kind: str, name: str, namespace: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = kubectl.get(kind, name, namespace)
        cond = condition(obj, "Ready")
        if obj is None or cond is None or cond["status"] != "True":
            return None
        if obj["status"].get("observedGeneration") != obj["metadata"]["generation"]:
            return None
        return obj

    return wait_for(probe, f"{kind} {namespace}/{name} Ready", timeout=60)


@dataclass
class Flow:
    kubectl: Kubectl
    namespace: str
    workdir: Path
    kubelet: bool
    pod: dict[str, Any] = field(default_factory=dict)
    runner: PodRunner | None = None

    def agent(self, mode: str = "all") -> dict[str, Any]:
        """Run the agent once; return what it printed."""
        if self.kubelet:
            name = self.pod["metadata"]["name"]
            result = self.kubectl.run(
                "exec", name, "-n", self.namespace, "-c", "agent", "--",
                "python", "-c", AGENT, mode, timeout=90,
            )  # fmt: skip
            return dict(json.loads(result.stdout.strip().splitlines()[-1]))
        assert self.runner is not None
        env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(self.workdir)}
        env.update(app_env(self.pod, self.runner, "agent"))
        done = subprocess.run(
            [sys.executable, "-c", AGENT, mode],
            env=env,
            # Not the repo: its operator/ folder would shadow the stdlib's `operator`.
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, (
            f"agent failed:\n{done.stderr}\nsidecar log:\n{self.runner.tail()}"
        )
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def flow(
    kubectl: Kubectl,
    operator: OperatorProcess | None,
    namespace: str,
    database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Flow]:
    state = Flow(kubectl, namespace, tmp_path_factory.mktemp("pod"), has_kubelet(kubectl))
    try:
        yield state
    finally:
        if state.runner is not None:
            state.runner.stop()
        for kind, name in (("deployment", "e2e-agent"), ("memorystore", "default")):
            kubectl.run("delete", kind, name, "-n", namespace, "--ignore-not-found",
                        "--wait=false", check=False)  # fmt: skip


def test_1_store_and_policy_are_ready(flow: Flow, database: str) -> None:
    k, ns = flow.kubectl, flow.namespace
    k.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    k.apply(secret(ns, "pg", dsn=database))
    for obj in sidecar_rbac(ns):
        k.apply(obj)
    k.apply(store(ns))
    k.apply(policy(ns, ALLOW_ALL))

    got = ready(k, "memorystore", "default", ns)
    assert got["status"]["observedGeneration"] == got["metadata"]["generation"]
    for kind in ("BackendReachable", "Migrated"):
        assert (condition(got, kind) or {}).get("status") == "True", got["status"]
    cm = wait_for(lambda: k.get("configmap", "memsidecar-default", ns), "the ConfigMap")
    assert cm["metadata"]["ownerReferences"][0]["uid"] == got["metadata"]["uid"]
    config = yaml.safe_load(cm["data"]["sidecar.yaml"])
    assert config["blocks"]["kv"]["driver"] == "postgres"
    assert config["blocks"]["lease"]["driver"] == "postgres"
    assert config["identity"]["tenant"] == ns
    assert database.rsplit("/", 1)[1] not in cm["data"]["sidecar.yaml"]  # the DSN stays secret
    ready(k, "memorypolicy", "e2e", ns)


def test_2_deployment_pod_is_admitted_with_the_sidecar(flow: Flow) -> None:
    k, ns = flow.kubectl, flow.namespace
    k.apply(deployment(ns))

    def one_pod() -> dict[str, Any] | None:
        items = k.items("pods", ns, "-l", "app=e2e-agent")
        return items[0] if len(items) == 1 else None

    pod = wait_for(one_pod, "the Deployment's pod (created through the webhook)", timeout=60)
    flow.pod = pod
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["annotations"]["memsidecar.io/status"] == "injected"
    sidecar = spec["initContainers"][0]
    assert sidecar["name"] == "memsidecar" and sidecar["restartPolicy"] == "Always"
    argv = [*(sidecar.get("command") or []), *(sidecar.get("args") or [])]
    assert argv[:2] == ["memsidecar", "serve"] and "--socket" in argv and "--config" in argv
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["MEMSIDECAR_IDENTITY__AGENT"]["value"] == AGENT_ID
    assert env["MEMSIDECAR_PG_DSN"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "dsn"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert sidecar[probe]["exec"]["command"][:2] == ["memsidecar", "probe"]
    ctx = sidecar["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"]["drop"] == ["ALL"]
    assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["memsidecar-socket"]["emptyDir"]["medium"] == "Memory"
    assert volumes["memsidecar-config"]["configMap"]["name"] == "memsidecar-default"
    [app] = spec["containers"]
    app_vars = {e["name"]: e.get("value") for e in app["env"]}
    socket_path = app_vars["MEMSIDECAR_SOCKET"]
    assert socket_path == "/var/run/memsidecar/memsidecar.sock"
    assert app_vars["MEMSIDECAR_AGENT_ID"] == AGENT_ID
    mounts = {m["name"]: m for m in app["volumeMounts"]}
    assert mounts["memsidecar-socket"]["readOnly"] is True
    assert "MEMSIDECAR_PG_DSN" not in app_vars  # secrets never reach the app
    assert not spec.get("nodeName") or flow.kubelet


def test_3_sidecar_runs_and_agent_uses_every_block(flow: Flow) -> None:
    assert flow.pod, "needs the admitted pod of test_2"
    if flow.kubelet:
        k, ns, name = flow.kubectl, flow.namespace, flow.pod["metadata"]["name"]
        k.run("wait", "--for=condition=Ready", f"pod/{name}", "-n", ns, "--timeout=120s",
              timeout=130)  # fmt: skip
    else:
        flow.runner = PodRunner(flow.kubectl, flow.pod, flow.workdir / "kubelet")
        flow.runner.start(timeout=40)
    out = flow.agent()
    assert out == {
        "kv": {"text": "hello"},
        "episodic": [1, 2],
        "semantic": "ann",
        "artifact": "artifact bytes",
        "lease_token": out["lease_token"],
        "lease_released": True,
        "session_lease": True,
        "session_released": 1,
    }
    assert isinstance(out["lease_token"], int) and out["lease_token"] > 0


def test_4_policy_change_is_enforced_without_restart(flow: Flow) -> None:
    assert flow.pod, "needs the admitted pod of test_2"
    cm = flow.kubectl.get("configmap", "memsidecar-default", flow.namespace) or {}
    rendered = yaml.safe_load(cm.get("data", {}).get("sidecar.yaml", "{}")) or {}
    assert (rendered.get("policy") or {}).get("kubernetes") == {}
    assert flow.agent("kv-only") == {"kv": "allowed"}
    pid_before = flow.runner.process.pid if flow.runner and flow.runner.process else None
    flow.kubectl.apply(policy(flow.namespace, DENY_KV))
    out = wait_for(
        lambda: (o := flow.agent("kv-only"))["kv"] == "denied" and o,
        "the sidecar to deny kv after the policy change",
        timeout=POLICY_WAIT,
        interval=0.5,
    )
    assert "no-kv" in out["message"] or "denied" in out["message"].lower()
    if flow.runner is not None:
        assert flow.runner.process is not None and flow.runner.process.pid == pid_before


def test_5_deleting_the_store_and_deployment_cleans_up(flow: Flow) -> None:
    k, ns = flow.kubectl, flow.namespace
    assert k.get("configmap", "memsidecar-default", ns) is not None
    k.run("delete", "deployment", "e2e-agent", "-n", ns, "--wait=false")
    k.run("delete", "memorystore", "default", "-n", ns, "--wait=false")
    wait_for(
        lambda: k.get("configmap", "memsidecar-default", ns) is None,
        "the garbage collector to delete the store's ConfigMap",
        timeout=60,
    )
    wait_for(
        lambda: not k.items("pods", ns, "-l", "app=e2e-agent"),
        "the Deployment's pods to go away",
        timeout=60,
    )
    if flow.runner is not None:
        # The harness's kubelet stops the container of a deleted pod, as a kubelet would.
        assert flow.runner.stop() == 0, flow.runner.tail()
        flow.runner = None
    assert k.get("memorystore", "default", ns) is None
