"""Capability tokens: issue them (PASETO v4.public by default, JWT optional) and verify them.

Claims (both formats): `tenant`, `agent`, `namespaces` (globs, see scope.py),
`ops`, `exp`, `nbf`, `iat`, `jti`, and `aud` when an audience is used. PASETO
times are ISO 8601 strings (the PASETO convention), JWT times are NumericDate
seconds. The key id travels in the PASETO footer as JSON `{"kid": ...}` and in
the JWT header as `kid`; the verifier picks the key by kid and accepts only
that key's declared algorithm, so one key can never be used with another
algorithm (no "alg confusion", no `alg: none`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
import pyseto
from pyseto import KeyInterface

from memsidecar.defaults import CAPABILITY_HEADER
from memsidecar.sidecar.auth.keys import (
    MIN_HMAC_SECRET_BYTES,
    Algorithm,
    AuthConfigError,
    KeyMaterial,
    PrivateKey,
    private_key_pem,
    signing_algorithm_for,
    validate_kid,
)
from memsidecar.sidecar.auth.scope import (
    validate_for_issue,
    validate_name,
    validate_namespace_glob,
    validate_op_pattern,
)
from memsidecar.sidecar.auth.settings import AuthSettings, VerificationKey
from memsidecar.sidecar.clock import Clock, system_clock
from memsidecar.sidecar.errors import MemError, Unauthenticated
from memsidecar.sidecar.identity import Identity

TokenFormat = Literal["paseto", "jwt"]

PASETO_PREFIX = "v4.public."
DEFAULT_MAX_TOKEN_BYTES = 8192
_AGENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,252}$")
_JTI_MAX = 128
_ED25519_SIGNATURE_BYTES = 64
_HOW_TO_SEND = f"send `{CAPABILITY_HEADER}: Bearer <token>` with a token from `memctl token issue`"


def validate_agent(agent: str) -> str:
    if not _AGENT_RE.fullmatch(agent):
        raise ValueError(
            f"agent {agent!r} is invalid: use 1-253 characters of letters, digits and "
            "'. _ : @ / + = -', starting with a letter or digit"
        )
    return agent


def _validate_tenant(tenant: str) -> str:
    try:
        return validate_name(tenant, "tenant")
    except MemError as exc:
        raise ValueError(exc.message) from None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def issue_token(
    key: PrivateKey | bytes,
    *,
    kid: str,
    tenant: str,
    agent: str,
    namespaces: Sequence[str],
    ops: Sequence[str],
    ttl: timedelta | float,
    algorithm: Algorithm | None = None,
    not_before: datetime | None = None,
    audience: str | None = None,
    clock: Clock = system_clock,
) -> str:
    """Mint a capability token signed by `key`.

    `algorithm` defaults to the key's natural one: PASETO v4.public for an
    Ed25519 key, RS256 for RSA, HS256 for a secret (bytes); pass "EdDSA" for a
    JWT signed with Ed25519. The token is valid from `not_before` (default:
    now) for `ttl`. Raises ValueError naming the bad argument; unknown blocks
    or methods in `namespaces`/`ops` are rejected so a typo cannot mint a
    token that silently grants nothing.
    """
    alg = signing_algorithm_for(key, algorithm)
    validate_kid(kid)
    _validate_tenant(tenant)
    validate_agent(agent)
    validate_for_issue(list(namespaces), list(ops))
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"ttl must be positive (got {seconds} seconds), e.g. 1h")
    if isinstance(key, bytes) and len(key) < MIN_HMAC_SECRET_BYTES:
        raise ValueError(
            f"an HS256 secret needs at least {MIN_HMAC_SECRET_BYTES} bytes (got {len(key)})"
        )
    if audience is not None and not audience.strip():
        raise ValueError("audience is empty; omit it or name the audience")
    now = math.floor(clock())
    if not_before is not None:
        if not_before.tzinfo is None:
            raise ValueError("not_before needs a time zone, e.g. 2030-01-01T00:00:00+00:00")
        nbf = math.floor(not_before.timestamp())
    else:
        nbf = now
    exp = max(now, nbf) + math.ceil(seconds)
    claims: dict[str, Any] = {
        "tenant": tenant,
        "agent": agent,
        "namespaces": list(namespaces),
        "ops": list(ops),
        "jti": str(uuid.uuid4()),
    }
    if audience is not None:
        claims["aud"] = audience
    if alg == "paseto-v4-public":
        claims.update(iat=_iso(now), nbf=_iso(nbf), exp=_iso(exp))
        signer = pyseto.Key.new(4, "public", _pem(key))
        token = pyseto.encode(
            signer,
            json.dumps(claims, separators=(",", ":")).encode(),
            footer=json.dumps({"kid": kid}, separators=(",", ":")).encode(),
        )
        return token.decode()
    claims.update(iat=now, nbf=nbf, exp=exp)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def _pem(key: PrivateKey | bytes) -> bytes:
    if isinstance(key, bytes):
        raise ValueError("PASETO v4.public needs an Ed25519 private key, not a secret")
    return private_key_pem(key)


@dataclass(frozen=True)
class UnverifiedToken:
    """What a token says about itself, NOT checked against any key (`memctl token inspect`)."""

    format: TokenFormat
    # PASETO footer or JWT header.
    header: dict[str, Any]
    claims: dict[str, Any]


def inspect_token(token: str) -> UnverifiedToken:
    """Decode header/footer and claims without verifying anything; ValueError if garbled."""
    token = token.strip()
    if token.startswith(PASETO_PREFIX):
        parts = token.split(".")
        if len(parts) not in (3, 4):
            raise ValueError("malformed PASETO token: expected v4.public.<payload>[.<footer>]")
        try:
            body = _b64url_decode(parts[2])
            footer = json.loads(_b64url_decode(parts[3])) if len(parts) == 4 else {}
            claims = json.loads(body[:-_ED25519_SIGNATURE_BYTES])
        except (binascii.Error, ValueError) as exc:
            raise ValueError(
                "malformed PASETO token: payload or footer is not base64url JSON"
            ) from exc
        if not isinstance(claims, dict) or not isinstance(footer, dict):
            raise ValueError("malformed PASETO token: payload and footer must be JSON objects")
        return UnverifiedToken("paseto", footer, claims)
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise ValueError("not a PASETO v4.public token or a JWT") from exc
    return UnverifiedToken("jwt", header, claims)


class TokenVerifier:
    """Verifies capability tokens against several keys at once (rotation), by kid.

    Every failure raises Unauthenticated with a message saying what is wrong;
    the token itself is never echoed.
    """

    def __init__(
        self,
        keys: Sequence[VerificationKey],
        leeway: float = 30.0,
        clock: Clock = system_clock,
        audience: str | None = None,
        max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        settings = AuthSettings(keys=list(keys))
        env = dict(environ) if environ is not None else None
        self._keys: dict[str, KeyMaterial] = {m.kid: m for m in settings.load_keys(env)}
        self.leeway = leeway
        self.clock = clock
        self.audience = audience
        self.max_token_bytes = max_token_bytes

    @classmethod
    def from_settings(
        cls,
        settings: AuthSettings,
        clock: Clock = system_clock,
        environ: Mapping[str, str] | None = None,
    ) -> TokenVerifier:
        """The verifier for the `auth` config section; AuthConfigError if a key cannot be loaded."""
        return cls(
            settings.keys,
            leeway=settings.leeway_seconds,
            clock=clock,
            audience=settings.audience,
            max_token_bytes=settings.max_token_bytes,
            environ=environ,
        )

    @property
    def kids(self) -> list[str]:
        return sorted(self._keys)

    def _key(self, kid: Any) -> KeyMaterial:
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated(
                "the capability token does not name its key (no kid); issue it with "
                "`memctl token issue --kid <key id>`"
            )
        if not self._keys:
            raise Unauthenticated(
                "this sidecar has no token verification keys configured (auth.keys), so it "
                "cannot accept any token"
            )
        material = self._keys.get(kid)
        if material is None:
            shown = kid if len(kid) <= 128 else kid[:128] + "..."
            raise Unauthenticated(
                f"unknown key id {shown!r} (rotated out?); this sidecar accepts tokens signed by "
                f"{', '.join(self.kids)}. Get a token signed with a current key"
            )
        return material

    def verify(self, token: str) -> Identity:
        """The identity a valid token grants, or Unauthenticated saying why it is not valid."""
        token = token.strip()
        if not token:
            raise Unauthenticated(f"the capability token is empty; {_HOW_TO_SEND}")
        if len(token.encode()) > self.max_token_bytes:
            raise Unauthenticated(
                f"the capability token is {len(token.encode())} bytes, over the limit of "
                f"{self.max_token_bytes} (auth.max_token_bytes); issue one with fewer globs/ops"
            )
        if token.startswith(PASETO_PREFIX):
            claims, material = self._verify_paseto(token)
            return self._identity(claims, material, "paseto")
        if re.match(r"^v\d+\.(local|public)\.", token):
            kind = token.split(".", 2)[:2]
            raise Unauthenticated(
                f"PASETO {kind[0]}.{kind[1]} tokens are not accepted; only v4.public ones "
                "(memctl token issue makes them)"
            )
        if token.count(".") == 2:
            claims, material = self._verify_jwt(token)
            return self._identity(claims, material, "jwt")
        raise Unauthenticated(
            "the capability token is neither a PASETO v4.public token nor a JWT; " + _HOW_TO_SEND
        )

    def _verify_paseto(self, token: str) -> tuple[Any, KeyMaterial]:
        parts = token.split(".")
        if len(parts) == 3:
            raise Unauthenticated(
                "the PASETO token has no footer naming its key (kid); issue it with "
                "`memctl token issue --kid <key id>`"
            )
        if len(parts) != 4:
            raise Unauthenticated(f"malformed PASETO token (wrong number of parts); {_HOW_TO_SEND}")
        try:
            footer = json.loads(_b64url_decode(parts[3]))
        except (binascii.Error, ValueError):
            raise Unauthenticated(
                'malformed PASETO footer: expected base64url JSON like {"kid": "..."}'
            ) from None
        if not isinstance(footer, dict):
            raise Unauthenticated('malformed PASETO footer: expected a JSON object {"kid": "..."}')
        material = self._key(footer.get("kid"))
        if material.algorithm != "paseto-v4-public" or not isinstance(material.key, KeyInterface):
            raise Unauthenticated(
                f"key {material.kid!r} is configured for {material.algorithm}, not PASETO "
                "v4.public, so it cannot verify this token; a key verifies only its own algorithm"
            )
        try:
            decoded = pyseto.decode(material.key, token)
        except pyseto.VerifyError:
            raise Unauthenticated(
                f"bad signature: the token was not signed by key {material.kid!r} or was altered"
            ) from None
        except (pyseto.PysetoError, ValueError):
            raise Unauthenticated(f"malformed PASETO token; {_HOW_TO_SEND}") from None
        payload = decoded.payload  # bytes: decoded without a deserializer
        try:
            if not isinstance(payload, bytes):
                raise TypeError("payload was already deserialized")
            claims = json.loads(payload)
        except (TypeError, ValueError):
            raise Unauthenticated("the PASETO token's payload is not JSON") from None
        return claims, material

    def _verify_jwt(self, token: str) -> tuple[Any, KeyMaterial]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated(f"malformed JWT header; {_HOW_TO_SEND}") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise Unauthenticated("malformed JWT header: no alg")
        if alg.lower() == "none":
            raise Unauthenticated("unsigned tokens (alg none) are never accepted")
        material = self._key(header.get("kid"))
        if material.algorithm == "paseto-v4-public":
            raise Unauthenticated(
                f"key {material.kid!r} is a PASETO v4.public key; it does not verify JWTs"
            )
        if alg != material.algorithm:
            raise Unauthenticated(
                f"token alg {alg[:16]!r} does not match key {material.kid!r}, which is "
                f"{material.algorithm}; a key verifies only its own algorithm"
            )
        if isinstance(material.key, KeyInterface):
            raise Unauthenticated(f"key {material.kid!r} is not a JWT key")
        try:
            payload = jwt.PyJWS().decode(token, key=material.key, algorithms=[material.algorithm])
        except jwt.InvalidSignatureError:
            raise Unauthenticated(
                f"bad signature: the token was not signed by key {material.kid!r} or was altered"
            ) from None
        except jwt.PyJWTError:
            raise Unauthenticated(f"malformed JWT; {_HOW_TO_SEND}") from None
        try:
            claims = json.loads(payload)
        except ValueError:
            raise Unauthenticated("the JWT payload is not JSON") from None
        return claims, material

    def _time(self, claims: dict[str, Any], name: str, fmt: TokenFormat) -> float | None:
        value = claims.get(name)
        if value is None:
            return None
        if fmt == "jwt":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise Unauthenticated(f"claim {name} must be a NumericDate (seconds since epoch)")
            if not math.isfinite(value):
                raise Unauthenticated(f"claim {name} must be a finite NumericDate")
            return float(value)
        if not isinstance(value, str):
            raise Unauthenticated(
                f"claim {name} must be an ISO 8601 time, e.g. 2030-01-01T00:00:00Z"
            )
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise Unauthenticated(f"claim {name} is not an ISO 8601 time") from None
        if parsed.tzinfo is None:
            raise Unauthenticated(f"claim {name} must carry a time zone offset")
        return parsed.timestamp()

    def _identity(self, claims: Any, material: KeyMaterial, fmt: TokenFormat) -> Identity:
        if not isinstance(claims, dict):
            raise Unauthenticated("the token's claims must be a JSON object")
        for name in ("tenant", "agent", "namespaces", "ops", "exp", "jti"):
            if name not in claims:
                raise Unauthenticated(
                    f"the token lacks the required claim {name!r}; issue it with memctl token issue"
                )
        tenant, agent, jti = claims["tenant"], claims["agent"], claims["jti"]
        for name, value in (("tenant", tenant), ("agent", agent), ("jti", jti)):
            if not isinstance(value, str):
                raise Unauthenticated(f"claim {name} must be a string")
        try:
            _validate_tenant(tenant)
            validate_agent(agent)
        except ValueError as exc:
            raise Unauthenticated(f"the token's {exc}") from None
        if not jti or len(jti) > _JTI_MAX:
            raise Unauthenticated(f"claim jti must be 1-{_JTI_MAX} characters")
        if material.tenants is not None and tenant not in material.tenants:
            raise Unauthenticated(
                f"key {material.kid!r} may only sign tokens for tenants "
                f"{', '.join(sorted(material.tenants))}, not {tenant!r}"
            )
        namespaces = self._string_list(claims, "namespaces", validate_namespace_glob)
        ops = self._string_list(claims, "ops", validate_op_pattern)
        now = self.clock()
        exp = self._time(claims, "exp", fmt)
        nbf = self._time(claims, "nbf", fmt)
        self._time(claims, "iat", fmt)
        if exp is None:
            raise Unauthenticated("the token lacks the required claim 'exp'")
        if now > exp + self.leeway:
            raise Unauthenticated(
                f"the token expired at {_iso(exp)} (now {_iso(now)}, leeway {self.leeway:g}s); "
                "get a fresh one"
            )
        if nbf is not None and now < nbf - self.leeway:
            raise Unauthenticated(
                f"the token is not valid before {_iso(nbf)} (now {_iso(now)}, leeway "
                f"{self.leeway:g}s)"
            )
        if self.audience is not None:
            aud = claims.get("aud")
            audiences = aud if isinstance(aud, list) else [aud]
            if self.audience not in audiences:
                raise Unauthenticated(
                    f"the token is not for this audience: it must carry aud {self.audience!r} "
                    "(memctl token issue --audience)"
                )
        return Identity(
            tenant=tenant,
            agent=agent,
            namespaces=tuple(namespaces),
            ops=tuple(ops),
            source="token",
            extra={"jti": jti, "kid": material.kid, "format": fmt},
        )

    @staticmethod
    def _string_list(claims: dict[str, Any], name: str, check: Callable[[str], str]) -> list[str]:
        value = claims[name]
        if not isinstance(value, list) or not value:
            raise Unauthenticated(f"claim {name} must be a non-empty list of strings")
        for item in value:
            if not isinstance(item, str):
                raise Unauthenticated(f"claim {name} must be a list of strings")
            try:
                check(item)
            except ValueError as exc:
                raise Unauthenticated(f"the token's {name} claim is invalid: {exc}") from None
        return list(value)


__all__ = [
    "AuthConfigError",
    "TokenFormat",
    "TokenVerifier",
    "UnverifiedToken",
    "inspect_token",
    "issue_token",
]
