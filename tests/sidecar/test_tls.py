"""TLS and mTLS on the TCP listener: start-up checks, handshakes, and certificate rotation
without a restart (real certificates made with `cryptography` in temp dirs)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from memsidecar.cli.main import main as cli
from memsidecar.client import AsyncMemSidecar, MemSidecar, RetryPolicy
from memsidecar.client.errors import UnauthenticatedError, UnavailableError
from memsidecar.client.tls import TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV, TLSFiles
from memsidecar.sidecar.auth.keys import load_private_key, write_key_pair
from memsidecar.sidecar.auth.tokens import issue_token
from memsidecar.sidecar.config import ConfigError, load_config
from memsidecar.sidecar.server import Sidecar
from memsidecar.sidecar.tls import (
    CertificateReloader,
    TLSConfigError,
    TLSSettings,
    load_tls_material,
)
from tests.support import REPO, eventually, running_sidecar, short_tmpdir, token_auth

# --- certificates -------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _pem_key(self.key)

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return cert, key


def _validity(days: float = 1.0) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)


def make_ca(name: str = "memsidecar test CA") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start, end = _validity(30)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def make_leaf(ca: Issued, name: str, server: bool = True, days: float = 1.0) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if server:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def handshake_serial(port: int, ca_file: Path, client: Issued | None = None) -> int:
    """Serial number of the certificate the server presents in a fresh TLS handshake."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["h2"])
    if client is not None:
        directory = Path(short_tmpdir())
        cert, key = client.write(directory, "client")
        context.load_cert_chain(cert, key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


# --- a sidecar serving TLS on TCP ------------------------------------------------------


@dataclass
class TLSSidecar:
    sidecar: Sidecar
    port: int
    token: str
    ca: Issued
    server: Issued
    dir: Path
    cert_file: Path
    key_file: Path
    ca_file: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> AsyncMemSidecar:
        kwargs.setdefault("token", self.token)
        return AsyncMemSidecar(
            target=self.target, retry=RetryPolicy(max_retries=0), timeout=5, **kwargs
        )

    def rotate(self, server: Issued) -> None:
        write_atomically(self.key_file, server.key_pem)
        write_atomically(self.cert_file, server.cert_pem)
        self.server = server


@contextlib.asynccontextmanager
async def tls_sidecar(
    tmp: Path, require_client_cert: bool = False, ca: Issued | None = None
) -> AsyncIterator[TLSSidecar]:
    ca = ca or make_ca()
    server = make_leaf(ca, "sidecar-1")
    tls_dir = tmp / "tls"
    cert_file, key_file = server.write(tls_dir, "tls")
    ca_file = tls_dir / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    env, token = token_auth(tmp / "keys", namespaces=("*",), ops=("*",))
    tls: dict[str, Any] = {"cert_file": str(cert_file), "key_file": str(key_file)}
    if require_client_cert:
        tls |= {"client_ca_file": str(ca_file), "require_client_cert": True}
    overrides = {
        "auth.keys": json.loads(env["MEMSIDECAR_AUTH__KEYS"]),
        "listen.tcp": "127.0.0.1:0",
        "listen.tls": tls,
    }
    async with running_sidecar(overrides) as (sidecar, _):
        port = int(sidecar.addresses[1].rpartition(":")[2])
        yield TLSSidecar(sidecar, port, token, ca, server, tls_dir, cert_file, key_file, ca_file)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[TLSSidecar]:
    async with tls_sidecar(tmp_path) as s:
        yield s


@pytest.fixture
async def mtls(tmp_path: Path) -> AsyncIterator[TLSSidecar]:
    async with tls_sidecar(tmp_path, require_client_cert=True) as s:
        yield s


async def _roundtrip(client: AsyncMemSidecar, value: str = "v") -> None:
    async with client:
        await client.kv.put("tls", "k", value)
        entry = await client.kv.get("tls", "k")
        assert entry is not None and entry.value == value


# --- handshakes ------------------------------------------------------------------------


async def test_sdk_over_tls_with_a_token_works(served: TLSSidecar) -> None:
    await _roundtrip(served.client(tls=TLSFiles(ca=served.ca_file)))


async def test_tls_still_requires_the_token(served: TLSSidecar) -> None:
    async with served.client(tls=TLSFiles(ca=served.ca_file), token=None) as client:
        with pytest.raises(UnauthenticatedError):
            await client.kv.get("tls", "k")


async def test_plaintext_client_is_refused(served: TLSSidecar) -> None:
    async with served.client() as client:
        with pytest.raises(UnavailableError):
            await client.kv.get("tls", "k")


async def test_client_trusting_another_ca_is_refused(served: TLSSidecar, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.crt"
    other.write_bytes(make_ca("someone else").cert_pem)
    async with served.client(tls=TLSFiles(ca=other)) as client:
        with pytest.raises(UnavailableError):
            await client.kv.get("tls", "k")


async def test_mtls_refuses_a_client_without_a_certificate(mtls: TLSSidecar) -> None:
    async with mtls.client(tls=TLSFiles(ca=mtls.ca_file)) as client:
        with pytest.raises(UnavailableError):
            await client.kv.get("tls", "k")


async def test_mtls_refuses_a_client_certificate_from_another_ca(
    mtls: TLSSidecar, tmp_path: Path
) -> None:
    stranger = make_leaf(make_ca("stranger CA"), "agent", server=False)
    cert, key = stranger.write(tmp_path / "stranger", "client")
    async with mtls.client(tls=TLSFiles(ca=mtls.ca_file, cert=cert, key=key)) as client:
        with pytest.raises(UnavailableError):
            await client.kv.get("tls", "k")


async def test_mtls_accepts_a_client_certificate_from_the_ca(
    mtls: TLSSidecar, tmp_path: Path
) -> None:
    cert, key = make_leaf(mtls.ca, "agent", server=False).write(tmp_path / "agent", "client")
    await _roundtrip(mtls.client(tls=TLSFiles(ca=mtls.ca_file, cert=cert, key=key)))


async def test_sdk_takes_tls_files_from_the_environment(
    mtls: TLSSidecar, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = make_leaf(mtls.ca, "agent", server=False).write(tmp_path / "agent", "client")
    monkeypatch.setenv(TLS_CA_ENV, str(mtls.ca_file))
    monkeypatch.setenv(TLS_CERT_ENV, str(cert))
    monkeypatch.setenv(TLS_KEY_ENV, str(key))
    await _roundtrip(mtls.client())


async def test_blocking_client_takes_tls_files(served: TLSSidecar) -> None:
    def blocking() -> str:
        with MemSidecar(
            target=served.target,
            token=served.token,
            tls=TLSFiles(ca=served.ca_file),
            retry=RetryPolicy(max_retries=0),
            timeout=5,
        ) as m:
            m.kv.put("tls", "sync", "yes")
            entry = m.kv.get("tls", "sync")
            return str(entry.value)

    assert await asyncio.to_thread(blocking) == "yes"


# --- rotation without restart -------------------------------------------------------------


async def test_rotated_server_certificate_is_used_by_new_connections(served: TLSSidecar) -> None:
    first = served.server.cert.serial_number
    assert await asyncio.to_thread(handshake_serial, served.port, served.ca_file) == first
    # A connection made before the rotation keeps working.
    async with served.client(tls=TLSFiles(ca=served.ca_file)) as before:
        await before.kv.put("tls", "k", "before")
        served.rotate(make_leaf(served.ca, "sidecar-2"))
        second = served.server.cert.serial_number
        assert await asyncio.to_thread(handshake_serial, served.port, served.ca_file) == second
        entry = await before.kv.get("tls", "k")
        assert entry is not None and entry.value == "before"
    await _roundtrip(served.client(tls=TLSFiles(ca=served.ca_file)), "after")
    assert served.sidecar.tls is not None and served.sidecar.tls.reloads == 1


async def test_kubernetes_secret_volume_swap_is_picked_up(tmp_path: Path) -> None:
    """Kubelet updates a mounted Secret by pointing the ..data symlink at a new directory."""
    ca = make_ca()
    volume = tmp_path / "volume"
    volume.mkdir()

    def publish(version: str, leaf: Issued) -> None:
        leaf.write(volume / version, "tls")
        link = volume / "..data_tmp"
        link.symlink_to(version)
        os.replace(link, volume / "..data")

    publish("..v1", make_leaf(ca, "v1"))
    for name in ("tls.crt", "tls.key"):
        (volume / name).symlink_to(Path("..data") / name)
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    env, _ = token_auth(tmp_path / "keys")
    overrides = {
        "auth.keys": json.loads(env["MEMSIDECAR_AUTH__KEYS"]),
        "listen.tcp": "127.0.0.1:0",
        "listen.tls": {"cert_file": str(volume / "tls.crt"), "key_file": str(volume / "tls.key")},
    }
    async with running_sidecar(overrides) as (sidecar, _):
        port = int(sidecar.addresses[1].rpartition(":")[2])
        v1 = await asyncio.to_thread(handshake_serial, port, ca_file)
        v2 = make_leaf(ca, "v2")
        publish("..v2", v2)
        assert v1 != v2.cert.serial_number
        assert await asyncio.to_thread(handshake_serial, port, ca_file) == v2.cert.serial_number


async def test_unusable_new_files_keep_the_old_certificate(
    served: TLSSidecar, caplog: pytest.LogCaptureFixture
) -> None:
    old = served.server.cert.serial_number
    new = make_leaf(served.ca, "sidecar-2")
    caplog.set_level(logging.WARNING, logger="memsidecar.tls")
    # Half a rotation: the new certificate, but still the old key.
    write_atomically(served.cert_file, new.cert_pem)
    for _ in range(2):
        assert await asyncio.to_thread(handshake_serial, served.port, served.ca_file) == old
    warnings = [r for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(warnings) == 1, "each bad state is logged once, not per handshake"
    assert "is not the private key of the certificate" in warnings[0].getMessage()
    await _roundtrip(served.client(tls=TLSFiles(ca=served.ca_file)))
    # The key arrives: the pair is complete and is used from the next handshake on.
    write_atomically(served.key_file, new.key_pem)
    serial = await asyncio.to_thread(handshake_serial, served.port, served.ca_file)
    assert serial == new.cert.serial_number


async def test_rotated_client_ca_applies_to_new_handshakes(
    mtls: TLSSidecar, tmp_path: Path
) -> None:
    new_ca = make_ca("next CA")
    cert, key = make_leaf(new_ca, "agent", server=False).write(tmp_path / "agent", "client")
    files = TLSFiles(ca=mtls.ca_file, cert=cert, key=key)
    async with mtls.client(tls=files) as client:
        with pytest.raises(UnavailableError):
            await client.kv.get("tls", "k")
    # Trust both CAs while clients move over (the bundle holds the old and the new one).
    write_atomically(mtls.ca_file, mtls.ca.cert_pem + new_ca.cert_pem)

    async def accepted() -> bool:
        async with mtls.client(tls=files) as client:
            try:
                await client.kv.put("tls", "k", "new CA")
            except UnavailableError:
                return False
            return True

    await eventually(accepted, timeout=10, interval=0.2)


def test_reloader_ignores_a_touch_without_a_change(tmp_path: Path) -> None:
    ca = make_ca()
    cert, key = make_leaf(ca, "s").write(tmp_path, "tls")
    reloader = CertificateReloader(TLSSettings(cert_file=cert, key_file=key))
    assert reloader.fetch() is None
    os.utime(cert, ns=(1, 1))
    assert reloader.fetch() is None and reloader.reloads == 0
    new = make_leaf(ca, "s2")
    write_atomically(cert, new.cert_pem)
    write_atomically(key, new.key_pem)
    assert reloader.fetch() is not None
    assert reloader.current.serial == new.cert.serial_number and reloader.reloads == 1
    assert reloader.fetch() is None


# --- start-up checks --------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    ca = make_ca()
    cert, key = make_leaf(ca, "s").write(tmp_path, "tls")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    other_key = tmp_path / "other.key"
    other_key.write_bytes(make_leaf(ca, "o").key_pem)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        make_leaf(ca, "e").key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    return {
        "cert": cert,
        "key": key,
        "ca": ca_file,
        "other_key": other_key,
        "encrypted": encrypted,
        "garbage": garbage,
        "empty": empty,
        "missing": tmp_path / "missing.pem",
        "dir": tmp_path,
    }


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"cert_file": "missing"}, "listen.tls.cert_file: {missing} does not exist"),
        ({"cert_file": "dir"}, "listen.tls.cert_file: {dir} is a directory"),
        ({"cert_file": "empty"}, "listen.tls.cert_file: {empty} is empty"),
        ({"cert_file": "key"}, "holds no PEM certificate"),
        ({"cert_file": "garbage"}, "listen.tls.cert_file: {garbage} has a PEM certificate that"),
        ({"key_file": "cert"}, "listen.tls.key_file: {cert} holds no PEM private key"),
        ({"key_file": "encrypted"}, "listen.tls.key_file: {encrypted} is encrypted"),
        ({"key_file": "other_key"}, "{other_key} is not the private key of the certificate"),
        (
            {"client_ca_file": "key", "require_client_cert": True},
            "listen.tls.client_ca_file: {key} holds no PEM certificate",
        ),
    ],
)
def test_unusable_files_are_refused_naming_the_field(
    files: dict[str, Path], settings: dict[str, Any], expected: str
) -> None:
    values: dict[str, Any] = {"cert_file": files["cert"], "key_file": files["key"]}
    values |= {k: (files[v] if isinstance(v, str) else v) for k, v in settings.items()}
    with pytest.raises(TLSConfigError) as info:
        load_tls_material(TLSSettings(**values))
    assert expected.format(**files) in str(info.value)


def test_every_problem_is_reported_at_once(files: dict[str, Path]) -> None:
    with pytest.raises(TLSConfigError) as info:
        load_tls_material(TLSSettings(cert_file=files["missing"], key_file=files["empty"]))
    assert "listen.tls.cert_file" in str(info.value) and "listen.tls.key_file" in str(info.value)


def test_good_files_load(files: dict[str, Path]) -> None:
    material = load_tls_material(
        TLSSettings(
            cert_file=files["cert"],
            key_file=files["key"],
            client_ca_file=files["ca"],
            require_client_cert=True,
        )
    )
    assert material.client_ca == files["ca"].read_bytes()


def test_an_expired_certificate_is_logged_not_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = make_leaf(make_ca(), "old").write(tmp_path, "tls")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    with caplog.at_level(logging.WARNING, logger="memsidecar.tls"):
        load_tls_material(TLSSettings(cert_file=cert, key_file=key), now=later)
    assert any("expired" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ({"tls": {"cert_file": "/c", "key_file": "/k"}}, "tls is set but tcp is not"),
        (
            {
                "tcp": "127.0.0.1:0",
                "tls": {"cert_file": "/c", "key_file": "/k", "require_client_cert": True},
            },
            "require_client_cert is true but client_ca_file is not set",
        ),
        (
            {
                "tcp": "127.0.0.1:0",
                "tls": {"cert_file": "/c", "key_file": "/k", "client_ca_file": "/ca"},
            },
            "client_ca_file is set but require_client_cert is false",
        ),
        ({"tcp": "127.0.0.1:0", "tls": {"cert_file": "/c"}}, "listen.tls.key_file"),
        ({"http": "8080"}, "http '8080' must be host:port"),
    ],
)
def test_config_errors_name_the_field(listen: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {f"listen.{k}": v for k, v in listen.items()})
    assert expected in str(info.value)


def test_serve_reports_bad_tls_files_and_exits(files: dict[str, Path], tmp_path: Path) -> None:
    env, _ = token_auth(tmp_path / "keys")
    result = CliRunner().invoke(
        cli,
        ["serve", "--socket", f"{short_tmpdir()}/m.sock", "--tcp", "127.0.0.1:0"],
        env={
            **env,
            "MEMSIDECAR_LISTEN__TLS__CERT_FILE": str(files["cert"]),
            "MEMSIDECAR_LISTEN__TLS__KEY_FILE": str(files["other_key"]),
            "MEMSIDECAR_BLOCKS__ARTIFACT__OPTIONS": json.dumps({"root": str(tmp_path / "a")}),
        },
    )
    assert result.exit_code == 1
    assert "listen.tls.key_file" in result.output
    assert "is not the private key of the certificate" in result.output


def test_tls_files_need_cert_and_key_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pass both cert and key"):
        TLSFiles(cert=tmp_path / "c")
    with pytest.raises(ValueError, match="go together"):
        TLSFiles.from_env({TLS_KEY_ENV: "/k"})
    assert TLSFiles.from_env({}) is None
    with pytest.raises(ValueError, match="cannot read the CA file"):
        TLSFiles(ca=tmp_path / "nope.crt").credentials()


def test_socket_targets_ignore_the_tls_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from memsidecar.client.tls import channel_credentials

    env = {TLS_CA_ENV: "/does/not/matter"}
    assert channel_credentials("unix:/tmp/m.sock", environ=env) is None
    with pytest.raises(ValueError, match="either tls or credentials"):
        channel_credentials("h:1", TLSFiles(), grpc.ssl_channel_credentials())


# --- docs/tls.md -------------------------------------------------------------------------

DOC = REPO / "docs" / "tls.md"


def _fenced(language: str) -> list[str]:
    pattern = rf"^```{language}\n(.*?)^```"
    return re.findall(pattern, DOC.read_text(), re.MULTILINE | re.DOTALL)


async def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, f"{args[:3]} failed:\n{text}"
    return text


@pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("bash") is None,
    reason="the doc's shell examples need bash and openssl",
)
async def test_doc_examples_make_certificates_and_connect(tmp_path: Path) -> None:
    make_certs, show_serial = _fenced("sh")
    await _run(["bash", "-euo", "pipefail", "-c", make_certs], tmp_path, {})
    config = yaml.safe_load(_fenced("yaml")[0].replace("/etc/memsidecar/", f"{tmp_path}/"))
    (tmp_path / "tls").mkdir()
    for name in ("server.crt", "server.key", "ca.crt"):
        shutil.copy(tmp_path / name, tmp_path / "tls" / name)
    keys = write_key_pair(tmp_path / "keys", "tokens-2025-06")
    token = issue_token(
        load_private_key(keys.private),
        kid="tokens-2025-06",
        tenant="default",
        agent="doc",
        namespaces=["*"],
        ops=["*"],
        ttl=600,
    )
    overrides = {
        "listen.tcp": "127.0.0.1:0",
        "listen.tls": config["listen"]["tls"],
        "auth.keys": config["auth"]["keys"],
    }
    async with running_sidecar(overrides) as (sidecar, _):
        env = {
            "MEMSIDECAR_TARGET": sidecar.addresses[1],
            "MEMSIDECAR_TOKEN": token,
            TLS_CA_ENV: "ca.crt",
            TLS_CERT_ENV: "client.crt",
            TLS_KEY_ENV: "client.key",
        }
        examples = _fenced("py")
        assert len(examples) == 3
        for code in examples:
            await _run([sys.executable, "-c", code], tmp_path, env)
        out = await _run(["bash", "-euo", "pipefail", "-c", show_serial], tmp_path, env)
        assert "serial=" in out and "notAfter=" in out
        # The served certificate is the one the doc's commands made.
        served = x509.load_pem_x509_certificate((tmp_path / "server.crt").read_bytes())
        (serial,) = re.findall(r"^serial=([0-9A-Fa-f]+)$", out, re.MULTILINE)
        assert int(serial, 16) == served.serial_number


def test_doc_error_example_is_what_the_sidecar_says(tmp_path: Path) -> None:
    (text,) = _fenced("text")
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    ca = make_ca()
    (tls_dir / "server.key").write_bytes(make_leaf(ca, "other").key_pem)
    with pytest.raises(TLSConfigError) as info:
        load_tls_material(
            TLSSettings(cert_file=tls_dir / "server.crt", key_file=tls_dir / "server.key")
        )
    assert "listen.tls.cert_file" in str(info.value)
    # The mismatch line needs a certificate to compare with.
    (tls_dir / "server.crt").write_bytes(make_leaf(ca, "s").cert_pem)
    with pytest.raises(TLSConfigError) as mismatch:
        load_tls_material(
            TLSSettings(cert_file=tls_dir / "server.crt", key_file=tls_dir / "server.key")
        )
    actual = str(info.value) + "\n" + str(mismatch.value)
    for line in text.replace("/etc/memsidecar/", f"{tmp_path}/").splitlines():
        assert line.strip() in actual, line


def test_doc_kubernetes_examples_are_yaml() -> None:
    certificate, pod = (yaml.safe_load(block) for block in _fenced("yaml")[1:])
    assert certificate["kind"] == "Certificate"
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert {"MEMSIDECAR_LISTEN__TLS__CERT_FILE", "MEMSIDECAR_LISTEN__TLS__KEY_FILE"} <= env
