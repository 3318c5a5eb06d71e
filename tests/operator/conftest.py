"""Fixtures of the operator tests that need the real control plane (and Postgres).

Without a reachable cluster these tests FAIL (they never skip), saying how to start it.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from tests.operator.cluster import (
    RUN_LABEL,
    Kubectl,
    OperatorProcess,
    find_kubeconfig,
    find_kubectl,
)
from tests.support import PG_TEST_DSN, REPO

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def kubectl() -> Kubectl:
    kubeconfig = find_kubeconfig()
    binary = find_kubectl()
    if binary is None or not kubeconfig.is_file():
        pytest.fail(
            f"no Kubernetes control plane (kubectl: {binary}, kubeconfig {kubeconfig}): "
            "run e2e/cluster/up.sh",
            pytrace=False,
        )
    client = Kubectl(binary, kubeconfig)
    ready = client.run("get", "--raw", "/readyz", check=False, timeout=15)
    if ready.returncode != 0:
        pytest.fail(
            f"the Kubernetes API server is not answering ({ready.stderr.strip()[:300]}): "
            "run e2e/cluster/up.sh",
            pytrace=False,
        )
    client.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    client.run(
        "wait",
        "--for=condition=Established",
        "crd/memorystores.memsidecar.io",
        "crd/memorypolicies.memsidecar.io",
        "--timeout=30s",
    )
    return client


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def operator(
    kubectl: Kubectl, run_id: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(kubectl, run_id, tmp_path_factory.mktemp("operator"))
    try:
        process.start()
        yield process
    finally:
        code = process.stop()
        process.cleanup_configurations()
        if code not in (None, 0):
            print(f"operator exit code {code}; log tail:\n{process.tail()}")


def _namespace(kubectl: Kubectl, run_id: str, webhooks: bool) -> Iterator[str]:
    name = f"msop-{run_id}-{next(_counter)}"
    labels = {RUN_LABEL: run_id} if webhooks else {"memsidecar-test/run": run_id}
    kubectl.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    )
    try:
        yield name
    finally:
        kubectl.run("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def namespace(kubectl: Kubectl, run_id: str, operator: OperatorProcess) -> Iterator[str]:
    """A fresh namespace the operator watches and its webhooks cover."""
    yield from _namespace(kubectl, run_id, webhooks=True)


@pytest.fixture
def plain_namespace(kubectl: Kubectl, run_id: str, operator: OperatorProcess) -> Iterator[str]:
    """A fresh namespace the operator watches but its webhooks do not cover (so objects the
    validating webhook would refuse can be created, as when the webhook was down)."""
    yield from _namespace(kubectl, run_id, webhooks=False)


@pytest.fixture(scope="session")
def database(run_id: str) -> Iterator[str]:
    """A fresh, empty database on the test-ground Postgres, dropped afterwards, so the
    operator's migration really has something to apply."""
    name = f"msop_{run_id}"
    admin = PG_TEST_DSN

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(execute(f"CREATE DATABASE {name}"))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"Postgres is not usable at {admin} ({exc}): run `scripts/postgres.sh up`",
            pytrace=False,
        )
    base, _, _ = admin.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
