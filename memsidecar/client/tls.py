"""TLS for SDK connections to a sidecar's TCP listener (docs/tls.md).

`AsyncMemSidecar(target="memory.example:7070", tls=TLSFiles(ca="ca.crt"))`
checks the server against `ca` (the system roots when None); `cert` and `key`
add a client certificate for mTLS. Without `tls`, the env vars
MEMSIDECAR_TLS_CA / MEMSIDECAR_TLS_CERT / MEMSIDECAR_TLS_KEY turn TLS on for TCP
targets. The Unix socket is never TLS.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

TLS_CA_ENV = "MEMSIDECAR_TLS_CA"
TLS_CERT_ENV = "MEMSIDECAR_TLS_CERT"
TLS_KEY_ENV = "MEMSIDECAR_TLS_KEY"


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for a TLS connection: the CA that signed the sidecar's certificate
    (None = the system's trusted roots) and, for mTLS, a client certificate and key."""

    ca: str | Path | None = None
    cert: str | Path | None = None
    key: str | Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError(
                "a client certificate needs its key: pass both cert and key (mTLS), or neither"
            )

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials with the files read now (read errors name the file)."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "CA file") if self.ca is not None else None,
            private_key=_read(self.key, "client key") if self.key is not None else None,
            certificate_chain=_read(self.cert, "client certificate")
            if self.cert is not None
            else None,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TLSFiles | None:
        """TLSFiles from MEMSIDECAR_TLS_CA/_CERT/_KEY; None when none of them is set."""
        env = os.environ if environ is None else environ
        ca, cert, key = (env.get(name) or None for name in (TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV))
        if ca is None and cert is None and key is None:
            return None
        if (cert is None) != (key is None):
            raise ValueError(
                f"{TLS_CERT_ENV} and {TLS_KEY_ENV} go together: set both for mTLS, or neither"
            )
        return cls(ca=ca, cert=cert, key=key)


def channel_credentials(
    target: str,
    tls: TLSFiles | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    environ: Mapping[str, str] | None = None,
) -> grpc.ChannelCredentials | None:
    """The credentials for `target`: explicit ones, `tls`, or the env vars for TCP targets."""
    if tls is not None and credentials is not None:
        raise ValueError("pass either tls or credentials, not both")
    if credentials is not None:
        return credentials
    if tls is not None:
        return tls.credentials()
    if target.startswith(("unix:", "unix-abstract:")):
        return None
    from_env = TLSFiles.from_env(environ)
    return from_env.credentials() if from_env is not None else None
