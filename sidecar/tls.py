"""TLS and mTLS for the TCP listener, with certificate files reloaded when they change.

```yaml
listen:
  tcp: 0.0.0.0:7070
  tls:
    cert_file: /etc/memsidecar/tls/tls.crt      # server certificate (chain), PEM
    key_file: /etc/memsidecar/tls/tls.key       # its private key, PEM, unencrypted
    client_ca_file: /etc/memsidecar/tls/ca.crt  # CA(s) that sign client certificates
    require_client_cert: true                   # mTLS: refuse clients without one
```

The files are read and checked at start (a readable PEM chain, a key that belongs
to the leaf certificate, a readable CA bundle); every problem names the field.
gRPC asks `CertificateReloader.fetch` before every new TLS handshake: when the
files changed on disk (cert-manager rotates a mounted Secret by swapping a
symlink) and the new set is valid, new handshakes use it; connections already
open keep theirs. A new set that is invalid (a key that does not match the
certificate, e.g. half-way through a non-atomic copy) is logged once and the
previous set stays in use until the files change again.

docs/tls.md for operators.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from pydantic import model_validator

from memsidecar.sidecar.models import StrictModel

log = logging.getLogger("memsidecar.tls")

FIELD_PREFIX = "listen.tls"


class TLSConfigError(Exception):
    """The TLS files cannot be used; the message names each field and what is wrong."""


class TLSSettings(StrictModel):
    """`listen.tls`: the TCP listener serves TLS with these files (docs/tls.md)."""

    # The server certificate, PEM; a chain (leaf first, then intermediates) is fine.
    cert_file: Path
    # The private key of the leaf certificate, PEM (PKCS#8, PKCS#1 or SEC1), unencrypted.
    key_file: Path
    # PEM bundle of the CA certificates client certificates must chain to (mTLS).
    client_ca_file: Path | None = None
    # mTLS: refuse a handshake without a client certificate signed by client_ca_file.
    require_client_cert: bool = False

    @model_validator(mode="after")
    def _client_auth(self) -> TLSSettings:
        if self.require_client_cert and self.client_ca_file is None:
            raise ValueError(
                "require_client_cert is true but client_ca_file is not set: name the CA bundle "
                "that signs client certificates"
            )
        if self.client_ca_file is not None and not self.require_client_cert:
            raise ValueError(
                "client_ca_file is set but require_client_cert is false: gRPC only asks for "
                "client certificates when it requires them, so the CA would never be used; "
                "set require_client_cert: true for mTLS, or drop client_ca_file"
            )
        return self


@dataclass(frozen=True)
class TLSMaterial:
    """One checked set of TLS files, as the bytes gRPC needs."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None
    # The leaf certificate, for logs and tests.
    leaf: x509.Certificate

    @property
    def serial(self) -> int:
        return self.leaf.serial_number

    def describe(self) -> str:
        return (
            f"serial {self.leaf.serial_number:x}, subject {self.leaf.subject.rfc4514_string()}, "
            f"valid until {self.leaf.not_valid_after_utc.isoformat()}"
        )

    def grpc_configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.private_key, self.cert_chain)], root_certificates=self.client_ca
        )


def _read(path: Path, field: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TLSConfigError(f"{FIELD_PREFIX}.{field}: {path} does not exist") from None
    except IsADirectoryError:
        raise TLSConfigError(f"{FIELD_PREFIX}.{field}: {path} is a directory, not a file") from None
    except OSError as exc:
        raise TLSConfigError(
            f"{FIELD_PREFIX}.{field}: cannot read {path}: {exc.strerror}"
        ) from None
    if not data.strip():
        raise TLSConfigError(f"{FIELD_PREFIX}.{field}: {path} is empty")
    return data


def _certificates(data: bytes, path: Path, field: str) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        hint = " (it holds a private key)" if b"PRIVATE KEY-----" in data else ""
        raise TLSConfigError(
            f"{FIELD_PREFIX}.{field}: {path} holds no PEM certificate "
            f"(expected '-----BEGIN CERTIFICATE-----'){hint}"
        )
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TLSConfigError(
            f"{FIELD_PREFIX}.{field}: {path} has a PEM certificate that cannot be parsed: {exc}"
        ) from None


PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


def _private_key(data: bytes, path: Path) -> PrivateKey:
    field = f"{FIELD_PREFIX}.key_file"
    if b"PRIVATE KEY-----" not in data:
        hint = " (it holds a certificate)" if b"CERTIFICATE-----" in data else ""
        raise TLSConfigError(
            f"{field}: {path} holds no PEM private key "
            f"(expected '-----BEGIN PRIVATE KEY-----'){hint}"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSConfigError(
            f"{field}: {path} is encrypted; the sidecar needs an unencrypted key "
            "(openssl pkey -in ENCRYPTED.key -out tls.key)"
        ) from None
    except ValueError as exc:
        raise TLSConfigError(f"{field}: {path} cannot be parsed as a private key: {exc}") from None
    if not isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise TLSConfigError(
            f"{field}: {path} holds a {type(key).__name__}; use an RSA, ECDSA or Ed25519 key"
        )
    return key


def _public_der(owner: x509.Certificate | PrivateKey) -> bytes:
    return owner.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_tls_material(settings: TLSSettings, now: dt.datetime | None = None) -> TLSMaterial:
    """Read and check the files; TLSConfigError names the field of every problem found.

    A certificate outside its validity period is logged, not refused: a pod restarted
    just before its rotated certificate lands should come up and pick it up.
    """
    problems: list[str] = []
    chain = key_bytes = ca = None
    leaf: x509.Certificate | None = None
    try:
        chain = _read(settings.cert_file, "cert_file")
        leaf = _certificates(chain, settings.cert_file, "cert_file")[0]
    except TLSConfigError as exc:
        problems.append(str(exc))
    key: PrivateKey | None = None
    try:
        key_bytes = _read(settings.key_file, "key_file")
        key = _private_key(key_bytes, settings.key_file)
    except TLSConfigError as exc:
        problems.append(str(exc))
    if settings.client_ca_file is not None:
        try:
            ca = _read(settings.client_ca_file, "client_ca_file")
            _certificates(ca, settings.client_ca_file, "client_ca_file")
        except TLSConfigError as exc:
            problems.append(str(exc))
    if leaf is not None and key is not None and _public_der(leaf) != _public_der(key):
        problems.append(
            f"{FIELD_PREFIX}.key_file: {settings.key_file} is not the private key of the "
            f"certificate in {FIELD_PREFIX}.cert_file {settings.cert_file} (the first "
            "certificate in the file must be the server's own)"
        )
    if problems:
        raise TLSConfigError("cannot use the TLS files:\n  " + "\n  ".join(problems))
    assert chain is not None and key_bytes is not None and leaf is not None
    moment = now or dt.datetime.now(dt.UTC)
    if moment > leaf.not_valid_after_utc:
        log.warning(
            "%s.cert_file %s expired at %s; clients will refuse it until it is replaced",
            FIELD_PREFIX,
            settings.cert_file,
            leaf.not_valid_after_utc.isoformat(),
        )
    elif moment < leaf.not_valid_before_utc:
        log.warning(
            "%s.cert_file %s is not valid before %s; clients will refuse it until then",
            FIELD_PREFIX,
            settings.cert_file,
            leaf.not_valid_before_utc.isoformat(),
        )
    return TLSMaterial(chain, key_bytes, ca, leaf)


Signature = tuple[tuple[int, int, int, int] | None, ...]


def _stat(path: Path | None) -> tuple[int, int, int, int] | None:
    if path is None:
        return None
    try:
        # Follows symlinks: a Kubernetes Secret volume swaps its ..data link on update.
        st = os.stat(path)
    except OSError:
        return (-1, -1, -1, -1)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _digest(material: TLSMaterial) -> bytes:
    h = hashlib.sha256()
    for part in (material.cert_chain, material.private_key, material.client_ca or b""):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


class CertificateReloader:
    """The current TLS files, re-read when they change on disk.

    `fetch` is gRPC's certificate configuration fetcher: it runs before every new
    handshake (on a gRPC thread), costs three stat calls when nothing changed, and
    returns a new configuration only when the files hold a different, valid set.
    """

    def __init__(
        self,
        settings: TLSSettings,
        loader: Callable[[TLSSettings], TLSMaterial] = load_tls_material,
    ) -> None:
        self.settings = settings
        self._loader = loader
        self._lock = threading.Lock()
        self._signature = self._files_signature()
        # Raises TLSConfigError: a sidecar never starts with unusable files.
        self.current = loader(settings)
        self._digest = _digest(self.current)
        # The signature of files that failed to load, so each bad state is logged once.
        self._rejected: Signature | None = None
        self.reloads = 0

    def _files_signature(self) -> Signature:
        s = self.settings
        return (_stat(s.cert_file), _stat(s.key_file), _stat(s.client_ca_file))

    def check(self) -> TLSMaterial | None:
        """The new material if the files changed into a different valid set, else None."""
        with self._lock:
            signature = self._files_signature()
            if signature == self._signature or signature == self._rejected:
                return None
            try:
                material = self._loader(self.settings)
            except TLSConfigError as exc:
                self._rejected = signature
                log.warning("TLS files changed but cannot be used; keeping %s: %s", self, exc)
                return None
            self._signature = signature
            self._rejected = None
            digest = _digest(material)
            if digest == self._digest:
                return None  # touched, same content
            self._digest = digest
            self.current = material
            self.reloads += 1
            log.info("TLS certificate reloaded: %s", material.describe())
            return material

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            material = self.check()
        except Exception:
            # Never break handshakes: keep the current configuration.
            log.exception("checking the TLS files for changes failed; keeping the current ones")
            return None
        return material.grpc_configuration() if material is not None else None

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.current.grpc_configuration(),
            # grpc-stubs omit the None ("no change") the fetcher may return.
            self.fetch,  # type: ignore[arg-type]
            require_client_authentication=self.settings.require_client_cert,
        )

    def __str__(self) -> str:
        mtls = "client certificates required" if self.settings.require_client_cert else "no mTLS"
        return f"the certificate with {self.current.describe()} ({mtls})"
