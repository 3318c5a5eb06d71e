"""Key pairs for capability tokens: generate, write as PEM, load for signing or verifying.

Ed25519 keys sign PASETO v4.public tokens and EdDSA JWTs; RSA keys sign RS256
JWTs; HS256 uses a shared secret that the sidecar reads from an env var.
Private keys are written unencrypted with mode 0600 and should live only
where tokens are issued, never on sidecars.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

if TYPE_CHECKING:
    from pyseto import KeyInterface

Algorithm = Literal["paseto-v4-public", "EdDSA", "RS256", "HS256"]
ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)
# Algorithms with a key pair (HS256 is a shared secret).
ASYMMETRIC: tuple[Algorithm, ...] = ("paseto-v4-public", "EdDSA", "RS256")

PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey

KID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MIN_RSA_BITS = 2048
DEFAULT_RSA_BITS = 3072
MIN_HMAC_SECRET_BYTES = 32


class AuthConfigError(Exception):
    """A verification key cannot be loaded; the message names the key and the field."""


def validate_kid(kid: str) -> str:
    """Key ids name files (K.private.pem) and appear in tokens, so they stay simple."""
    if not KID_RE.fullmatch(kid):
        raise ValueError(
            f"key id {kid!r} is invalid: use 1-128 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. 'tokens-2025-06')"
        )
    return kid


def _check_rsa_size(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> None:
    if key.key_size < MIN_RSA_BITS:
        raise ValueError(
            f"RSA key has {key.key_size} bits; RS256 needs at least {MIN_RSA_BITS} "
            "(memctl keys generate --algorithm RS256 makes 3072)"
        )


def generate_private_key(algorithm: Algorithm, rsa_bits: int = DEFAULT_RSA_BITS) -> PrivateKey:
    """A fresh private key for `algorithm` (Ed25519 for PASETO/EdDSA, RSA for RS256)."""
    if algorithm in ("paseto-v4-public", "EdDSA"):
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "RS256":
        if rsa_bits not in (2048, 3072, 4096):
            raise ValueError(f"RSA key size {rsa_bits} is not offered; use 2048, 3072 or 4096")
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    raise ValueError(
        f"{algorithm} has no key pair; HS256 uses a shared secret of at least "
        f"{MIN_HMAC_SECRET_BYTES} bytes (e.g. `openssl rand -base64 48`) given through an env var"
    )


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: PrivateKey | PublicKey) -> bytes:
    public = (
        key.public_key() if isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) else key
    )
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class KeyPairFiles:
    private: Path
    public: Path


def key_pair_paths(out_dir: Path, kid: str) -> KeyPairFiles:
    validate_kid(kid)
    return KeyPairFiles(out_dir / f"{kid}.private.pem", out_dir / f"{kid}.public.pem")


def write_key_pair(
    out_dir: Path,
    kid: str,
    algorithm: Algorithm = "paseto-v4-public",
    rsa_bits: int = DEFAULT_RSA_BITS,
    overwrite: bool = False,
) -> KeyPairFiles:
    """Generate a key pair and write OUT/KID.private.pem (0600) and OUT/KID.public.pem (0644).

    Refuses to replace existing files unless `overwrite`, so a rotation script
    cannot silently destroy the key that signed the tokens in circulation.
    """
    paths = key_pair_paths(out_dir, kid)
    key = generate_private_key(algorithm, rsa_bits)
    if not overwrite:
        for path in (paths.private, paths.public):
            if path.exists():
                raise FileExistsError(
                    f"{path} already exists; pick a new --kid for a rotation "
                    "(or pass --force to replace it)"
                )
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(paths.private, private_key_pem(key), 0o600, overwrite)
    _write(paths.public, public_key_pem(key), 0o644, overwrite)
    return paths


def _write(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    # Create with the final mode so the private key is never readable by others, not even briefly.
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def load_private_key(path: Path) -> PrivateKey:
    """Read a PEM private key written by `memctl keys generate` (or openssl, unencrypted PKCS#8)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read private key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise ValueError(
            f"{path} is an encrypted private key; memctl needs an unencrypted PKCS#8 PEM "
            "(openssl pkcs8 -topk8 -nocrypt -in ENCRYPTED.pem -out KEY.pem)"
        ) from exc
    except ValueError as exc:
        raise ValueError(
            f"{path} is not a PEM private key (expected '-----BEGIN PRIVATE KEY-----')"
        ) from exc
    if isinstance(key, rsa.RSAPrivateKey):
        _check_rsa_size(key)
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise ValueError(
        f"{path} holds a {type(key).__name__}; tokens are signed with Ed25519 or RSA keys"
    )


def _parse_public_pem(data: bytes, origin: str) -> PublicKey:
    text = data.strip()
    if b"PRIVATE KEY" in text:
        raise ValueError(
            f"{origin} is a private key; give the sidecar only the public key "
            "(memctl keys generate writes it as KID.public.pem)"
        )
    try:
        key = serialization.load_pem_public_key(text)
    except ValueError as exc:
        raise ValueError(
            f"{origin} is not a PEM public key (expected '-----BEGIN PUBLIC KEY-----')"
        ) from exc
    if isinstance(key, rsa.RSAPublicKey):
        _check_rsa_size(key)
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise ValueError(f"{origin} holds a {type(key).__name__}; use an Ed25519 or RSA public key")


@dataclass(frozen=True)
class KeyMaterial:
    """A loaded verification key: what TokenVerifier checks signatures with."""

    kid: str
    algorithm: Algorithm
    # PASETO: a pyseto v4.public key. EdDSA/RS256: the public key. HS256: the secret.
    key: KeyInterface | PublicKey | bytes = field(repr=False)
    # Tenants this key may sign for; None = any.
    tenants: frozenset[str] | None = None


def public_material(kid: str, algorithm: Algorithm, data: bytes, origin: str) -> KeyMaterial:
    """Verification material from PEM (any asymmetric algorithm) or PASERK k4.public (PASETO)."""
    import pyseto  # only a sidecar with token keys pays for it

    text = data.strip()
    if algorithm == "paseto-v4-public":
        if text.startswith(b"k4.public."):
            try:
                return KeyMaterial(kid, algorithm, pyseto.Key.from_paserk(text.decode()))
            except Exception as exc:
                raise ValueError(f"{origin} is not a valid PASERK k4.public key: {exc}") from exc
        if text.startswith(b"k"):
            raise ValueError(
                f"{origin} looks like a PASERK but not a k4.public one; only v4.public keys verify "
                "PASETO tokens here"
            )
    public = _parse_public_pem(text, origin)
    if algorithm in ("paseto-v4-public", "EdDSA"):
        if not isinstance(public, ed25519.Ed25519PublicKey):
            raise ValueError(f"{origin} is an RSA key but {algorithm} needs an Ed25519 key")
        if algorithm == "paseto-v4-public":
            return KeyMaterial(kid, algorithm, pyseto.Key.new(4, "public", public_key_pem(public)))
        return KeyMaterial(kid, algorithm, public)
    if algorithm == "RS256":
        if not isinstance(public, rsa.RSAPublicKey):
            raise ValueError(f"{origin} is an Ed25519 key but RS256 needs an RSA key")
        return KeyMaterial(kid, algorithm, public)
    raise ValueError(f"{algorithm} keys are secrets, not public keys; use secret_env")


def secret_material(kid: str, env_var: str, environ: dict[str, str] | None = None) -> KeyMaterial:
    """An HS256 key from the secret in `env_var` (never from the config file itself)."""
    env = os.environ if environ is None else environ
    value = env.get(env_var)
    if not value:
        raise ValueError(
            f"env var {env_var} is not set or empty; it must hold the HS256 secret "
            f"(at least {MIN_HMAC_SECRET_BYTES} bytes)"
        )
    secret = value.encode()
    if len(secret) < MIN_HMAC_SECRET_BYTES:
        raise ValueError(
            f"the HS256 secret in {env_var} has {len(secret)} bytes; use at least "
            f"{MIN_HMAC_SECRET_BYTES} (e.g. `openssl rand -base64 48`)"
        )
    return KeyMaterial(kid, "HS256", secret)


def signing_algorithm_for(key: PrivateKey | bytes, requested: Algorithm | None) -> Algorithm:
    """The algorithm a signing key is used with; reject a mismatch instead of guessing."""
    if isinstance(key, bytes):
        natural: tuple[Algorithm, ...] = ("HS256",)
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        natural = ("paseto-v4-public", "EdDSA")
    else:
        natural = ("RS256",)
    if requested is None:
        return natural[0]
    if requested not in natural:
        kind = (
            "a secret" if isinstance(key, bytes) else type(key).__name__.replace("PrivateKey", "")
        )
        raise ValueError(
            f"algorithm {requested} cannot be used with {kind} key; this key signs "
            f"{' or '.join(natural)}"
        )
    return requested
