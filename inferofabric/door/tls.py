"""The door's TLS material: a CA of the fabric's own and the door's certificate signed by it
(`cryptography`; nothing home-made). Temporal's SDKs turn TLS on when given an API key, so the door
serves TLS; clients on this host trust `$FABRIC_HOME/tls/ca.pem`, others are given that file
(`--tls-ca-path`, `serverRootCACertificate`). Made once, kept (mode 0600 keys in a 0700 folder)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TLS_DIR = "tls"
CA_FILE = "ca.pem"
SERVER_NAME = "localhost"  # the name clients check when they dial an address by IP (`domain`)
VALID_FOR = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class DoorTls:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def ca_path(home: Path) -> Path:
    return home / TLS_DIR / CA_FILE


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _names(extra: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(SERVER_NAME), x509.DNSName(socket.gethostname())]
    addresses = {"127.0.0.1", "::1"}
    for name in extra:
        try:
            addresses.add(str(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in sorted(addresses)]
    return names


def ensure_door_tls(home: Path, hosts: list[str] | None = None) -> DoorTls:
    """The CA and the door's certificate under `home/tls` (made on first use)."""
    folder = home / TLS_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = {name: folder / name for name in (CA_FILE, "ca.key", "door.pem", "door.key")}
    if all(path.exists() for path in files.values()):
        return DoorTls(files[CA_FILE].read_bytes(), files["door.pem"].read_bytes(), files["door.key"].read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "InferoFabric door CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID_FOR)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    door_key = ec.generate_private_key(ec.SECP256R1())
    door_cert = (x509.CertificateBuilder()
                 .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)]))
                 .issuer_name(ca_name).public_key(door_key.public_key())
                 .serial_number(x509.random_serial_number())
                 .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID_FOR)
                 .add_extension(x509.SubjectAlternativeName(_names(hosts or [])), critical=False)
                 .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                 .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                 .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    _write(files["ca.key"], _key_pem(ca_key))
    _write(files["door.key"], _key_pem(door_key))
    _write(files["door.pem"], door_cert.public_bytes(pem))
    _write(files[CA_FILE], ca_cert.public_bytes(pem))  # written last: its presence means "complete"
    return ensure_door_tls(home)
