"""The artifact drivers the conformance suite runs against; a new driver adds a parameter here.

Each entry is a set of config overrides for tests.support.running_sidecar, which
already points blocks.artifact.options.root at a fresh temp dir (used by localfs).
The s3 entry runs against the MinIO of scripts/minio.sh; every test writes under a
prefix of its own (s3_options), so runs and tests never see each other's objects.
"""

from __future__ import annotations

import os
import re
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from memsidecar.client.blocks.artifact import AsyncArtifact
from memsidecar.sidecar.server import Sidecar
from tests.support import ManualClock, running_sidecar

# The test-ground MinIO of scripts/minio.sh (`eval "$(scripts/minio.sh env)"` prints these).
S3_ENDPOINT = os.environ.get("MEMSIDECAR_S3_ENDPOINT", "http://127.0.0.1:59000")
S3_REGION = os.environ.get("MEMSIDECAR_S3_REGION", "us-east-1")
os.environ.setdefault("MEMSIDECAR_S3_ACCESS_KEY", "memsidecar")
os.environ.setdefault("MEMSIDECAR_S3_SECRET_KEY", "memsidecar-secret")
S3_BUCKET = "memsidecar-test"
# Everything this test run writes lives under this prefix (removed at the end of the run).
S3_RUN_PREFIX = f"run-{uuid.uuid4().hex[:12]}/"
MiB = 1024 * 1024
# A journal entry of the s3 driver (<prefix>up/<version>), under any test's prefix.
JOURNAL_ENTRY = re.compile(r"(^|/)up/[0-9a-f]{32}$")


def s3_options(**changes: Any) -> dict[str, Any]:
    """s3 driver options on the test MinIO, under a fresh prefix of this run."""
    return {
        "endpoint": S3_ENDPOINT,
        "region": S3_REGION,
        "bucket": S3_BUCKET,
        "prefix": f"{S3_RUN_PREFIX}{uuid.uuid4().hex[:12]}/",
        "access_key_env": "MEMSIDECAR_S3_ACCESS_KEY",
        "secret_key_env": "MEMSIDECAR_S3_SECRET_KEY",
        "create_bucket": True,
        # S3's smallest parts, so multipart uploads happen at test sizes.
        "multipart_threshold": 5 * MiB,
        "part_size": 5 * MiB,
        "max_attempts": 2,
        "connect_timeout": 2,
        **changes,
    }


ARTIFACT_DRIVERS: dict[str, dict[str, Any]] = {
    "memory": {"blocks.artifact.driver": "memory", "blocks.artifact.options": {}},
    "localfs": {"blocks.artifact.driver": "localfs"},
    "s3": {"blocks.artifact.driver": "s3", "blocks.artifact.options": s3_options()},
}

# Namespaces every conformance run has: "limited" overrides the size cap.
LIMITED_MAX_BYTES = 100_000
NAMESPACES: dict[str, Any] = {"limited": {"max_size_bytes": LIMITED_MAX_BYTES}, "*": {}}


@dataclass
class ArtifactHarness:
    sidecar: Sidecar
    client: AsyncArtifact
    driver: str

    @property
    def disk_root(self) -> Path | None:
        """Where the driver keeps files, when it keeps them on local disk."""
        root = self.sidecar.config.blocks.artifact.options.get("root")
        return Path(root) if self.driver == "localfs" and root else None


def s3_client(endpoint: str = S3_ENDPOINT) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=S3_REGION,
        aws_access_key_id=os.environ["MEMSIDECAR_S3_ACCESS_KEY"],
        aws_secret_access_key=os.environ["MEMSIDECAR_S3_SECRET_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def s3_keys(client: Any, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def s3_uploads(client: Any, prefix: str) -> list[dict[str, Any]]:
    """Incomplete multipart uploads under prefix: those the whole-bucket listing shows, and
    those the driver's journal (<prefix>up/) names, looked up by exact key -- MinIO lists
    uploads only per exact key, or for the whole bucket but only since its last start."""
    found: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=S3_BUCKET):
        found.update(
            (u["UploadId"], u) for u in page.get("Uploads", []) if u["Key"].startswith(prefix)
        )
    journal = [k for k in s3_keys(client, prefix) if JOURNAL_ENTRY.search(k)]
    for entry in journal:
        try:
            key = client.get_object(Bucket=S3_BUCKET, Key=entry)["Body"].read().decode()
        except client.exceptions.NoSuchKey:
            continue  # done meanwhile
        response = client.list_multipart_uploads(Bucket=S3_BUCKET, Prefix=key)
        found.update((u["UploadId"], u) for u in response.get("Uploads", []) if u["Key"] == key)
    return list(found.values())


def upload_exists(client: Any, key: str, upload_id: str) -> bool:
    try:
        client.list_parts(Bucket=S3_BUCKET, Key=key, UploadId=upload_id)
    except client.exceptions.NoSuchUpload:
        return False
    return True


def minio_live(endpoint: str = S3_ENDPOINT) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/minio/health/live", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def minio() -> Iterator[Any]:
    """The test MinIO, reachable (a clear failure when it is not); a boto3 client on it.
    At the end of the run everything the run wrote is removed."""
    if not minio_live():
        pytest.fail(
            f"MinIO is not reachable at {S3_ENDPOINT}: run `scripts/minio.sh up` (make test does)",
            pytrace=False,
        )
    client = s3_client()
    yield client
    if minio_live():
        for upload in s3_uploads(client, S3_RUN_PREFIX):
            client.abort_multipart_upload(
                Bucket=S3_BUCKET, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        keys = s3_keys(client, S3_RUN_PREFIX)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            client.delete_objects(Bucket=S3_BUCKET, Delete={"Objects": batch, "Quiet": True})


def driver_overrides(driver: str) -> dict[str, Any]:
    """ARTIFACT_DRIVERS[driver], with a prefix of its own for s3."""
    if driver == "s3":
        return {**ARTIFACT_DRIVERS[driver], "blocks.artifact.options": s3_options()}
    return ARTIFACT_DRIVERS[driver]


@pytest.fixture(params=sorted(ARTIFACT_DRIVERS))
async def artifact_harness(
    request: pytest.FixtureRequest, clock: ManualClock
) -> AsyncIterator[ArtifactHarness]:
    if request.param == "s3":
        request.getfixturevalue("minio")
    overrides = {
        **driver_overrides(request.param),
        "blocks.artifact.namespaces": NAMESPACES,
    }
    async with running_sidecar(overrides, clock=clock) as (sidecar, client):
        yield ArtifactHarness(sidecar, client.artifact, request.param)


@pytest.fixture
def artifact(artifact_harness: ArtifactHarness) -> AsyncArtifact:
    return artifact_harness.client
