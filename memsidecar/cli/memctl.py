"""`memctl`: key pairs and capability tokens for memsidecar (docs/tokens.md).

Commands print only what a shell script needs: `keys generate` the two file
paths, `token issue` the token, so `TOKEN=$(memctl token issue ...)` works.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast, get_args

import click
from cryptography.hazmat.primitives.asymmetric import ed25519

from memsidecar.sidecar.auth.keys import (
    ASYMMETRIC,
    DEFAULT_RSA_BITS,
    Algorithm,
    AuthConfigError,
    PrivateKey,
    load_private_key,
    public_material,
    write_key_pair,
)
from memsidecar.sidecar.auth.settings import VerificationKey
from memsidecar.sidecar.auth.tokens import (
    PASETO_PREFIX,
    TokenVerifier,
    inspect_token,
    issue_token,
)
from memsidecar.sidecar.errors import MemError
from memsidecar.sidecar.units import parse_duration

JWT_ALGORITHMS = ("EdDSA", "RS256", "HS256")


def _duration(value: str, option: str) -> timedelta:
    parsed = parse_duration(value)
    if not isinstance(parsed, timedelta):
        try:
            parsed = timedelta(seconds=float(value))
        except ValueError:
            raise click.BadParameter(
                f"{value!r} is not a duration; write e.g. 30m, 1h, 7d or seconds", param_hint=option
            ) from None
    if parsed.total_seconds() <= 0:
        raise click.BadParameter("must be positive", param_hint=option)
    return parsed


def _not_before(value: str | None) -> datetime | None:
    """An ISO 8601 time with offset, or a duration from now ("10m")."""
    if value is None:
        return None
    delta = parse_duration(value)
    if isinstance(delta, timedelta):
        return datetime.now(UTC) + delta
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an ISO 8601 time (2030-01-01T00:00:00Z) nor a duration from "
            "now (10m)",
            param_hint="--not-before",
        ) from None
    if moment.tzinfo is None:
        raise click.BadParameter(
            "give a time zone, e.g. 2030-01-01T00:00:00Z", param_hint="--not-before"
        )
    return moment


def _split(values: tuple[str, ...]) -> list[str]:
    """Repeated options, each possibly comma-separated: --ops kv.get,kv.put --ops lease.*"""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _token_arg(token: str) -> str:
    """The TOKEN argument, or stdin for "-" (keeps tokens out of shell history and ps)."""
    return sys.stdin.read().strip() if token == "-" else token.strip()


@click.group()
@click.version_option(package_name="memsidecar")
def main() -> None:
    """memctl: generate token signing keys and issue, inspect and verify capability tokens."""


@main.group()
def keys() -> None:
    """Signing key pairs."""


@keys.command("generate")
@click.option("--kid", required=True, help="key id; tokens name it, files are named after it")
@click.option(
    "--algorithm",
    type=click.Choice(list(ASYMMETRIC)),
    default="paseto-v4-public",
    show_default=True,
    help="paseto-v4-public and EdDSA make Ed25519 keys, RS256 an RSA key",
)
@click.option(
    "--rsa-bits",
    type=click.Choice(["2048", "3072", "4096"]),
    default=str(DEFAULT_RSA_BITS),
    show_default=True,
    help="RSA key size (RS256 only)",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="directory for KID.private.pem (mode 0600) and KID.public.pem",
)
@click.option("--force", is_flag=True, help="replace existing files with the same kid")
def keys_generate(kid: str, algorithm: str, rsa_bits: str, out: Path, force: bool) -> None:
    """Write OUT/KID.private.pem and OUT/KID.public.pem; print the two paths."""
    alg = _algorithm(algorithm)
    try:
        paths = write_key_pair(out, kid, alg, int(rsa_bits), overwrite=force)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(str(paths.private))
    click.echo(str(paths.public))


def _algorithm(value: str) -> Algorithm:
    if value in get_args(Algorithm):
        return cast(Algorithm, value)
    raise click.BadParameter(f"unknown algorithm {value!r}", param_hint="--algorithm")


@main.group()
def token() -> None:
    """Capability tokens."""


@token.command("issue")
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="private key PEM (from memctl keys generate)",
)
@click.option("--secret-env", help="HS256 only: env var holding the shared secret")
@click.option("--kid", required=True, help="the key id the sidecar knows this key by")
@click.option("--tenant", required=True)
@click.option("--agent", required=True)
@click.option(
    "--ns",
    "namespaces",
    multiple=True,
    required=True,
    help="namespace glob, e.g. 'kv/scratch*', '*/shared', '*' (repeat or comma-separate)",
)
@click.option(
    "--ops",
    multiple=True,
    required=True,
    help="op, e.g. kv.put, put (any block), kv.*, * (repeat or comma-separate)",
)
@click.option("--ttl", default="1h", show_default=True, help="validity, e.g. 15m, 1h, 7d")
@click.option("--not-before", help="start of validity: ISO 8601 time or a duration from now")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["paseto", "jwt"]),
    default="paseto",
    show_default=True,
)
@click.option(
    "--algorithm",
    type=click.Choice(list(JWT_ALGORITHMS)),
    help="JWT only; default from the key (Ed25519 -> EdDSA, RSA -> RS256, --secret-env -> HS256)",
)
@click.option("--audience", help="set the aud claim (when the sidecar sets auth.audience)")
def token_issue(
    key_file: Path | None,
    secret_env: str | None,
    kid: str,
    tenant: str,
    agent: str,
    namespaces: tuple[str, ...],
    ops: tuple[str, ...],
    ttl: str,
    not_before: str | None,
    fmt: str,
    algorithm: str | None,
    audience: str | None,
) -> None:
    """Sign a capability token and print it (only the token)."""
    if fmt == "paseto" and secret_env is not None:
        raise click.UsageError("PASETO v4.public tokens need --key (Ed25519), not --secret-env")
    key = _signing_key(key_file, secret_env)
    alg: Algorithm | None
    if fmt == "paseto":
        if algorithm is not None:
            raise click.BadParameter(
                "--algorithm is for --format jwt; PASETO is always v4.public",
                param_hint="--algorithm",
            )
        if isinstance(key, bytes):
            raise click.UsageError("PASETO v4.public tokens need --key (Ed25519), not --secret-env")
        alg = "paseto-v4-public"
    elif algorithm is not None:
        alg = _algorithm(algorithm)
    elif isinstance(key, bytes):
        alg = "HS256"
    else:
        alg = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "RS256"
    try:
        text = issue_token(
            key,
            kid=kid,
            tenant=tenant,
            agent=agent,
            namespaces=_split(namespaces),
            ops=_split(ops),
            ttl=_duration(ttl, "--ttl"),
            algorithm=alg,
            not_before=_not_before(not_before),
            audience=audience,
            clock=time.time,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(text)


def _signing_key(key_file: Path | None, secret_env: str | None) -> PrivateKey | bytes:
    if (key_file is None) == (secret_env is None):
        raise click.UsageError("give exactly one of --key PRIVATE.pem or --secret-env VAR (HS256)")
    if key_file is not None:
        try:
            return load_private_key(key_file)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
    value = os.environ.get(secret_env or "", "")
    if not value:
        raise click.ClickException(f"env var {secret_env} is not set or empty")
    return value.encode()


@token.command("inspect")
@click.argument("token_text", metavar="TOKEN")
def token_inspect(token_text: str) -> None:
    """Print a token's claims as JSON WITHOUT verifying it ("-" reads the token from stdin)."""
    try:
        parsed = inspect_token(_token_arg(token_text))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    out: dict[str, Any] = {
        "verified": False,
        "warning": "UNVERIFIED: decoded without checking the signature or expiry; "
        "use `memctl token verify` to check it",
        "format": parsed.format,
        ("footer" if parsed.format == "paseto" else "header"): parsed.header,
        "claims": parsed.claims,
    }
    click.echo(json.dumps(out, indent=2, sort_keys=False))


@token.command("verify")
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="public key PEM (or PASERK k4.public file) of the signing key",
)
@click.option("--secret-env", help="HS256 only: env var holding the shared secret")
@click.option("--kid", required=True, help="the key id to accept")
@click.option(
    "--algorithm",
    type=click.Choice(list(get_args(Algorithm))),
    help="the key's algorithm; default from the token format and key type",
)
@click.option("--audience", help="require this aud claim")
@click.option("--leeway", default=30.0, show_default=True, help="clock skew allowed, seconds")
@click.argument("token_text", metavar="TOKEN")
def token_verify(
    public_key: Path | None,
    secret_env: str | None,
    kid: str,
    algorithm: str | None,
    audience: str | None,
    leeway: float,
    token_text: str,
) -> None:
    """Verify TOKEN like the sidecar would and print the identity it grants ("-" = stdin).

    Exits 1 with the reason when the token is not valid.
    """
    text = _token_arg(token_text)
    try:
        if secret_env is not None and public_key is None:
            key = VerificationKey(kid=kid, algorithm="HS256", secret_env=secret_env)
        elif public_key is not None and secret_env is None:
            alg = _algorithm(algorithm) if algorithm else _guess_algorithm(public_key, text)
            key = VerificationKey(kid=kid, algorithm=alg, public_key_file=public_key)
        else:
            raise click.UsageError(
                "give exactly one of --public-key FILE or --secret-env VAR (HS256)"
            )
        verifier = TokenVerifier([key], leeway=leeway, audience=audience)
        identity = verifier.verify(text)
    except (ValueError, AuthConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    except MemError as exc:
        raise click.ClickException(f"token rejected: {exc.message}") from exc
    click.echo(
        json.dumps(
            {
                "verified": True,
                "tenant": identity.tenant,
                "agent": identity.agent,
                "namespaces": list(identity.namespaces),
                "ops": list(identity.ops),
                **identity.extra,
            },
            indent=2,
        )
    )


def _guess_algorithm(public_key: Path, text: str) -> Algorithm:
    """PASETO tokens use paseto-v4-public; for JWTs the key type decides (never the token)."""
    if text.startswith(PASETO_PREFIX):
        return "paseto-v4-public"
    try:
        data = public_key.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {public_key}: {exc.strerror}") from exc
    for candidate in ("EdDSA", "RS256"):
        alg = _algorithm(candidate)
        try:
            public_material(kid="probe", algorithm=alg, data=data, origin=str(public_key))
        except ValueError:
            continue
        return alg
    # Let the real load report what is wrong with the file.
    public_material(kid="probe", algorithm="EdDSA", data=data, origin=str(public_key))
    return "EdDSA"


if __name__ == "__main__":
    main()
