"""The operator under test: a real `python -m memsidecar.operator` process against the
real kube-apiserver of e2e/cluster (DESIGN.md §10), and kubectl to drive it.

Isolation on a shared control plane: the operator watches only namespaces named
`msop-<run>-*`, its webhook configurations are named `msop-<run>` and apply only to
namespaces labelled `memsidecar-test/operator=<run>`, and all of it is deleted at
the end. The real CRDs from crds/ are applied (server-side, idempotently) and left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.support import REPO

T = TypeVar("T")
K8S_VERSION = os.environ.get("MEMSIDECAR_K8S_VERSION", "v1.35.4")
UP_HINT = 'run e2e/cluster/up.sh (`env_out="$(e2e/cluster/up.sh)"; eval "$env_out"`)'
RUN_LABEL = "memsidecar-test/operator"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    probe: Callable[[], T | None], what: str, timeout: float = 30.0, interval: float = 0.2
) -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def find_kubeconfig() -> Path:
    if os.environ.get("KUBECONFIG"):
        return Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
    state = Path(
        os.environ.get("MEMSIDECAR_K8S_STATE")
        or Path(os.environ.get("MEMSIDECAR_STATE") or Path.home() / ".local/state/memsidecar")
        / "k8s"
    )
    return state / "kubeconfig"


def find_kubectl() -> str | None:
    cache = Path(os.environ.get("MEMSIDECAR_CACHE") or Path.home() / ".cache/memsidecar")
    built = cache / "k8s" / K8S_VERSION / "bin" / "kubectl"
    if built.is_file():
        return str(built)
    return shutil.which("kubectl")


@dataclass
class Kubectl:
    binary: str
    kubeconfig: Path

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def apply(self, obj: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("apply", "-f", "-", stdin=json.dumps(obj), check=check)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
        if namespace:
            args += ["-n", namespace]
        out = self.run(*args).stdout.strip()
        return json.loads(out) if out else None

    def items(self, kind: str, namespace: str, *selector: str) -> list[dict[str, Any]]:
        out = self.run("get", kind, "-n", namespace, "-o", "json", *selector).stdout
        return list(json.loads(out).get("items") or [])


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return None


@dataclass
class OperatorProcess:
    kubectl: Kubectl
    run_id: str
    workdir: Path
    webhook_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def configuration_name(self) -> str:
        return f"msop-{self.run_id}"

    @property
    def log(self) -> Path:
        return self.workdir / "operator.log"

    def args(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "memsidecar.operator",
            "--watch-namespace",
            f"msop-{self.run_id}-*",
            "--namespace",
            f"msop-{self.run_id}-system",
            "--webhook-host",
            "127.0.0.1",
            "--webhook-listen",
            "127.0.0.1",
            "--webhook-port",
            str(self.webhook_port),
            "--webhook-generate-certificates",
            "--webhook-cert-dir",
            str(self.workdir / "certs"),
            "--webhook-manage-configuration",
            "--webhook-delete-configuration-on-exit",
            "--webhook-configuration-name",
            self.configuration_name,
            "--webhook-namespace-labels",
            json.dumps({RUN_LABEL: self.run_id}),
            "--sidecar-image",
            "example.test/memsidecar-sidecar:test",
            "--health-listen",
            "127.0.0.1",
            "--health-port",
            str(self.health_port),
            "--metrics-listen",
            "127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            # Short periods keep the tests fast; the behaviour is the same as the defaults'.
            "--recheck-seconds",
            "2",
            "--retry-base-seconds",
            "0.5",
            "--retry-max-seconds",
            "2",
            "--policy-status-seconds",
            "1",
            "--backend-timeout-seconds",
            "3",
            "--log-level",
            "debug",
        ]

    def start(self, timeout: float = 40.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "KUBECONFIG": str(self.kubectl.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.args(), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_for(self._ready, "the operator's /healthz and webhook configuration", timeout)

    def _ready(self) -> bool:
        self.check_alive()
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
            ) as answer:
                healthy = bool(answer.status == 200)
        except OSError:
            return False
        config = self.kubectl.get("mutatingwebhookconfiguration", self.configuration_name)
        return healthy and config is not None

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"the operator exited with {self.process.returncode}:\n{self.tail()}"
            )

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample on /metrics (0 when absent)."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as answer:
            text = answer.read().decode()
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith(name + "{"):
                key, _, value = line.partition("} ")
                got = ",".join(sorted(key[len(name) + 1 :].split(",")))
                if got == want:
                    return float(value)
        return 0.0

    def stop(self, timeout: float = 20.0) -> int | None:
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

    def cleanup_configurations(self) -> None:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            self.kubectl.run(
                "delete", kind, self.configuration_name, "--ignore-not-found", check=False
            )
