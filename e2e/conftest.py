"""Fixtures of the e2e suite: the cluster (any KUBECONFIG, else e2e/cluster's), the
operator, Postgres, and one test namespace.

The operator runs as a local process (`python -m memsidecar.operator`, webhook on
127.0.0.1) unless MEMSIDECAR_E2E_EXTERNAL_OPERATOR=1 says one is already installed in
the cluster (e.g. by the Helm chart on kind), which then serves the webhook.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.operator.cluster import RUN_LABEL, Kubectl, OperatorProcess

# The control plane, the run id and a fresh Postgres database are the operator tests'.
from tests.operator.conftest import database, kubectl, run_id

__all__ = ["database", "kubectl", "run_id"]

EXTERNAL_OPERATOR = os.environ.get("MEMSIDECAR_E2E_EXTERNAL_OPERATOR") == "1"


@pytest.fixture(scope="module")
def operator(
    kubectl: Kubectl, run_id: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess | None]:
    if EXTERNAL_OPERATOR:
        yield None
        return
    process = OperatorProcess(kubectl, run_id, tmp_path_factory.mktemp("operator"))
    try:
        process.start()
        yield process
    finally:
        code = process.stop()
        process.cleanup_configurations()
        if code not in (None, 0):
            print(f"operator exit code {code}; log tail:\n{process.tail()}")


@pytest.fixture(scope="module")
def namespace(kubectl: Kubectl, run_id: str) -> Iterator[str]:
    """The test namespace: one the local operator watches (msop-<run>-*) and whose pods
    its webhook covers (labelled with the run)."""
    name = f"msop-{run_id}-e2e-{uuid.uuid4().hex[:4]}"
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {RUN_LABEL: run_id}},
        }
    )
    try:
        yield name
    finally:
        kubectl.run("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
