"""Self-signed CA and webhook serving certificate, made with `cryptography`.

kopf's own certificate helper needs oscrypto, which fails on OpenSSL 3 (Debian
bookworm); this does the same with `cryptography`. The CA certificate is the
webhook configuration's caBundle; the serving certificate carries the Service's
DNS names (and any IPs, e.g. 127.0.0.1 for a webhook run as a local process).

`ensure_certificates(directory, ...)` reuses the files already there while they
cover the requested names and stay valid long enough, so an operator restart keeps
the same CA (and caBundle); otherwise it writes a fresh set.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
DEFAULT_VALID_DAYS = 365
# Regenerate when less than this is left.
DEFAULT_RENEW_BEFORE = datetime.timedelta(days=30)
# Tolerated clock skew: certificates are valid from a little before "now".
BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class CertificateBundle:
    """PEM bytes of a CA and a serving certificate it signed."""

    ca_cert_pem: bytes
    ca_key_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @property
    def ca_bundle(self) -> bytes:
        """What goes into a webhook configuration's caBundle (base64 of this, in YAML)."""
        return self.ca_cert_pem


@dataclass(frozen=True)
class CertificatePaths:
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path


def service_dns_names(
    service: str, namespace: str, cluster_domain: str = "cluster.local"
) -> list[str]:
    """The names a Service is reached by: svc, svc.ns, svc.ns.svc, svc.ns.svc.<domain>."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.{cluster_domain}",
    ]


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _sans(dns_names: Sequence[str], ip_addresses: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    return names


def generate_certificates(
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    *,
    common_name: str | None = None,
    valid_days: int = DEFAULT_VALID_DAYS,
    now: datetime.datetime | None = None,
) -> CertificateBundle:
    """A fresh CA (ECDSA P-256) and a serving certificate for the given names and IPs."""
    if not dns_names and not ip_addresses:
        raise ValueError("give at least one DNS name or IP address for the serving certificate")
    if valid_days < 1:
        raise ValueError(f"valid_days must be at least 1, got {valid_days}")
    start = (now or datetime.datetime.now(datetime.UTC)) - BACKDATE
    end = start + BACKDATE + datetime.timedelta(days=valid_days)
    cn = common_name or (dns_names[0] if dns_names else ip_addresses[0])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "memsidecar"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"memsidecar webhook CA for {cn}"[:64]),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn[:64])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_sans(dns_names, ip_addresses)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return CertificateBundle(
        ca_cert_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        ca_key_pem=_key_pem(ca_key),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=_key_pem(key),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically (temp file + rename) with `mode`, so a reader never sees half a key."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def certificate_paths(directory: Path) -> CertificatePaths:
    return CertificatePaths(
        ca_cert=directory / CA_CERT_FILE,
        ca_key=directory / CA_KEY_FILE,
        cert=directory / CERT_FILE,
        key=directory / KEY_FILE,
    )


def write_certificates(bundle: CertificateBundle, directory: Path) -> CertificatePaths:
    """Write ca.crt, ca.key, tls.crt, tls.key into `directory` (keys mode 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = certificate_paths(directory)
    _write(paths.ca_key, bundle.ca_key_pem, 0o600)
    _write(paths.key, bundle.key_pem, 0o600)
    _write(paths.ca_cert, bundle.ca_cert_pem, 0o644)
    _write(paths.cert, bundle.cert_pem, 0o644)
    return paths


def read_certificates(directory: Path) -> CertificateBundle:
    return CertificateBundle(
        ca_cert_pem=(directory / CA_CERT_FILE).read_bytes(),
        ca_key_pem=(directory / CA_KEY_FILE).read_bytes(),
        cert_pem=(directory / CERT_FILE).read_bytes(),
        key_pem=(directory / KEY_FILE).read_bytes(),
    )


def covers(
    bundle: CertificateBundle,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    *,
    renew_before: datetime.timedelta = DEFAULT_RENEW_BEFORE,
    now: datetime.datetime | None = None,
) -> bool:
    """Whether the serving certificate is signed by the CA, names every DNS name and IP,
    matches its key, and stays valid for at least `renew_before`."""
    try:
        ca = x509.load_pem_x509_certificate(bundle.ca_cert_pem)
        cert = x509.load_pem_x509_certificate(bundle.cert_pem)
        key = serialization.load_pem_private_key(bundle.key_pem, password=None)
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    pub = key.public_key()
    if pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        return False
    moment = now or datetime.datetime.now(datetime.UTC)
    if moment < cert.not_valid_before_utc or moment + renew_before > cert.not_valid_after_utc:
        return False
    if moment + renew_before > ca.not_valid_after_utc:
        return False
    have_dns = set(sans.get_values_for_type(x509.DNSName))
    have_ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    want_ips = {str(ipaddress.ip_address(ip)) for ip in ip_addresses}
    return set(dns_names) <= have_dns and want_ips <= have_ips


def ensure_certificates(
    directory: Path,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    *,
    valid_days: int = DEFAULT_VALID_DAYS,
    renew_before: datetime.timedelta = DEFAULT_RENEW_BEFORE,
) -> tuple[CertificateBundle, CertificatePaths, bool]:
    """The certificates in `directory`, reused if they still cover the names and are not
    about to expire, else freshly generated and written. Returns (bundle, paths, created)."""
    try:
        existing = read_certificates(directory)
    except OSError:
        existing = None
    if existing is not None and covers(
        existing, dns_names, ip_addresses, renew_before=renew_before
    ):
        return existing, certificate_paths(directory), False
    bundle = generate_certificates(dns_names, ip_addresses, valid_days=valid_days)
    return bundle, write_certificates(bundle, directory), True
