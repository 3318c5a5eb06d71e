"""Backend reachability checks against the real test ground (scripts/postgres.sh,
scripts/minio.sh): the messages must say what is wrong and never leak a password."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

from memsidecar.operator.backends import S3Target, check_postgres, check_s3, describe_dsn

S3_ENDPOINT = os.environ.get("MEMSIDECAR_S3_ENDPOINT", "http://127.0.0.1:59000")
S3_KEY = os.environ.get("MEMSIDECAR_S3_ACCESS_KEY", "memsidecar")
S3_SECRET = os.environ.get("MEMSIDECAR_S3_SECRET_KEY", "memsidecar-secret")
SOURCE = "Secret team-a/pg key 'dsn'"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_(dsn: str, **parts: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(dsn)
    netloc = parts.get("netloc", u.netloc)
    return urlunsplit((u.scheme, netloc, parts.get("path", u.path), u.query, u.fragment))


def test_describe_dsn_hides_credentials() -> None:
    assert describe_dsn("postgresql://u:pw@db:6543/mem") == "db:6543/mem"
    assert describe_dsn("postgres://h") == "h:5432"
    assert describe_dsn("host=db password=pw") == "the database"


async def test_reachable_postgres(postgres: str) -> None:
    probe = await check_postgres(postgres, SOURCE, 5)
    assert probe.ok and probe.message == "postgres at 127.0.0.1:55432/memsidecar_test"


async def test_refused_connection_is_actionable() -> None:
    port = closed_port()
    probe = await check_postgres(f"postgresql://u:pw@127.0.0.1:{port}/db", SOURCE, 5)
    assert not probe.ok and probe.reason == "PostgresUnreachable"
    assert probe.message == (
        f"postgres at 127.0.0.1:{port}/db refused the connection; is it running and listening "
        f"there? (DSN from {SOURCE})"
    )


async def test_wrong_password_and_database(postgres: str) -> None:
    wrong = with_(postgres, netloc="memsidecar:not-the-password@127.0.0.1:55432")
    probe = await check_postgres(wrong, SOURCE, 5)
    assert probe.reason == "PostgresAuthFailed", probe
    assert "not-the-password" not in probe.message and SOURCE in probe.message
    missing = with_(postgres, path="/no_such_db_for_memsidecar")
    probe = await check_postgres(missing, SOURCE, 5)
    assert probe.reason == "DatabaseNotFound" and "create the database" in probe.message


async def test_unusable_dsn() -> None:
    probe = await check_postgres("mysql://x", SOURCE, 2)
    assert probe.reason == "InvalidDSN" and "postgresql://user:password@host" in probe.message


@pytest.fixture(scope="module")
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


def target(bucket: str, **kw: object) -> S3Target:
    base: dict[str, object] = {
        "bucket": bucket,
        "endpoint": S3_ENDPOINT,
        "region": "us-east-1",
        "force_path_style": True,
        "access_key_id": S3_KEY,
        "secret_access_key": S3_SECRET,
        "source": "Secret team-a/minio",
    }
    base.update(kw)
    return S3Target(**base)  # type: ignore[arg-type]


async def test_s3_bucket_reachable(bucket: str) -> None:
    probe = await check_s3(target(bucket), 5)
    assert probe.ok and probe.message == f"bucket {bucket} at {S3_ENDPOINT}"


async def test_s3_missing_bucket_wrong_keys_and_closed_port(bucket: str) -> None:
    probe = await check_s3(target(bucket + "-missing"), 5)
    assert probe.reason == "BucketNotFound" and "never creates buckets" in probe.message
    probe = await check_s3(target(bucket, secret_access_key="wrong"), 5)
    assert probe.reason == "S3AccessDenied" and "Secret team-a/minio" in probe.message
    probe = await check_s3(target(bucket, endpoint=f"http://127.0.0.1:{closed_port()}"), 2)
    assert probe.reason == "S3Unreachable"
