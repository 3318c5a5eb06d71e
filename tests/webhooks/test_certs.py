"""Webhook certificates made with `cryptography`: a CA, a serving cert it signed, the SANs."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from memsidecar.webhooks.certs import (
    CertificateBundle,
    covers,
    ensure_certificates,
    generate_certificates,
    read_certificates,
    service_dns_names,
    write_certificates,
)

NAMES = service_dns_names("memsidecar-webhook", "memsidecar-system")


def test_service_dns_names() -> None:
    assert NAMES == [
        "memsidecar-webhook",
        "memsidecar-webhook.memsidecar-system",
        "memsidecar-webhook.memsidecar-system.svc",
        "memsidecar-webhook.memsidecar-system.svc.cluster.local",
    ]


def test_serving_cert_is_signed_by_the_ca_and_names_every_san() -> None:
    bundle = generate_certificates(NAMES, ["127.0.0.1", "::1"])
    ca = x509.load_pem_x509_certificate(bundle.ca_cert_pem)
    cert = x509.load_pem_x509_certificate(bundle.cert_pem)
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == NAMES
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    key = serialization.load_pem_private_key(bundle.key_pem, password=None)
    assert key.public_key() == cert.public_key()
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - now > datetime.timedelta(days=364)


def test_another_ca_does_not_verify_the_cert() -> None:
    one = generate_certificates(["a.example"])
    other = generate_certificates(["a.example"])
    cert = x509.load_pem_x509_certificate(one.cert_pem)
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(other.ca_cert_pem))


def test_a_tls_client_trusting_the_ca_accepts_the_chain(tmp_path: Path) -> None:
    """Python's ssl (OpenSSL) loads the key pair and verifies the name against the CA."""
    paths = write_certificates(generate_certificates(["webhook.local"], ["127.0.0.1"]), tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(paths.cert, paths.key)
    client = ssl.create_default_context(cafile=str(paths.ca_cert))
    c_out, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_out, s_out, server_hostname="webhook.local")
    s = server.wrap_bio(s_out, c_out, server_side=True)
    for _ in range(10):
        for side in (c, s):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        if c.version() and s.version():
            break
    assert c.version() is not None
    peer = c.getpeercert()
    assert peer is not None
    assert peer["subjectAltName"] == (
        ("DNS", "webhook.local"),
        ("IP Address", "127.0.0.1"),
    )


def test_files_are_written_with_private_keys_private(tmp_path: Path) -> None:
    bundle = generate_certificates(["x.svc"])
    paths = write_certificates(bundle, tmp_path / "certs")
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.cert.stat().st_mode) == 0o644
    assert read_certificates(tmp_path / "certs") == bundle
    assert bundle.ca_bundle == bundle.ca_cert_pem


def test_ensure_reuses_valid_certs_and_replaces_others(tmp_path: Path) -> None:
    first, _, created = ensure_certificates(tmp_path, NAMES)
    assert created
    again, _, created = ensure_certificates(tmp_path, NAMES)
    assert not created and again == first
    # A name the cert does not carry → a new set.
    more, _, created = ensure_certificates(tmp_path, [*NAMES, "extra.example"])
    assert created and more.ca_cert_pem != first.ca_cert_pem
    assert covers(more, ["extra.example"])
    # About to expire → a new set.
    assert not covers(more, NAMES, renew_before=datetime.timedelta(days=400))


def test_covers_rejects_a_mismatched_key_or_foreign_ca() -> None:
    one = generate_certificates(["a.example"], ["10.0.0.1"])
    other = generate_certificates(["a.example"])
    assert covers(one, ["a.example"], ["10.0.0.1"])
    assert not covers(one, ["a.example"], ["10.0.0.2"])
    assert not covers(
        CertificateBundle(one.ca_cert_pem, one.ca_key_pem, one.cert_pem, other.key_pem),
        ["a.example"],
    )
    assert not covers(
        CertificateBundle(other.ca_cert_pem, one.ca_key_pem, one.cert_pem, one.key_pem),
        ["a.example"],
    )
    assert not covers(CertificateBundle(b"junk", b"", b"junk", b""), ["a.example"])


def test_needs_a_name() -> None:
    with pytest.raises(ValueError, match="at least one DNS name or IP"):
        generate_certificates([])
