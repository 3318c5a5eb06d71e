"""Capability tokens (PASETO v4.public / JWT), their keys, scopes, and the listener authenticator.

DESIGN.md section 5; docs/tokens.md for operators.
"""

from __future__ import annotations

from memsidecar.sidecar.auth.authenticator import ListenerAuthenticator
from memsidecar.sidecar.auth.keys import Algorithm, AuthConfigError
from memsidecar.sidecar.auth.scope import check_op, check_scope
from memsidecar.sidecar.auth.settings import AuthSettings, VerificationKey

__all__ = [
    "Algorithm",
    "AuthConfigError",
    "AuthSettings",
    "ListenerAuthenticator",
    "VerificationKey",
    "check_op",
    "check_scope",
]
