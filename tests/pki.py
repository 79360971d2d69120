"""Throw-away certificate authorities and certificates for the TLS tests (cryptography, EC P-256,
valid for a day)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(subject, issuer, issuer_key, *, ca: bool, sans=(), key=None):
    """(key, certificate) for ``subject``, signed by ``issuer_key`` (self-signed if None)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return key, builder.sign(issuer_key or key, hashes.SHA256())


class PKI:
    """A server CA with a server certificate, a client CA with two clients, and a rogue CA,
    written to ``folder`` as <name>.crt and <name>.key (unencrypted PKCS#8)."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(exist_ok=True)
        for ca_name in ("server-ca", "client-ca", "rogue-ca"):
            key, cert = issue(ca_name, ca_name, None, ca=True)
            self.write(ca_name, key, cert)
            setattr(self, ca_name.replace("-", "_"), (key, cert))
        loopback = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        self._leaf("server", self.server_ca, loopback)
        self._leaf("client", self.client_ca, [x509.DNSName("scraper.example")])
        self._leaf("other-client", self.client_ca, [x509.DNSName("intruder.example")])
        self._leaf("rogue-client", self.rogue_ca, [x509.DNSName("scraper.example")])

    def _leaf(self, name, ca, sans):
        ca_key, ca_cert = ca
        key, cert = issue(name, ca_cert.subject.rfc4514_string()[3:], ca_key, ca=False, sans=sans)
        self.write(name, key, cert)

    def write(self, name, key, cert):
        (self.folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.folder / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def path(self, name: str) -> str:
        return str(self.folder / name)

    def pem(self, name: str) -> str:
        return (self.folder / name).read_text()

    def client(self, name: str) -> tuple[str, str]:
        return self.path(f"{name}.crt"), self.path(f"{name}.key")
