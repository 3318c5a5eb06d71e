"""The e2e harness's kubelet: run an admitted Pod's injected sidecar as a local process.

The loopback control plane (e2e/cluster) has no kubelet, so the Pods a Deployment gets
stay Pending. `PodRunner` does the kubelet's part for the `memsidecar` init container
only, from the Pod object the API server admitted (nothing is taken from the injector's
code): every volume the container mounts becomes a temp dir filled like the kubelet
would (ConfigMap keys, Downward API `labels`/`annotations`, a projected service-account
token), every mount path in the command, the env and the rendered config is rewritten
onto those dirs, env `valueFrom` is resolved (Secrets, ConfigMaps, Pod fields), and the
image's `memsidecar` is the venv's.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.operator.cluster import Kubectl, wait_for

JSON = dict[str, Any]
VENV_BIN = Path(sys.executable).parent
# Kubelets normally mount this path for the projected service-account token; the
# official Python client reads it at a fixed path, so the harness hands the sidecar a
# kubeconfig built from the same token instead (see `_kube_api`).
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def downward_format(values: Mapping[str, str]) -> str:
    """The Downward API's file format: one `key="value"` line per entry, sorted."""
    return "".join(f"{k}={json.dumps(v)}\n" for k, v in sorted(values.items()))


def pod_field(pod: JSON, path: str) -> str:
    meta = pod.get("metadata") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName"),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName") or "e2e-harness",
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path] or "")
    for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str((meta.get(source) or {}).get(path[len(prefix) + 2 : -2], ""))
    raise AssertionError(f"the harness cannot resolve fieldRef {path!r}")


@dataclass
class PodRunner:
    """Plays the kubelet for one container (default: the injected sidecar) of `pod`."""

    kubectl: Kubectl
    pod: JSON
    workdir: Path
    container_name: str = "memsidecar"
    mounts: dict[str, Path] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def container(self) -> JSON:
        spec = self.pod["spec"]
        for c in [*(spec.get("initContainers") or []), *spec["containers"]]:
            if c["name"] == self.container_name:
                return dict(c)
        raise AssertionError(f"pod has no container {self.container_name!r}")

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.container_name}.log"

    # --- paths -----------------------------------------------------------------------------

    def host_path(self, path: str) -> str:
        """`path` as seen inside the container, on the harness's temp dirs."""
        best = ""
        for mount in self.mounts:
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) > len(
                best
            ):
                best = mount
        if not best:
            return path
        return str(self.mounts[best]) + path[len(best) :]

    def rewrite(self, value: Any) -> Any:
        """Every string in `value` that names a mounted path, mapped onto the temp dirs."""
        if isinstance(value, str):
            return self.host_path(value) if value.startswith("/") else value
        if isinstance(value, list):
            return [self.rewrite(v) for v in value]
        if isinstance(value, dict):
            return {k: self.rewrite(v) for k, v in value.items()}
        return value

    # --- volumes ---------------------------------------------------------------------------

    def _secret(self, name: str) -> dict[str, str]:
        obj = self.kubectl.get("secret", name, self.namespace)
        assert obj is not None, f"Secret {self.namespace}/{name} is missing"
        return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}

    def _config_map(self, name: str) -> dict[str, str]:
        obj = self.kubectl.get("configmap", name, self.namespace)
        assert obj is not None, f"ConfigMap {self.namespace}/{name} is missing"
        return dict(obj.get("data") or {})

    def _fill(self, volume: JSON, target: Path) -> None:
        meta = self.pod["metadata"]
        if "configMap" in volume:
            data = self._config_map(volume["configMap"]["name"])
            items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                (target / item["path"]).write_text(data[item["key"]])
        elif "secret" in volume:
            data = self._secret(volume["secret"]["secretName"])
            for key, value in data.items():
                (target / key).write_text(value)
        elif "downwardAPI" in volume:
            for item in volume["downwardAPI"]["items"]:
                path = item["fieldRef"]["fieldPath"]
                values = meta.get(path.removeprefix("metadata.")) or {}
                (target / item["path"]).write_text(downward_format(values))
        elif "projected" in volume:
            for source in volume["projected"]["sources"]:
                if "serviceAccountToken" in source:
                    self._kube_api(target, source["serviceAccountToken"]["path"])
                elif "configMap" in source:
                    # kube-root-ca.crt: the cluster CA, written by _kube_api from the
                    # kubeconfig (the same CA) when the ConfigMap is not there yet.
                    ca_map = self.kubectl.get(
                        "configmap", source["configMap"]["name"], self.namespace
                    )
                    found = dict((ca_map or {}).get("data") or {})
                    for item in source["configMap"].get("items") or []:
                        if item["key"] in found:
                            (target / item["path"]).write_text(found[item["key"]])
                elif "downwardAPI" in source:
                    for item in source["downwardAPI"]["items"]:
                        value = pod_field(self.pod, item["fieldRef"]["fieldPath"])
                        (target / item["path"]).write_text(value)
        # emptyDir: nothing to fill.

    def _kube_api(self, target: Path, token_file: str) -> None:
        """A real token of the pod's service account, the cluster CA, and a kubeconfig
        using both (in place of the in-cluster config at its fixed path)."""
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        token = self.kubectl.run("create", "token", sa, "-n", self.namespace).stdout.strip()
        (target / token_file).write_text(token)
        view = json.loads(
            self.kubectl.run("config", "view", "--raw", "--minify", "-o", "json").stdout
        )
        cluster = view["clusters"][0]["cluster"]
        ca_data = cluster.get("certificate-authority-data")
        if ca_data:
            ca = base64.b64decode(ca_data).decode()
        else:
            ca = Path(cluster["certificate-authority"]).read_text()
        if not (target / "ca.crt").exists():
            (target / "ca.crt").write_text(ca)
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "e2e",
                    "cluster": {
                        "server": cluster["server"],
                        "certificate-authority": str(target / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": "sa", "user": {"tokenFile": str(target / token_file)}}],
            "contexts": [
                {
                    "name": "sa",
                    "context": {"cluster": "e2e", "user": "sa", "namespace": self.namespace},
                }
            ],
            "current-context": "sa",
        }
        (self.workdir / "sa.kubeconfig").write_text(yaml.safe_dump(kubeconfig))

    def prepare(self) -> None:
        volumes = {v["name"]: v for v in self.pod["spec"].get("volumes") or []}
        for mount in self.container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            target = self.workdir / "volumes" / mount["name"]
            if mount["mountPath"] in self.mounts:
                continue
            target.mkdir(parents=True, exist_ok=True)
            self.mounts[mount["mountPath"]] = target
            self._fill(volume, target)

    # --- env and command -------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.container.get("env") or []:
            if "value" in item:
                out[item["name"]] = self.rewrite(item["value"])
                continue
            source = item["valueFrom"]
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                out[item["name"]] = self._secret(ref["name"])[ref["key"]]
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                out[item["name"]] = self._config_map(ref["name"])[ref["key"]]
            elif "fieldRef" in source:
                out[item["name"]] = pod_field(self.pod, source["fieldRef"]["fieldPath"])
            else:
                raise AssertionError(f"the harness cannot resolve env {item}")
        return out

    def command(self) -> list[str]:
        argv = [*(self.container.get("command") or []), *(self.container.get("args") or [])]
        assert argv, "the container has no command"
        argv = [self.rewrite(a) for a in argv]
        # The image's entry point is this checkout's venv: a host path, never a mount path
        # (so a checkout under /tmp, which the pod mounts, is not mapped onto a volume).
        if argv[0] == "memsidecar":
            argv[0] = str(VENV_BIN / "memsidecar")
        return argv

    def rewrite_config(self) -> None:
        """Rewrite mount paths inside the rendered sidecar config (a mounted file)."""
        for target in self.mounts.values():
            for path in target.glob("*.yaml"):
                config = yaml.safe_load(path.read_text())
                if not isinstance(config, dict):
                    continue
                config = self.rewrite(config)
                kube = (config.get("policy") or {}).get("kubernetes")
                if isinstance(kube, dict) and "labels_file" not in kube:
                    kube["labels_file"] = self.host_path("/etc/memsidecar-podinfo/labels")
                path.write_text(yaml.safe_dump(config, sort_keys=False))

    # --- process ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        self.rewrite_config()
        env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(self.workdir)}
        env.update(self.env())
        if (self.workdir / "sa.kubeconfig").exists():
            env["KUBECONFIG"] = str(self.workdir / "sa.kubeconfig")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), env=env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
            )
        probe = self.container.get("startupProbe") or self.container.get("readinessProbe")
        wait_for(lambda: self._probe(probe), "the sidecar's startup probe", timeout, 0.3)

    def _probe(self, probe: JSON | None) -> bool:
        self.check_alive()
        if probe is None:
            return True
        argv = self.rewrite(list(probe["exec"]["command"]))
        if argv[0] == "memsidecar":
            argv[0] = str(VENV_BIN / "memsidecar")
        result = subprocess.run(argv, capture_output=True, timeout=15, check=False)
        return result.returncode == 0

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"{self.container_name} exited with {self.process.returncode}:\n{self.tail()}"
            )

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        code = self.process.returncode
        self.process = None
        return code


def app_env(pod: JSON, runner: PodRunner, container: str | None = None) -> dict[str, str]:
    """An app container's literal env, with mount paths mapped like the sidecar's."""
    spec = pod["spec"]["containers"]
    chosen = next(c for c in spec if container is None or c["name"] == container)
    return {e["name"]: runner.rewrite(e["value"]) for e in chosen.get("env") or [] if "value" in e}


def has_kubelet(kubectl: Kubectl) -> bool:
    """Whether the cluster has a Ready node (then real kubelets run the pods)."""
    nodes = kubectl.run("get", "nodes", "-o", "json", check=False)
    if nodes.returncode != 0:
        return False
    for node in json.loads(nodes.stdout).get("items") or []:
        for cond in (node.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                return True
    return False
