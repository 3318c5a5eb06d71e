"""Issuing and verifying capability tokens: every format, rotation, forgery, time, alg confusion."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from memsidecar.sidecar.auth.keys import Algorithm, public_key_pem
from memsidecar.sidecar.auth.settings import VerificationKey
from memsidecar.sidecar.auth.tokens import TokenVerifier, inspect_token, issue_token
from memsidecar.sidecar.errors import Unauthenticated
from tests.sidecar.auth.helpers import ALL_ALGORITHMS, AuthKey, KeyFactory, verifier_for
from tests.support import ManualClock


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


FOOTER_K2 = json.dumps({"kid": "k2"}).encode()
HEADER_NO_KID = json.dumps({"alg": "EdDSA"}).encode()
HEADER_NO_ALG = json.dumps({"kid": "k1"}).encode()


def _reject(verifier: TokenVerifier, token: str, *fragments: str) -> str:
    with pytest.raises(Unauthenticated) as info:
        verifier.verify(token)
    message = info.value.message
    for fragment in fragments:
        assert fragment in message, message
    # The token is never echoed back (it is a credential).
    if token.strip():
        assert token.strip() not in message
    return message


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_round_trip(make_key: KeyFactory, clock: ManualClock, algorithm: Algorithm) -> None:
    key = make_key("k1", algorithm)
    token = key.issue(clock, namespaces=["kv/scratch*", "*/shared"], ops=["kv.put", "get"])
    identity = verifier_for(key, clock=clock).verify(token)
    assert identity.tenant == "acme"
    assert identity.agent == "planner-1"
    assert identity.namespaces == ("kv/scratch*", "*/shared")
    assert identity.ops == ("kv.put", "get")
    assert identity.source == "token"
    assert identity.extra["kid"] == "k1"
    assert identity.extra["format"] == ("paseto" if algorithm == "paseto-v4-public" else "jwt")
    assert len(identity.extra["jti"]) == 36


@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_claims_and_key_id_are_where_the_formats_put_them(
    make_key: KeyFactory, clock: ManualClock, algorithm: Algorithm
) -> None:
    key = make_key("k1", algorithm)
    token = key.issue(clock, ttl=600)
    parsed = inspect_token(token)
    assert parsed.header["kid"] == "k1"
    now = int(clock())
    if algorithm == "paseto-v4-public":
        assert token.startswith("v4.public.")
        assert parsed.format == "paseto"
        assert parsed.claims["exp"] == datetime.fromtimestamp(now + 600, UTC).isoformat()
        assert parsed.claims["iat"] == parsed.claims["nbf"]
    else:
        assert parsed.format == "jwt"
        assert parsed.header["alg"] == algorithm
        assert (parsed.claims["iat"], parsed.claims["nbf"], parsed.claims["exp"]) == (
            now,
            now,
            now + 600,
        )
    assert {"tenant", "agent", "namespaces", "ops", "jti"} <= set(parsed.claims)


def test_every_token_gets_its_own_jti(make_key: KeyFactory, clock: ManualClock) -> None:
    key = make_key("k1")
    verifier = verifier_for(key, clock=clock)
    jtis = {verifier.verify(key.issue(clock)).extra["jti"] for _ in range(5)}
    assert len(jtis) == 5


def test_bearer_whitespace_around_the_token_is_ignored(
    make_key: KeyFactory, clock: ManualClock
) -> None:
    key = make_key("k1")
    assert verifier_for(key, clock=clock).verify(f"  {key.issue(clock)}\n").tenant == "acme"


# -- rotation -------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_rotation_old_kid_accepted_until_removed(
    make_key: KeyFactory, clock: ManualClock, algorithm: Algorithm
) -> None:
    old = make_key("old", algorithm)
    new = make_key("new", algorithm)
    old_token, new_token = old.issue(clock), new.issue(clock)
    # Rotation step 1: only the old key.
    before = verifier_for(old, clock=clock)
    assert before.verify(old_token).extra["kid"] == "old"
    _reject(before, new_token, "unknown key id 'new'", "rotated out?", "old")
    # Step 2: both keys; tokens of either verify.
    both = verifier_for(old, new, clock=clock)
    assert both.verify(old_token).extra["kid"] == "old"
    assert both.verify(new_token).extra["kid"] == "new"
    # Step 3: old key removed; its tokens are rejected by name.
    after = verifier_for(new, clock=clock)
    assert after.verify(new_token).extra["kid"] == "new"
    _reject(after, old_token, "unknown key id 'old'", "rotated out?", "new")


def test_mixed_formats_in_one_verifier(make_key: KeyFactory, clock: ManualClock) -> None:
    keys = [make_key(f"k-{alg.lower()}", alg) for alg in ALL_ALGORITHMS]
    verifier = verifier_for(*keys, clock=clock)
    for key in keys:
        assert verifier.verify(key.issue(clock)).extra["kid"] == key.kid
    assert verifier.kids == sorted(k.kid for k in keys)


# -- forgery and tampering ------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_forged_signature_same_kid_other_key(
    make_key: KeyFactory, clock: ManualClock, algorithm: Algorithm
) -> None:
    real = make_key("k1", algorithm)
    if algorithm == "HS256":
        forger = AuthKey(
            "k1", "HS256", b"another-secret-of-the-attacker-0123456789", real.verification, None
        )
    else:
        forger = make_key("forger", algorithm)
    forged = forger.issue(clock, kid="k1", tenant="victim")
    _reject(verifier_for(real, clock=clock), forged, "bad signature", "'k1'")


@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_tampered_claims_fail_the_signature(
    make_key: KeyFactory, clock: ManualClock, algorithm: Algorithm
) -> None:
    key = make_key("k1", algorithm)
    verifier = verifier_for(key, clock=clock)
    token = key.issue(clock)
    parts = token.split(".")
    if algorithm == "paseto-v4-public":
        body = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
        claims, signature = body[:-64], body[-64:]
        widened = claims.replace(b'"kv/scratch*"', b'"*"')
        assert widened != claims
        parts[2] = _b64(widened + signature)
    else:
        claims_json = json.loads(base64.urlsafe_b64decode(parts[1] + "=="))
        claims_json["tenant"] = "globex"
        claims_json["ops"] = ["*"]
        parts[1] = _b64(json.dumps(claims_json).encode())
    _reject(verifier, ".".join(parts), "bad signature")


def test_tampered_paseto_footer_fails_the_signature(
    make_key: KeyFactory, clock: ManualClock
) -> None:
    k1, k2 = make_key("k1"), make_key("k2")
    token = k1.issue(clock)
    head, _, _footer = token.rpartition(".")
    # Pointing the footer at the other trusted key does not help: the footer is signed.
    _reject(verifier_for(k1, k2, clock=clock), f"{head}.{_b64(FOOTER_K2)}", "bad signature")


# -- algorithm confusion --------------------------------------------------------------------------


def _hs256_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(sig)}"


def _claims(clock: ManualClock, **overrides: Any) -> dict[str, Any]:
    now = int(clock())
    claims: dict[str, Any] = {
        "tenant": "acme",
        "agent": "planner-1",
        "namespaces": ["*"],
        "ops": ["*"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "jti-1",
    }
    claims.update(overrides)
    return claims


@pytest.mark.parametrize("algorithm", ["RS256", "EdDSA", "paseto-v4-public"])
def test_hs256_signed_with_the_public_key_as_secret_is_rejected(
    make_key: KeyFactory, clock: ManualClock, algorithm: Algorithm
) -> None:
    key = make_key("k1", algorithm)
    assert key.public_file is not None
    public_pem = key.public_file.read_bytes()
    assert public_pem == public_key_pem(key.signer)  # type: ignore[arg-type]
    forged = _hs256_token({"alg": "HS256", "typ": "JWT", "kid": "k1"}, _claims(clock), public_pem)
    message = _reject(verifier_for(key, clock=clock), forged)
    assert "does not match key 'k1'" in message or "PASETO v4.public key" in message


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
@pytest.mark.parametrize("algorithm", ["RS256", "EdDSA", "HS256"])
def test_alg_none_is_rejected(
    make_key: KeyFactory, clock: ManualClock, algorithm: Algorithm, alg: str
) -> None:
    key = make_key("k1", algorithm)
    header = _b64(json.dumps({"alg": alg, "kid": "k1"}).encode())
    body = _b64(json.dumps(_claims(clock)).encode())
    _reject(verifier_for(key, clock=clock), f"{header}.{body}.", "alg none")


def test_jwt_alg_must_match_the_keys_declared_algorithm(
    make_key: KeyFactory, clock: ManualClock
) -> None:
    ed = make_key("ed", "EdDSA")
    rs = make_key("rs", "RS256")
    hs = make_key("hs", "HS256")
    verifier = verifier_for(ed, rs, hs, clock=clock)
    # An RS256 token claiming the EdDSA key's kid.
    _reject(verifier, rs.sign_claims(_claims(clock), header_kid="ed"), "does not match key 'ed'")
    # An EdDSA token claiming the RS256 key's kid.
    _reject(verifier, ed.sign_claims(_claims(clock), header_kid="rs"), "does not match key 'rs'")
    # An RS256 token claiming the HS256 key's kid.
    _reject(verifier, rs.sign_claims(_claims(clock), header_kid="hs"), "does not match key 'hs'")


def test_formats_do_not_cross(make_key: KeyFactory, clock: ManualClock) -> None:
    paseto = make_key("p", "paseto-v4-public")
    ed = make_key("ed", "EdDSA")
    verifier = verifier_for(paseto, ed, clock=clock)
    # A JWT naming the PASETO key, and a PASETO token naming the JWT key.
    _reject(verifier, ed.sign_claims(_claims(clock), header_kid="p"), "PASETO v4.public key")
    jwt_claims = _claims(clock)
    paseto_claims = {**jwt_claims, "exp": "2099-01-01T00:00:00+00:00"}
    _reject(verifier, paseto.sign_claims(paseto_claims, header_kid="ed"), "not PASETO v4.public")


# -- time -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_expiry_with_leeway(make_key: KeyFactory, clock: ManualClock, algorithm: Algorithm) -> None:
    key = make_key("k1", algorithm)
    verifier = verifier_for(key, clock=clock, leeway=30)
    token = key.issue(clock, ttl=60)
    clock.advance(60 + 30)  # at the edge of the leeway: still accepted
    assert verifier.verify(token).tenant == "acme"
    clock.advance(1)
    message = _reject(verifier, token, "expired at", "get a fresh one")
    assert f"expired at {datetime.fromtimestamp(clock() - 31, UTC).isoformat()}" in message


@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_not_yet_valid(make_key: KeyFactory, clock: ManualClock, algorithm: Algorithm) -> None:
    key = make_key("k1", algorithm)
    verifier = verifier_for(key, clock=clock, leeway=5)
    start = datetime.fromtimestamp(clock() + 600, UTC)
    token = key.issue(clock, not_before=start, ttl=60)
    _reject(verifier, token, "not valid before", start.isoformat(timespec="seconds"))
    clock.advance(596)  # inside the leeway
    assert verifier.verify(token).tenant == "acme"
    # The validity window starts at not_before: ttl counts from there.
    clock.advance(4 + 60 + 5)
    assert verifier.verify(token).tenant == "acme"
    clock.advance(1)
    _reject(verifier, token, "expired at")


def test_zero_leeway_is_exact(make_key: KeyFactory, clock: ManualClock) -> None:
    key = make_key("k1")
    verifier = verifier_for(key, clock=clock, leeway=0)
    token = key.issue(clock, ttl=10)
    clock.advance(10)
    assert verifier.verify(token).tenant == "acme"
    clock.advance(0.5)
    _reject(verifier, token, "expired at")


# -- claims ---------------------------------------------------------------------------------------


BAD_CLAIMS: list[tuple[str, dict[str, Any], str]] = [
    ("missing tenant", {"tenant": None}, "required claim 'tenant'"),
    ("missing agent", {"agent": None}, "required claim 'agent'"),
    ("missing namespaces", {"namespaces": None}, "required claim 'namespaces'"),
    ("missing ops", {"ops": None}, "required claim 'ops'"),
    ("missing exp", {"exp": None}, "required claim 'exp'"),
    ("missing jti", {"jti": None}, "required claim 'jti'"),
    ("tenant not a string", {"tenant": 7}, "tenant must be a string"),
    ("tenant with a slash", {"tenant": "acme/../globex"}, "tenant"),
    ("tenant empty", {"tenant": ""}, "tenant"),
    ("tenant trailing newline", {"tenant": "acme\n"}, "tenant"),
    ("agent with spaces", {"agent": "a b"}, "agent"),
    ("namespaces empty", {"namespaces": []}, "non-empty list"),
    ("namespaces a string", {"namespaces": "kv/*"}, "non-empty list"),
    ("namespace glob without block", {"namespaces": ["scratch*"]}, "exactly one '/'"),
    ("namespace glob with two slashes", {"namespaces": ["kv/a/b"]}, "exactly one '/'"),
    ("namespace glob unclosed bracket", {"namespaces": ["kv/team-[ab"]}, "'['"),
    ("namespace glob uppercase block", {"namespaces": ["KV/x"]}, "character 'K' is not allowed"),
    ("namespace glob empty namespace", {"namespaces": ["kv/"]}, "has an empty part"),
    ("namespace glob odd character", {"namespaces": ["kv/a b"]}, "not allowed"),
    ("ops empty", {"ops": []}, "non-empty list"),
    ("op garbled", {"ops": ["kv put"]}, "op 'kv put': character ' ' is not allowed"),
    ("op with two dots", {"ops": ["kv.put.x"]}, "op 'kv.put.x' is invalid"),
    ("op not a string", {"ops": [1]}, "list of strings"),
    ("jti empty", {"jti": ""}, "jti"),
]


@pytest.mark.parametrize(("case", "change", "expected"), BAD_CLAIMS, ids=[c[0] for c in BAD_CLAIMS])
@pytest.mark.parametrize("algorithm", ["paseto-v4-public", "EdDSA"])
def test_signed_but_invalid_claims_are_rejected(
    make_key: KeyFactory,
    clock: ManualClock,
    algorithm: Algorithm,
    case: str,
    change: dict[str, Any],
    expected: str,
) -> None:
    key = make_key("k1", algorithm)
    claims = _claims(clock)
    if algorithm == "paseto-v4-public":
        for name in ("iat", "nbf", "exp"):
            claims[name] = datetime.fromtimestamp(claims[name], UTC).isoformat()
    for name, value in change.items():
        if value is None:
            claims.pop(name)
        else:
            claims[name] = value
    _reject(verifier_for(key, clock=clock), key.sign_claims(claims), expected)


def test_time_claims_use_each_formats_encoding(make_key: KeyFactory, clock: ManualClock) -> None:
    paseto, ed = make_key("p"), make_key("ed", "EdDSA")
    verifier = verifier_for(paseto, ed, clock=clock)
    # PASETO times are ISO 8601 with an offset; JWT times are NumericDate.
    _reject(verifier, paseto.sign_claims(_claims(clock)), "ISO 8601")
    naive = {**_claims(clock), "exp": "2099-01-01T00:00:00", "iat": None, "nbf": None}
    _reject(verifier, paseto.sign_claims({k: v for k, v in naive.items() if v}), "time zone")
    _reject(verifier, ed.sign_claims({**_claims(clock), "exp": "2099-01-01"}), "NumericDate")
    _reject(verifier, ed.sign_claims({**_claims(clock), "exp": True}), "NumericDate")
    _reject(verifier, ed.sign_claims({**_claims(clock), "iat": "yesterday"}), "NumericDate")


def test_claims_must_be_an_object(make_key: KeyFactory, clock: ManualClock) -> None:
    import jwt as pyjwt

    ed = make_key("ed", "EdDSA")
    token = pyjwt.api_jws.encode(b"[1,2]", ed.signer, algorithm="EdDSA", headers={"kid": "ed"})  # type: ignore[arg-type]
    _reject(verifier_for(ed, clock=clock), token, "JSON object")


# -- tenants --------------------------------------------------------------------------------------


def test_token_tenant_is_the_identity_tenant(make_key: KeyFactory, clock: ManualClock) -> None:
    key = make_key("k1")
    verifier = verifier_for(key, clock=clock)
    assert verifier.verify(key.issue(clock, tenant="globex")).tenant == "globex"
    assert verifier.verify(key.issue(clock, tenant="acme")).tenant == "acme"


@pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
def test_key_restricted_to_tenants_cannot_sign_for_another(
    make_key: KeyFactory, clock: ManualClock, algorithm: Algorithm
) -> None:
    key = make_key("acme-key", algorithm, tenants=["acme", "acme-staging"])
    verifier = verifier_for(key, clock=clock)
    assert verifier.verify(key.issue(clock, tenant="acme-staging")).tenant == "acme-staging"
    _reject(
        verifier,
        key.issue(clock, tenant="globex"),
        "may only sign tokens for tenants acme, acme-staging",
        "'globex'",
    )


# -- audience -------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["paseto-v4-public", "RS256"])
def test_audience(make_key: KeyFactory, clock: ManualClock, algorithm: Algorithm) -> None:
    key = make_key("k1", algorithm)
    verifier = verifier_for(key, clock=clock, audience="memsidecar-prod")
    assert verifier.verify(key.issue(clock, audience="memsidecar-prod")).tenant == "acme"
    _reject(verifier, key.issue(clock), "aud 'memsidecar-prod'")
    _reject(verifier, key.issue(clock, audience="memsidecar-dev"), "aud 'memsidecar-prod'")
    # Without a configured audience, a token's aud is not checked.
    assert verifier_for(key, clock=clock).verify(key.issue(clock, audience="x")).tenant == "acme"


def test_jwt_audience_list(make_key: KeyFactory, clock: ManualClock) -> None:
    key = make_key("ed", "EdDSA")
    verifier = verifier_for(key, clock=clock, audience="prod")
    assert (
        verifier.verify(key.sign_claims(_claims(clock, aud=["dev", "prod"]))).agent == "planner-1"
    )
    _reject(verifier, key.sign_claims(_claims(clock, aud=["dev"])), "aud 'prod'")


# -- garbage in -----------------------------------------------------------------------------------


GARBLED = [
    ("empty", "", "empty"),
    ("spaces", "   ", "empty"),
    ("words", "hello world", "neither a PASETO v4.public token nor a JWT"),
    ("paseto v2", "v2.public.eyJhIjoxfQ", "v2.public tokens are not accepted"),
    ("paseto local", "v4.local.abcdef.ghij", "v4.local tokens are not accepted"),
    ("paseto without footer", "v4.public.eyJhIjoxfQ", "no footer"),
    ("paseto footer not json", "v4.public.eyJhIjoxfQ.bm9wZQ", "malformed PASETO footer"),
    ("paseto footer not object", f"v4.public.eyJhIjoxfQ.{_b64(b'[1]')}", "JSON object"),
    ("paseto footer no kid", f"v4.public.eyJhIjoxfQ.{_b64(b'{}')}", "no kid"),
    ("paseto too many parts", "v4.public.a.b.c", "wrong number of parts"),
    ("jwt junk", "a.b.c", "malformed JWT header"),
    ("jwt header no kid", f"{_b64(HEADER_NO_KID)}.e30.c2ln", "no kid"),
    ("jwt header no alg", f"{_b64(HEADER_NO_ALG)}.e30.c2ln", "no alg"),
    ("too long", "v4.public." + "A" * 9000, "over the limit of 8192"),
]


@pytest.mark.parametrize(("case", "token", "expected"), GARBLED, ids=[g[0] for g in GARBLED])
def test_garbled_tokens(
    make_key: KeyFactory, clock: ManualClock, case: str, token: str, expected: str
) -> None:
    _reject(verifier_for(make_key("k1"), clock=clock), token, expected)


def test_truncated_token(make_key: KeyFactory, clock: ManualClock) -> None:
    key = make_key("k1")
    token = key.issue(clock)
    head, _, footer = token.rpartition(".")
    _reject(verifier_for(key, clock=clock), f"{head[:-10]}.{footer}")


def test_unknown_kid_is_named_and_long_kids_are_cut(
    make_key: KeyFactory, clock: ManualClock
) -> None:
    key = make_key("k1")
    verifier = verifier_for(key, clock=clock)
    message = _reject(verifier, key.issue(clock, kid="ghost"), "unknown key id 'ghost'", "k1")
    assert "Get a token signed with a current key" in message
    forged = key.sign_claims(_claims(clock), header_kid="x" * 500)
    assert "x" * 129 not in _reject(verifier, forged, "unknown key id")


def test_no_keys_configured(make_key: KeyFactory, clock: ManualClock) -> None:
    key = make_key("k1")
    _reject(TokenVerifier([], clock=clock), key.issue(clock), "no token verification keys")


# -- issuing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"ops": ["kv.pt"]}, "op 'kv.pt' matches no operation; block kv has methods get, "),
        ({"ops": ["frobnicate"]}, "matches no method of any block"),
        ({"ops": ["list_x*"]}, "matches no method of any block"),
        ({"ops": ["vault.get"]}, "matches no operation; blocks: kv, episodic"),
        ({"ops": []}, "at least one op"),
        ({"namespaces": ["vault/x"]}, "names no block ('vault')"),
        ({"namespaces": ["kv/a/b"]}, "exactly one '/'"),
        ({"namespaces": []}, "at least one namespace glob"),
        ({"tenant": "Acme Corp"}, "tenant 'Acme Corp' is invalid"),
        ({"agent": ""}, "agent '' is invalid"),
        ({"kid": "../etc/passwd"}, "key id '../etc/passwd' is invalid"),
        ({"kid": "k1\n"}, "key id 'k1\\n' is invalid"),
        ({"tenant": "acme\n"}, "tenant 'acme\\n' is invalid"),
        ({"ttl": 0}, "ttl must be positive"),
        ({"ttl": timedelta(seconds=-5)}, "ttl must be positive"),
        ({"not_before": datetime(2030, 1, 1)}, "time zone"),
        ({"audience": " "}, "audience is empty"),
        ({"algorithm": "RS256"}, "RS256 cannot be used with"),
        ({"algorithm": "HS256"}, "HS256 cannot be used with"),
    ],
)
def test_issue_rejects_bad_arguments(
    make_key: KeyFactory, clock: ManualClock, overrides: dict[str, Any], expected: str
) -> None:
    key = make_key("k1")
    with pytest.raises(ValueError) as info:
        key.issue(clock, **overrides)
    assert expected in str(info.value)


def test_issue_hs256_needs_a_long_secret(clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        issue_token(
            b"short",
            kid="k",
            tenant="acme",
            agent="a",
            namespaces=["*"],
            ops=["*"],
            ttl=60,
            clock=clock,
        )


def test_issue_accepts_every_scope_form(make_key: KeyFactory, clock: ManualClock) -> None:
    key = make_key("k1")
    scope = {
        "namespaces": ["*", "*/shared", "kv/team-[ab]", "episodic/run-?", "lease/*", "[kl]*/x"],
        "ops": ["*", "put", "kv.*", "*.get", "list_*", "episodic.list_sessions", "session.keep_*"],
    }
    identity = verifier_for(key, clock=clock).verify(key.issue(clock, **scope))
    assert list(identity.namespaces) == scope["namespaces"]
    assert list(identity.ops) == scope["ops"]


# -- key loading ----------------------------------------------------------------------------------


def test_inline_public_keys_pem_and_paserk(make_key: KeyFactory, clock: ManualClock) -> None:
    import pyseto

    key = make_key("k1")
    assert key.public_file is not None
    pem = key.public_file.read_text()
    paserk = pyseto.Key.new(4, "public", pem.encode()).to_paserk()
    assert paserk.startswith("k4.public.")
    token = key.issue(clock)
    for inline in (pem, paserk):
        verifier = TokenVerifier([VerificationKey(kid="k1", public_key=inline)], clock=clock)
        assert verifier.verify(token).tenant == "acme"
    ed = make_key("ed", "EdDSA")
    assert ed.public_file is not None
    inline_ed = VerificationKey(kid="ed", algorithm="EdDSA", public_key=ed.public_file.read_text())
    assert TokenVerifier([inline_ed], clock=clock).verify(ed.issue(clock)).agent == "planner-1"
