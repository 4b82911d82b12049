"""Throw-away CA and server certificate for the TLS ports of the test servers.

Tests must verify certificates the way production does (no ``CERT_NONE`` shortcuts), so we
make a tiny CA and a ``localhost``/``127.0.0.1`` leaf signed by it; clients trust ``ca_file``.
A CA plus leaf (rather than one self-signed leaf) keeps strict X.509 checking of newer
Pythons/OpenSSLs happy. EC P-256 keys are generated in milliseconds.

The ``cryptography`` package is used when installed, otherwise the ``openssl`` command.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_NAMES = ("localhost",)
SERVER_IPS = ("127.0.0.1",)


@dataclass(frozen=True)
class SelfSignedCertificate:
    """PEM files of a test CA and of a server certificate it signed."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting the leaf certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only the test CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_certificate(directory: Path) -> SelfSignedCertificate:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` into *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    result = SelfSignedCertificate(
        ca_file=directory / "ca.pem",
        cert_file=directory / "server.pem",
        key_file=directory / "server.key",
    )
    try:
        import cryptography  # noqa: F401  (only probing whether it is installed)
    except ImportError:
        _make_with_openssl(directory, result)
    else:
        _make_with_cryptography(result)
    return result


def _make_with_cryptography(out: SelfSignedCertificate) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(days=7)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailroute test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in SERVER_NAMES]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAMES[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    out.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    out.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _make_with_openssl(directory: Path, out: SelfSignedCertificate) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("neither the cryptography package nor the openssl command is available")
    ca_key = directory / "ca.key"
    csr = directory / "server.csr"
    extensions = directory / "server.ext"
    alt_names = [f"DNS:{name}" for name in SERVER_NAMES] + [f"IP:{ip}" for ip in SERVER_IPS]
    extensions.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        f"subjectAltName = {', '.join(alt_names)}\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
    )
    new_ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    # fmt: off
    commands = [
        [openssl, "req", "-x509", *new_ec_key, "-keyout", ca_key, "-out", out.ca_file,
         "-days", "7", "-subj", "/CN=mailroute test CA",
         "-addext", "basicConstraints = critical, CA:TRUE, pathlen:0",
         "-addext", "keyUsage = critical, keyCertSign, cRLSign"],
        [openssl, "req", *new_ec_key, "-keyout", out.key_file, "-out", csr,
         "-subj", f"/CN={SERVER_NAMES[0]}"],
        [openssl, "x509", "-req", "-in", csr, "-CA", out.ca_file, "-CAkey", ca_key,
         "-set_serial", str(secrets.randbits(63) + 1), "-days", "7",
         "-sha256", "-extfile", extensions, "-out", out.cert_file],
    ]
    # fmt: on
    for command in commands:
        completed = subprocess.run(
            [str(part) for part in command], capture_output=True, text=True, check=False
        )
        if completed.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{completed.stderr}")
