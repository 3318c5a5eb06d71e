"""Reachability checks of a MemoryStore's backends, each answering with a condition
reason and a message a human can act on (never a secret: DSNs are shown as
host:port/database)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg

BUCKET_NOT_FOUND_CODES = frozenset({"404", "NoSuchBucket", "NotFound"})
ACCESS_DENIED_CODES = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
)


@dataclass(frozen=True)
class Probe:
    """The outcome of one check: ok, or a CamelCase reason and what to do."""

    ok: bool
    reason: str
    message: str


def describe_dsn(dsn: str) -> str:
    """host:port/database of a DSN, without credentials ('the database' if unparsable)."""
    try:
        parts = urlsplit(dsn)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError(parts.scheme)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "the database"
    database = parts.path.lstrip("/")
    return f"{host}:{port}/{database}" if database else f"{host}:{port}"


def _root_cause(exc: BaseException) -> BaseException:
    seen = 0
    while exc.__cause__ is not None and seen < 10:
        exc = exc.__cause__
        seen += 1
    return exc


def postgres_failure(exc: BaseException, where: str, source: str, timeout: float) -> Probe:
    """Map a connection failure to a reason and an actionable message."""
    root = _root_cause(exc)
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return Probe(
            False,
            "PostgresAuthFailed",
            f"postgres at {where} rejected the credentials from {source} ({exc}); fix the "
            "user/password in the DSN or the server's pg_hba.conf",
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return Probe(
            False,
            "DatabaseNotFound",
            f"postgres at {where}: {exc}; create the database or fix the DSN in {source}",
        )
    if isinstance(exc, asyncpg.PostgresError):
        return Probe(False, "PostgresError", f"postgres at {where} refused the session: {exc}")
    if isinstance(root, ConnectionRefusedError) or "Connect call failed" in str(exc):
        return Probe(
            False,
            "PostgresUnreachable",
            f"postgres at {where} refused the connection; is it running and listening there? "
            f"(DSN from {source})",
        )
    if isinstance(root, socket.gaierror):
        return Probe(
            False,
            "PostgresUnreachable",
            f"cannot resolve the postgres host of {where} ({root}); fix the DSN in {source}",
        )
    if isinstance(exc, TimeoutError):
        return Probe(
            False,
            "PostgresUnreachable",
            f"postgres at {where} did not answer within {timeout:g}s (firewall, wrong host, "
            f"or overloaded server?); DSN from {source}",
        )
    if isinstance(exc, OSError):
        return Probe(
            False,
            "PostgresUnreachable",
            f"cannot connect to postgres at {where}: {exc.strerror or exc}; DSN from {source}",
        )
    return Probe(
        False,
        "PostgresUnreachable",
        f"cannot connect to postgres at {where}: {type(exc).__name__}: {exc}",
    )


async def check_postgres(dsn: str, source: str, timeout: float) -> Probe:
    """Connect with `dsn` and run SELECT 1. `source` names where the DSN came from."""
    where = describe_dsn(dsn)
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout, command_timeout=timeout)
    except (asyncpg.exceptions.ClientConfigurationError, ValueError) as exc:
        return Probe(
            False,
            "InvalidDSN",
            f"{source} does not hold a usable Postgres DSN ({type(exc).__name__}); expected "
            "e.g. postgresql://user:password@host:5432/database",
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return postgres_failure(exc, where, source, timeout)
    try:
        await conn.fetchval("SELECT 1")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return postgres_failure(exc, where, source, timeout)
    finally:
        try:
            await asyncio.wait_for(conn.close(), timeout)
        except (OSError, TimeoutError, asyncpg.InterfaceError):
            conn.terminate()
    return Probe(True, "Reachable", f"postgres at {where}")


@dataclass(frozen=True)
class S3Target:
    bucket: str
    endpoint: str | None = None
    region: str | None = None
    force_path_style: bool = False
    access_key_id: str | None = None
    secret_access_key: str | None = None
    # Where the credentials came from, for messages.
    source: str = "the operator's default AWS credentials"

    @property
    def where(self) -> str:
        endpoint = self.endpoint or f"AWS S3 ({self.region or 'default region'})"
        return f"bucket {self.bucket} at {endpoint}"


def _head_bucket(target: S3Target, timeout: float) -> Probe:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
    )

    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": 1, "mode": "standard"},
        s3={"addressing_style": "path" if target.force_path_style else "auto"},
    )
    try:
        s3 = boto3.session.Session().client(
            "s3",
            endpoint_url=target.endpoint or None,
            region_name=target.region or None,
            aws_access_key_id=target.access_key_id,
            aws_secret_access_key=target.secret_access_key,
            config=config,
        )
        s3.head_bucket(Bucket=target.bucket)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in BUCKET_NOT_FOUND_CODES or status == "404":
            return Probe(
                False,
                "BucketNotFound",
                f"{target.where} does not exist; create it (the operator never creates "
                "buckets) or fix spec.s3.bucket",
            )
        if code in ACCESS_DENIED_CODES or status == "403":
            return Probe(
                False,
                "S3AccessDenied",
                f"{target.where} refused the credentials from {target.source} (HTTP 403); "
                "grant them s3:ListBucket, GetObject, PutObject and DeleteObject on it",
            )
        return Probe(False, "S3Error", f"{target.where}: {code or status} {exc}")
    except EndpointConnectionError as exc:
        return Probe(
            False,
            "S3Unreachable",
            f"cannot connect to {target.where} ({exc}); is the endpoint right and the "
            "server running?",
        )
    except NoCredentialsError:
        return Probe(
            False,
            "S3NoCredentials",
            f"no credentials to check {target.where}: set spec.s3.credentialsSecretRef",
        )
    except (BotoCoreError, ValueError) as exc:
        return Probe(False, "S3Unreachable", f"cannot reach {target.where}: {exc}")
    return Probe(True, "Reachable", target.where)


async def check_s3(target: S3Target, timeout: float) -> Probe:
    """HEAD the bucket (boto3 is blocking: it runs in a worker thread)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(_head_bucket, target, timeout), timeout * 3)
    except TimeoutError:
        return Probe(
            False,
            "S3Unreachable",
            f"{target.where} did not answer within {timeout * 3:g}s",
        )
