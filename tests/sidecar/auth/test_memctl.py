"""memctl end to end: generate keys, issue, inspect and verify tokens, as a shell script would."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from memsidecar.cli.memctl import main
from memsidecar.sidecar.auth.settings import AuthSettings
from memsidecar.sidecar.auth.tokens import TokenVerifier, inspect_token
from tests.sidecar.auth.helpers import HS_SECRET_ENV


def run(*args: str, stdin: str | None = None, ok: bool = True) -> Result:
    result = CliRunner().invoke(main, list(args), input=stdin)
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
    return result


def generate(out: Path, kid: str, algorithm: str = "paseto-v4-public") -> tuple[Path, Path]:
    result = run("keys", "generate", "--kid", kid, "--algorithm", algorithm, "--out", str(out))
    private, public = result.stdout.splitlines()
    return Path(private), Path(public)


def issue(private: Path, kid: str, *extra: str) -> str:
    result = run(
        "token",
        "issue",
        "--key",
        str(private),
        "--kid",
        kid,
        "--tenant",
        "acme",
        "--agent",
        "planner-1",
        "--ns",
        "kv/scratch*",
        "--ns",
        "*/shared",
        "--ops",
        "kv.get,kv.put",
        "--ops",
        "lease.*",
        "--ttl",
        "1h",
        *extra,
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 1, "issue prints only the token"
    return lines[0]


@pytest.mark.parametrize(
    ("algorithm", "fmt", "prefix"),
    [
        ("paseto-v4-public", "paseto", "v4.public."),
        ("EdDSA", "jwt", "eyJ"),
        ("RS256", "jwt", "eyJ"),
    ],
)
def test_generate_issue_verify(tmp_path: Path, algorithm: str, fmt: str, prefix: str) -> None:
    private, public = generate(tmp_path / "keys", "k1", algorithm)
    assert private == tmp_path / "keys" / "k1.private.pem"
    assert public == tmp_path / "keys" / "k1.public.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")

    token = issue(private, "k1", "--format", fmt)
    assert token.startswith(prefix)
    if fmt == "jwt":
        assert inspect_token(token).header["alg"] == algorithm

    verified = json.loads(
        run("token", "verify", "--public-key", str(public), "--kid", "k1", token).stdout
    )
    assert verified["verified"] is True
    assert verified["tenant"] == "acme"
    assert verified["agent"] == "planner-1"
    assert verified["namespaces"] == ["kv/scratch*", "*/shared"]
    assert verified["ops"] == ["kv.get", "kv.put", "lease.*"]
    assert verified["kid"] == "k1"

    # The sidecar, configured with the generated public key, accepts the issued token.
    settings = AuthSettings.model_validate(
        {"keys": [{"kid": "k1", "algorithm": algorithm, "public_key_file": str(public)}]}
    )
    assert TokenVerifier.from_settings(settings).verify(token).tenant == "acme"


def test_inspect_is_labelled_unverified(tmp_path: Path) -> None:
    private, _ = generate(tmp_path, "k1")
    token = issue(private, "k1")
    shown = json.loads(run("token", "inspect", token).stdout)
    assert shown["verified"] is False
    assert shown["warning"].startswith("UNVERIFIED")
    assert shown["format"] == "paseto"
    assert shown["footer"] == {"kid": "k1"}
    assert shown["claims"]["tenant"] == "acme"
    assert {"exp", "nbf", "iat", "jti"} <= set(shown["claims"])
    # From stdin, so tokens stay out of shell history.
    assert json.loads(run("token", "inspect", "-", stdin=token + "\n").stdout) == shown
    assert "not a PASETO" in run("token", "inspect", "garbage", ok=False).output


def test_verify_rejections(tmp_path: Path) -> None:
    private, public = generate(tmp_path, "k1")
    _, other_public = generate(tmp_path, "k2")
    token = issue(private, "k1")
    wrong_key = run(
        "token", "verify", "--public-key", str(other_public), "--kid", "k1", token, ok=False
    )
    assert "token rejected: bad signature" in wrong_key.output
    wrong_kid = run("token", "verify", "--public-key", str(public), "--kid", "k2", token, ok=False)
    assert "unknown key id 'k1' (rotated out?)" in wrong_kid.output
    assert token not in wrong_kid.output
    later = issue(private, "k1", "--not-before", "10m")
    pending = run("token", "verify", "--public-key", str(public), "--kid", "k1", later, ok=False)
    assert "not valid before" in pending.output
    from_stdin = run(
        "token", "verify", "--public-key", str(public), "--kid", "k1", "-", stdin=token
    )
    assert json.loads(from_stdin.stdout)["verified"] is True


def test_hs256_with_a_secret_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hs_secret: str
) -> None:
    token = run(
        "token",
        "issue",
        "--secret-env",
        HS_SECRET_ENV,
        "--kid",
        "shared",
        "--tenant",
        "acme",
        "--agent",
        "a1",
        "--ns",
        "*",
        "--ops",
        "*",
        "--format",
        "jwt",
    ).stdout.strip()
    assert inspect_token(token).header["alg"] == "HS256"
    verified = run("token", "verify", "--secret-env", HS_SECRET_ENV, "--kid", "shared", token)
    assert json.loads(verified.stdout)["tenant"] == "acme"
    monkeypatch.setenv(HS_SECRET_ENV, "a-different-secret-that-is-long-enough-0123")
    bad = run("token", "verify", "--secret-env", HS_SECRET_ENV, "--kid", "shared", token, ok=False)
    assert "bad signature" in bad.output


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    private, _ = generate(tmp_path, "k1")
    before = private.read_bytes()
    again = run("keys", "generate", "--kid", "k1", "--out", str(tmp_path), ok=False)
    assert "already exists; pick a new --kid" in again.output
    assert private.read_bytes() == before
    run("keys", "generate", "--kid", "k1", "--out", str(tmp_path), "--force")
    assert private.read_bytes() != before
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    bad = run("keys", "generate", "--kid", "../k", "--out", str(tmp_path), ok=False)
    assert "key id '../k' is invalid" in bad.output
    hs = run(
        "keys", "generate", "--kid", "h", "--algorithm", "HS256", "--out", str(tmp_path), ok=False
    )
    assert "Invalid value for '--algorithm'" in hs.output


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--ops", "kv.pt"], "block kv has methods"),
        (["--ttl", "soon"], "'soon' is not a duration"),
        (["--ttl", "0s"], "must be positive"),
        (["--not-before", "tomorrow"], "neither an ISO 8601 time"),
        (["--not-before", "2030-01-01T00:00:00"], "give a time zone"),
        (["--format", "jwt", "--algorithm", "RS256"], "RS256 cannot be used with"),
        (["--algorithm", "EdDSA"], "--algorithm is for --format jwt"),
    ],
)
def test_issue_errors(tmp_path: Path, extra: list[str], expected: str) -> None:
    private, _ = generate(tmp_path, "k1")
    args = ["token", "issue", "--key", str(private), "--kid", "k1", "--tenant", "acme"]
    args += ["--agent", "a", "--ns", "kv/*", "--ops", "kv.get", *extra]
    assert expected in run(*args, ok=False).output


def test_issue_needs_exactly_one_key_source(tmp_path: Path) -> None:
    args = ["token", "issue", "--kid", "k1", "--tenant", "acme", "--agent", "a"]
    args += ["--ns", "*", "--ops", "*"]
    assert "exactly one of --key" in run(*args, ok=False).output
    broken = tmp_path / "broken.pem"
    broken.write_text("nope")
    assert "is not a PEM private key" in run(*args, "--key", str(broken), ok=False).output
    assert "need --key (Ed25519)" in run(*args, "--secret-env", "X", ok=False).output


def test_not_before_iso_and_explicit(tmp_path: Path) -> None:
    private, public = generate(tmp_path, "k1")
    token = issue(private, "k1", "--not-before", "2000-01-01T00:00:00Z", "--ttl", "1d")
    claims = inspect_token(token).claims
    assert claims["nbf"] == "2000-01-01T00:00:00+00:00"
    # Validity runs ttl from max(now, not_before): a past not_before does not shorten it.
    iat, exp = (datetime.fromisoformat(claims[n]) for n in ("iat", "exp"))
    assert exp - iat == timedelta(days=1)
    verified = run("token", "verify", "--public-key", str(public), "--kid", "k1", token)
    assert json.loads(verified.stdout)["verified"] is True


MEMCTL = [sys.executable, "-m", "memsidecar.cli.memctl"]
SCOPE = ["--agent", "a", "--ns", "kv/*", "--ops", "kv.*", "--ttl", "5m"]


def test_memctl_as_a_process(tmp_path: Path) -> None:
    """`python -m memsidecar.cli.memctl` runs and prints just the token, for TOKEN=$(...)."""
    private, public = generate(tmp_path, "proc")
    issued = subprocess.run(
        [
            *MEMCTL,
            "token",
            "issue",
            "--key",
            str(private),
            "--kid",
            "proc",
            "--tenant",
            "acme",
            *SCOPE,
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
        check=True,
    )
    token = issued.stdout
    assert token.count("\n") == 1 and token.startswith("v4.public.")
    verified = run(
        "token", "verify", "--public-key", str(public), "--kid", "proc", "-", stdin=token
    )
    assert json.loads(verified.stdout)["ops"] == ["kv.*"]
