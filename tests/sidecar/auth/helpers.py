"""Helpers for the token tests: keys that can also sign what a hostile issuer would."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pyseto

from memsidecar.sidecar.auth.keys import (
    Algorithm,
    PrivateKey,
    private_key_pem,
)
from memsidecar.sidecar.auth.settings import VerificationKey
from memsidecar.sidecar.auth.tokens import TokenVerifier, issue_token
from tests.support import ManualClock

HS_SECRET_ENV = "MEMSIDECAR_TEST_HS256_SECRET"
HS_SECRET = "s3cret-for-tests-only-0123456789abcdef"
ALL_ALGORITHMS: tuple[Algorithm, ...] = ("paseto-v4-public", "EdDSA", "RS256", "HS256")


@dataclass
class AuthKey:
    kid: str
    algorithm: Algorithm
    # Private key, or the HS256 secret.
    signer: PrivateKey | bytes
    verification: VerificationKey
    public_file: Path | None

    def issue(self, clock: ManualClock, **overrides: Any) -> str:
        args: dict[str, Any] = {
            "kid": self.kid,
            "tenant": "acme",
            "agent": "planner-1",
            "namespaces": ["kv/scratch*"],
            "ops": ["kv.put", "kv.get"],
            "ttl": 3600,
            "algorithm": self.algorithm,
            "clock": clock,
        }
        args.update(overrides)
        return issue_token(self.signer, **args)

    def sign_claims(self, claims: dict[str, Any], header_kid: str | None = None) -> str:
        """Sign arbitrary claims (no validation) with this key, like a buggy or hostile issuer."""
        kid = self.kid if header_kid is None else header_kid
        if self.algorithm == "paseto-v4-public":
            assert not isinstance(self.signer, bytes)
            key = pyseto.Key.new(4, "public", private_key_pem(self.signer))
            return pyseto.encode(
                key, json.dumps(claims).encode(), footer=json.dumps({"kid": kid}).encode()
            ).decode()
        return jwt.encode(claims, self.signer, algorithm=self.algorithm, headers={"kid": kid})


KeyFactory = Callable[..., AuthKey]


def verifier_for(
    *keys: AuthKey, clock: ManualClock, leeway: float = 30.0, audience: str | None = None
) -> TokenVerifier:
    return TokenVerifier(
        [k.verification for k in keys], leeway=leeway, clock=clock, audience=audience
    )
