"""A per-run certificate authority and node certificate, like PVE's pve-root-ca.pem / pve-ssl.pem.

Clients either trust ``ca_file`` (TLS verified as usual) or pin ``fingerprint`` (the SHA-256 of
the node certificate, ``AA:BB:...`` as PVE shows it).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class NodeCert:
    ca_file: Path  # the CA certificate (trust this, or pin the fingerprint)
    cert_file: Path  # node certificate followed by the CA (what the server presents)
    key_file: Path
    fingerprint: str  # SHA-256 of the node certificate, colon-separated upper-case hex


def _name(cn: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_node_cert(directory: Path, node: str = "pve") -> NodeCert:
    return make_cluster_certs(directory, [(node, "127.0.0.1")])[node]


def make_cluster_certs(directory: Path, nodes: list[tuple[str, str]]) -> dict[str, NodeCert]:
    """One CA (pve-root-ca.pem, shared by the cluster) and a certificate per node (name, address), as
    pve-cluster's gen_pve_ssl_cert makes them: the node's names and its address as subject alt names."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Proxmox Virtual Environment (pvesim)", "PVE Cluster Manager CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file = directory / "pve-root-ca.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    out: dict[str, NodeCert] = {}
    for node, address in nodes:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{node}.pvesim.invalid", "PVE Cluster Node"))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName(node),
                        x509.IPAddress(ipaddress.ip_address(address)),
                        x509.IPAddress(ipaddress.ip_address("::1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        node_dir = directory if len(nodes) == 1 else directory / node
        node_dir.mkdir(parents=True, exist_ok=True)
        cert_file = node_dir / "pve-ssl.pem"
        key_file = node_dir / "pve-ssl.key"
        cert_file.write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
        key_file.touch(mode=0o600)
        key_file.write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        digest = cert.fingerprint(hashes.SHA256()).hex().upper()
        fingerprint = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
        out[node] = NodeCert(ca_file, cert_file, key_file, fingerprint)
    return out
