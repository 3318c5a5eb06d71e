"""The `auth` section of the sidecar config: who needs a token, and the keys that verify them.

```yaml
auth:
  socket: ambient          # or "token": socket callers must present a token too
  tcp: token               # always: TCP callers must present a token
  leeway_seconds: 30       # clock skew tolerated on exp / nbf
  audience: null           # if set, tokens must carry this `aud`
  keys:                    # several at once, for rotation; tokens name theirs by kid
    - kid: tokens-2025-06
      algorithm: paseto-v4-public
      public_key_file: /etc/memsidecar/keys/tokens-2025-06.public.pem
```
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from memsidecar.sidecar.auth.keys import (
    Algorithm,
    AuthConfigError,
    KeyMaterial,
    public_material,
    secret_material,
    validate_kid,
)
from memsidecar.sidecar.auth.scope import validate_name
from memsidecar.sidecar.errors import MemError
from memsidecar.sidecar.models import StrictModel
from memsidecar.sidecar.units import ByteSize

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _tenant_name(value: str) -> str:
    try:
        return validate_name(value, "tenant")
    except MemError as exc:
        raise ValueError(exc.message) from None


class VerificationKey(StrictModel):
    """One key the sidecar accepts tokens from, named by the `kid` tokens carry."""

    kid: str
    algorithm: Algorithm = "paseto-v4-public"
    # Asymmetric algorithms: the public key as a PEM file, or inline (PEM, or PASERK
    # "k4.public.…" for paseto-v4-public). Exactly one of the two.
    public_key_file: Path | None = None
    public_key: str | None = None
    # HS256: the name of the env var holding the shared secret (never the secret itself).
    secret_env: str | None = None
    # Tenants this key may sign tokens for; unset = any tenant.
    tenants: list[str] | None = None

    @field_validator("kid")
    @classmethod
    def _kid(cls, value: str) -> str:
        return validate_kid(value)

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME_RE.fullmatch(value):
            raise ValueError(
                f"secret_env {value!r} must be an env var name, e.g. MEMSIDECAR_HS256_SECRET"
            )
        return value

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError(
                "tenants is empty, so the key could sign for no one; omit it to allow any"
            )
        return [_tenant_name(t) for t in value]

    @model_validator(mode="after")
    def _one_source(self) -> VerificationKey:
        where = f"key {self.kid!r}"
        if self.algorithm == "HS256":
            if self.secret_env is None:
                raise ValueError(f"{where}: HS256 needs secret_env, the env var holding the secret")
            if self.public_key_file is not None or self.public_key is not None:
                raise ValueError(
                    f"{where}: HS256 takes secret_env only; public_key_file/public_key are for "
                    "paseto-v4-public, EdDSA and RS256"
                )
            return self
        if self.secret_env is not None:
            raise ValueError(
                f"{where}: secret_env is only for HS256; {self.algorithm} needs a public key"
            )
        if (self.public_key_file is None) == (self.public_key is None):
            raise ValueError(
                f"{where}: set exactly one of public_key_file (a PEM file) or public_key "
                "(inline PEM"
                + (" or PASERK k4.public" if self.algorithm == "paseto-v4-public" else "")
                + ")"
            )
        return self

    def load(self, environ: dict[str, str] | None = None) -> KeyMaterial:
        """Read the key (file, inline value or env var); ValueError says what is wrong."""
        if self.algorithm == "HS256" and self.secret_env is not None:
            material = secret_material(self.kid, self.secret_env, environ)
        elif self.public_key_file is not None:
            try:
                data = self.public_key_file.read_bytes()
            except OSError as exc:
                raise ValueError(
                    f"cannot read public_key_file {self.public_key_file}: {exc.strerror}"
                ) from exc
            origin = f"public_key_file {self.public_key_file}"
            material = public_material(self.kid, self.algorithm, data, origin)
        elif self.public_key is not None:
            data = self.public_key.encode()
            material = public_material(self.kid, self.algorithm, data, "public_key")
        else:
            raise ValueError("no key configured: set public_key_file, public_key or secret_env")
        tenants = frozenset(self.tenants) if self.tenants is not None else None
        return KeyMaterial(material.kid, material.algorithm, material.key, tenants)


class AuthSettings(StrictModel):
    """Who must present a capability token, and the keys that verify tokens."""

    # Socket callers: "ambient" = granted the pod's identity unless they send a token;
    # "token" = must send a token.
    socket: Literal["ambient", "token"] = "ambient"
    # TCP callers always need a token.
    tcp: Literal["token"] = "token"
    keys: list[VerificationKey] = Field(default_factory=list)
    # Clock skew tolerated when checking exp and nbf.
    leeway_seconds: float = Field(default=30.0, ge=0, le=3600)
    # If set, tokens must carry this audience (`aud`).
    audience: str | None = None
    # Longer capability tokens are rejected before any parsing.
    max_token_bytes: ByteSize = Field(default=8192, ge=256, le=65536)

    @field_validator("keys")
    @classmethod
    def _unique_kids(cls, value: list[VerificationKey]) -> list[VerificationKey]:
        seen: set[str] = set()
        for key in value:
            if key.kid in seen:
                raise ValueError(
                    f"key id {key.kid!r} appears twice; every key needs its own kid so tokens "
                    "can name the key that signed them"
                )
            seen.add(key.kid)
        return value

    @field_validator("audience")
    @classmethod
    def _audience(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("audience is empty; omit it or name the audience, e.g. 'memsidecar'")
        return value

    @model_validator(mode="after")
    def _token_mode_needs_keys(self) -> AuthSettings:
        if self.socket == "token" and not self.keys:
            raise ValueError(
                "auth.socket is 'token' but auth.keys is empty, so no caller could ever be "
                "admitted; add a verification key (memctl keys generate) or use socket: ambient"
            )
        return self

    def load_keys(self, environ: dict[str, str] | None = None) -> list[KeyMaterial]:
        """Every configured key, loaded; AuthConfigError names each one that cannot be."""
        loaded: list[KeyMaterial] = []
        problems: list[str] = []
        for i, key in enumerate(self.keys):
            try:
                loaded.append(key.load(environ))
            except ValueError as exc:
                problems.append(f"  auth.keys[{i}] (kid {key.kid!r}): {exc}")
        if problems:
            raise AuthConfigError(
                "cannot load the token verification keys:\n" + "\n".join(problems)
            )
        return loaded
