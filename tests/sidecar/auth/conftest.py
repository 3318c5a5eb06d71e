"""Fixtures for the token tests: real key pairs written to a temp dir, the HS256 secret env."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memsidecar.sidecar.auth.keys import Algorithm, load_private_key, write_key_pair
from memsidecar.sidecar.auth.settings import VerificationKey
from tests.sidecar.auth.helpers import HS_SECRET, HS_SECRET_ENV, AuthKey, KeyFactory


@pytest.fixture
def hs_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(HS_SECRET_ENV, HS_SECRET)
    return HS_SECRET


@pytest.fixture
def make_key(tmp_path: Path, hs_secret: str) -> KeyFactory:
    """make_key(kid, algorithm) -> a fresh key pair on disk and its VerificationKey."""

    def make(kid: str, algorithm: Algorithm = "paseto-v4-public", **extra: Any) -> AuthKey:
        if algorithm == "HS256":
            return AuthKey(
                kid,
                algorithm,
                hs_secret.encode(),
                VerificationKey(kid=kid, algorithm="HS256", secret_env=HS_SECRET_ENV, **extra),
                None,
            )
        directory = tmp_path / f"keys-{kid}"
        paths = write_key_pair(directory, kid, algorithm, rsa_bits=2048)
        return AuthKey(
            kid,
            algorithm,
            load_private_key(paths.private),
            VerificationKey(kid=kid, algorithm=algorithm, public_key_file=paths.public, **extra),
            paths.public,
        )

    return make
