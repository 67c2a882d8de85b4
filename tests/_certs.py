"""Test-only certificates, generated at test time with ``trustme`` (never committed).

One root CA signs an intermediate, which signs the server certificate (so the server
must send the chain for a client that trusts only the root) and a client certificate.
The server key is written in every format gristmill reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization

KEY_PASSWORD = "s3cret-pw"


@dataclass
class Certs:
    ca: trustme.CA  # the root clients trust
    dir: Path
    chain: Path  # server cert + intermediate
    key_pkcs8: Path
    key_traditional: Path  # PKCS#1 for RSA, SEC1 for EC
    key_encrypted: Path  # encrypted PKCS#8
    client_ca: Path  # CA file for --ssl-ca-certs
    client: trustme.LeafCert
    other_key: Path  # a key that does not match the certificate
    key_type: str

    def server_args(self, *extra: str) -> list[str]:
        return ["--ssl-certfile", str(self.chain), "--ssl-keyfile", str(self.key_pkcs8), *extra]


def make_certs(directory: Path, key_type: trustme.KeyType = trustme.KeyType.ECDSA) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    root = trustme.CA(key_type=key_type)
    inter = root.create_child_ca(key_type=key_type)
    leaf = inter.issue_cert("localhost", "127.0.0.1", key_type=key_type)
    client = root.issue_cert("client.example", common_name="gm-test-client", key_type=key_type)
    other = root.issue_cert("localhost", key_type=key_type)

    def write(name: str, data: bytes) -> Path:
        p = directory / name
        p.write_bytes(data)
        return p

    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    traditional = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSWORD.encode()),
    )
    return Certs(
        ca=root,
        dir=directory,
        chain=write("chain.pem", b"".join(c.bytes() for c in leaf.cert_chain_pems)),
        key_pkcs8=write("key.pem", pkcs8),
        key_traditional=write("key-traditional.pem", traditional),
        key_encrypted=write("key-encrypted.pem", encrypted),
        client_ca=write("client-ca.pem", root.cert_pem.bytes()),
        client=client,
        other_key=write("other-key.pem", other.private_key_pem.bytes()),
        key_type=key_type.name,
    )
