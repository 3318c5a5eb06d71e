"""The `auth` config section: validation names the field, key loading names the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from memsidecar.sidecar.auth.keys import AuthConfigError, write_key_pair
from memsidecar.sidecar.auth.settings import AuthSettings, VerificationKey
from memsidecar.sidecar.auth.tokens import TokenVerifier
from tests.sidecar.auth.helpers import HS_SECRET_ENV


def _error(data: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        AuthSettings.model_validate(data)
    err = info.value.errors()[0]
    return ".".join(str(p) for p in err["loc"]), err["msg"]


def test_defaults() -> None:
    settings = AuthSettings()
    assert (settings.socket, settings.tcp, settings.keys) == ("ambient", "token", [])
    assert settings.leeway_seconds == 30
    assert settings.audience is None
    assert settings.max_token_bytes == 8192


def test_key_defaults_to_paseto() -> None:
    key = VerificationKey.model_validate({"kid": "k1", "public_key_file": "/k.pem"})
    assert key.algorithm == "paseto-v4-public"


@pytest.mark.parametrize(
    ("data", "where", "says"),
    [
        ({"tcp": "ambient"}, "tcp", "'token'"),
        ({"socket": "open"}, "socket", "'ambient' or 'token'"),
        ({"socket": "token"}, "", "auth.keys is empty"),
        ({"leeway_seconds": -1}, "leeway_seconds", "greater than or equal to 0"),
        ({"max_token_bytes": "1MiB"}, "max_token_bytes", "less than or equal to 65536"),
        ({"audience": "  "}, "audience", "audience is empty"),
        ({"tokens": []}, "tokens", "Extra inputs are not permitted"),
        (
            {"keys": [{"kid": "a", "public_key": "x"}, {"kid": "a", "public_key": "y"}]},
            "keys",
            "key id 'a' appears twice",
        ),
        ({"keys": [{"kid": "a/b", "public_key": "x"}]}, "keys.0.kid", "key id 'a/b' is invalid"),
        ({"keys": [{"kid": "a", "algorithm": "HS512"}]}, "keys.0.algorithm", "HS256"),
        ({"keys": [{"kid": "a"}]}, "keys.0", "set exactly one of public_key_file"),
        (
            {"keys": [{"kid": "a", "public_key": "x", "public_key_file": "/x"}]},
            "keys.0",
            "set exactly one of public_key_file",
        ),
        ({"keys": [{"kid": "a", "algorithm": "HS256"}]}, "keys.0", "HS256 needs secret_env"),
        (
            {"keys": [{"kid": "a", "algorithm": "HS256", "secret_env": "S", "public_key": "x"}]},
            "keys.0",
            "HS256 takes secret_env only",
        ),
        (
            {"keys": [{"kid": "a", "algorithm": "EdDSA", "secret_env": "S"}]},
            "keys.0",
            "secret_env is only for HS256",
        ),
        (
            {"keys": [{"kid": "a", "algorithm": "HS256", "secret_env": "MY-SECRET"}]},
            "keys.0.secret_env",
            "must be an env var name",
        ),
        ({"keys": [{"kid": "a", "public_key": "x", "tenants": []}]}, "keys.0.tenants", "omit it"),
        (
            {"keys": [{"kid": "a", "public_key": "x", "tenants": ["ok", "Not OK"]}]},
            "keys.0.tenants",
            "tenant 'Not OK' is invalid",
        ),
        ({"keys": [{"kid": "a", "public_key": "x", "extra": 1}]}, "keys.0.extra", "Extra inputs"),
    ],
)
def test_validation_names_the_field(data: dict[str, Any], where: str, says: str) -> None:
    loc, msg = _error(data)
    assert loc == where
    assert says in msg


def test_socket_token_mode_with_keys(tmp_path: Path) -> None:
    paths = write_key_pair(tmp_path, "k1")
    settings = AuthSettings.model_validate(
        {"socket": "token", "keys": [{"kid": "k1", "public_key_file": str(paths.public)}]}
    )
    assert settings.socket == "token"
    assert [m.kid for m in settings.load_keys()] == ["k1"]


def test_load_keys_names_every_broken_key(tmp_path: Path) -> None:
    good = write_key_pair(tmp_path, "good")
    rsa = write_key_pair(tmp_path, "rsa", "RS256", rsa_bits=2048)
    settings = AuthSettings.model_validate(
        {
            "keys": [
                {"kid": "good", "public_key_file": str(good.public)},
                {"kid": "missing", "public_key_file": str(tmp_path / "nope.pem")},
                {"kid": "private", "public_key_file": str(good.private)},
                {"kid": "wrong-type", "algorithm": "EdDSA", "public_key_file": str(rsa.public)},
                {"kid": "ed-for-rsa", "algorithm": "RS256", "public_key_file": str(good.public)},
                {"kid": "garbage", "public_key": "not a key"},
                {"kid": "paserk-v2", "public_key": "k2.public.AAAA"},
                {"kid": "no-secret", "algorithm": "HS256", "secret_env": "MEMSIDECAR_NOPE_XYZ"},
            ]
        }
    )
    with pytest.raises(AuthConfigError) as info:
        settings.load_keys(environ={})
    text = str(info.value)
    assert "kid 'good'" not in text
    expected = [
        "auth.keys[1] (kid 'missing'): cannot read public_key_file",
        "auth.keys[2] (kid 'private'): public_key_file",
        "is a private key; give the sidecar only the public key",
        "auth.keys[3] (kid 'wrong-type'):",
        "is an RSA key but EdDSA needs an Ed25519 key",
        "auth.keys[4] (kid 'ed-for-rsa'):",
        "is an Ed25519 key but RS256 needs an RSA key",
        "auth.keys[5] (kid 'garbage'): public_key is not a PEM public key",
        "auth.keys[6] (kid 'paserk-v2'): public_key looks like a PASERK but not a k4.public",
        "auth.keys[7] (kid 'no-secret'): env var MEMSIDECAR_NOPE_XYZ is not set",
    ]
    for fragment in expected:
        assert fragment in text, fragment


def test_hs256_secret_rules() -> None:
    key = VerificationKey(kid="h", algorithm="HS256", secret_env=HS_SECRET_ENV)
    with pytest.raises(ValueError, match="has 5 bytes; use at least 32"):
        key.load(environ={HS_SECRET_ENV: "short"})
    material = key.load(environ={HS_SECRET_ENV: "x" * 32})
    assert material.key == b"x" * 32
    # The secret never shows up in a repr (logs, tracebacks).
    assert "xxxx" not in repr(material)


def test_small_rsa_keys_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from memsidecar.sidecar.auth.keys import public_key_pem

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = tmp_path / "weak.pem"
    path.write_bytes(public_key_pem(weak))
    key = VerificationKey(kid="weak", algorithm="RS256", public_key_file=path)
    with pytest.raises(ValueError, match="1024 bits; RS256 needs at least 2048"):
        key.load()


def test_verifier_from_settings(tmp_path: Path) -> None:
    paths = write_key_pair(tmp_path, "k1")
    settings = AuthSettings.model_validate(
        {
            "leeway_seconds": 5,
            "audience": "prod",
            "max_token_bytes": "4KiB",
            "keys": [{"kid": "k1", "public_key_file": str(paths.public)}],
        }
    )
    verifier = TokenVerifier.from_settings(settings)
    assert (verifier.leeway, verifier.audience, verifier.max_token_bytes) == (5, "prod", 4096)
    assert verifier.kids == ["k1"]
    broken = AuthSettings.model_validate(
        {"keys": [{"kid": "k1", "public_key_file": str(tmp_path / "gone.pem")}]}
    )
    with pytest.raises(AuthConfigError, match=r"auth\.keys\[0\] \(kid 'k1'\)"):
        TokenVerifier.from_settings(broken)
