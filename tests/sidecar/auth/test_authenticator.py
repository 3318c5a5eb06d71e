"""ListenerAuthenticator: ambient on the socket, tokens on TCP, the capability header."""

from __future__ import annotations

import pytest

from memsidecar.defaults import CAPABILITY_HEADER
from memsidecar.sidecar.auth.authenticator import (
    ListenerAuthenticator,
    bearer_token,
    is_socket_peer,
)
from memsidecar.sidecar.auth.settings import AuthSettings
from memsidecar.sidecar.errors import Unauthenticated
from memsidecar.sidecar.identity import Identity
from tests.sidecar.auth.helpers import AuthKey, KeyFactory, verifier_for
from tests.support import ManualClock

AMBIENT = Identity(tenant="default", agent="local")
SOCKET = "unix:"
TCP_PEERS = ["ipv4:127.0.0.1:5555", "ipv6:%5B::1%5D:5555", "ipv6:[::1]:5555", ""]


@pytest.fixture
def key(make_key: KeyFactory) -> AuthKey:
    return make_key("k1")


def _auth(key: AuthKey, clock: ManualClock, socket: str = "ambient") -> ListenerAuthenticator:
    settings = AuthSettings.model_validate({"socket": socket, "keys": [key.verification]})
    return ListenerAuthenticator(settings, AMBIENT, verifier_for(key, clock=clock))


def _header(token: str) -> dict[str, str]:
    return {CAPABILITY_HEADER: f"Bearer {token}"}


def test_peer_kinds() -> None:
    assert is_socket_peer("unix:")
    assert is_socket_peer("unix:/run/memsidecar/m.sock")
    assert is_socket_peer("unix-abstract:memsidecar")
    for peer in TCP_PEERS:
        assert not is_socket_peer(peer)


def test_socket_ambient_without_token(key: AuthKey, clock: ManualClock) -> None:
    assert _auth(key, clock).authenticate({}, SOCKET) is AMBIENT
    # Unrelated metadata does not matter.
    assert _auth(key, clock).authenticate({"user-agent": "x"}, SOCKET) is AMBIENT


def test_socket_ambient_with_token_uses_the_token(key: AuthKey, clock: ManualClock) -> None:
    identity = _auth(key, clock).authenticate(_header(key.issue(clock)), SOCKET)
    assert (identity.tenant, identity.source) == ("acme", "token")
    assert identity.namespaces == ("kv/scratch*",)


def test_socket_ambient_with_bad_token_is_rejected_not_downgraded(
    key: AuthKey, clock: ManualClock, make_key: KeyFactory
) -> None:
    auth = _auth(key, clock)
    stranger = make_key("k1-forged")
    with pytest.raises(Unauthenticated, match="bad signature"):
        auth.authenticate(_header(stranger.issue(clock, kid="k1")), SOCKET)
    expired = key.issue(clock, ttl=10)
    clock.advance(100)
    with pytest.raises(Unauthenticated, match="expired at"):
        auth.authenticate(_header(expired), SOCKET)


def test_socket_token_mode_requires_a_token(key: AuthKey, clock: ManualClock) -> None:
    auth = _auth(key, clock, socket="token")
    with pytest.raises(Unauthenticated) as info:
        auth.authenticate({}, SOCKET)
    assert "required on the Unix socket (auth.socket: token)" in info.value.message
    assert f"{CAPABILITY_HEADER}: Bearer <token>" in info.value.message
    assert auth.authenticate(_header(key.issue(clock)), SOCKET).tenant == "acme"


@pytest.mark.parametrize("peer", TCP_PEERS)
def test_tcp_always_requires_a_token(key: AuthKey, clock: ManualClock, peer: str) -> None:
    auth = _auth(key, clock, socket="ambient")
    with pytest.raises(Unauthenticated, match="required on TCP"):
        auth.authenticate({}, peer)
    assert auth.authenticate(_header(key.issue(clock)), peer).agent == "planner-1"


@pytest.mark.parametrize(
    "value",
    ["", "Bearer", "Bearer ", "Token abc", "Basic dXNlcjpwYXNz", "Bearer a b", "abc", "Bearer\ta"],
)
def test_garbled_header(key: AuthKey, clock: ManualClock, value: str) -> None:
    auth = _auth(key, clock)
    with pytest.raises(Unauthenticated) as info:
        auth.authenticate({CAPABILITY_HEADER: value}, SOCKET)
    assert "malformed x-memsidecar-capability header: expected 'Bearer <token>'" in (
        info.value.message
    )


def test_bearer_scheme_is_case_insensitive(key: AuthKey, clock: ManualClock) -> None:
    token = key.issue(clock)
    assert bearer_token(f"bearer {token}") == token
    assert bearer_token(f"  BEARER   {token}  ") == token
    auth = _auth(key, clock)
    assert auth.authenticate({CAPABILITY_HEADER: f"bearer {token}"}, SOCKET).tenant == "acme"


def test_garbage_token_in_a_well_formed_header(key: AuthKey, clock: ManualClock) -> None:
    with pytest.raises(Unauthenticated, match=r"neither a PASETO v4\.public token nor a JWT"):
        _auth(key, clock).authenticate(_header("not-a-token"), "ipv4:127.0.0.1:1")


def test_no_verifier_configured(key: AuthKey, clock: ManualClock) -> None:
    auth = ListenerAuthenticator(AuthSettings(), AMBIENT, None)
    assert auth.authenticate({}, SOCKET) is AMBIENT
    with pytest.raises(Unauthenticated, match="no verification keys"):
        auth.authenticate(_header(key.issue(clock)), SOCKET)
    with pytest.raises(Unauthenticated, match="required on TCP"):
        auth.authenticate({}, "ipv4:127.0.0.1:1")
