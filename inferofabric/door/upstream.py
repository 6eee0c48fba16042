"""How the control plane dials Temporal itself (the engine), and how the door dials it upstream.

In the production stack (docker-compose.yml) Temporal requires a client certificate (mTLS): the
worker, the gateway and the door each present their own, named by

- `FABRIC_ENGINE_TLS_CA`: the engine CA's certificate (PEM) that signed Temporal's server certificate;
- `FABRIC_ENGINE_TLS_CERT`, `FABRIC_ENGINE_TLS_KEY`: this process's client certificate and key (PEM);
- `FABRIC_ENGINE_TLS_SERVER_NAME` (optional): the name to check Temporal's certificate for, when it
  is not the host of the address dialled.

The three files go together: some set and others not is an error, never a quiet fall back to
plaintext. None set: plain, as `fabric up` dials its loopback engine. `connection.connect` uses the
same settings for the SDK client (`TLSConfig`), `Door.start` for its gRPC channel.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

CA_ENV = "FABRIC_ENGINE_TLS_CA"
CERT_ENV = "FABRIC_ENGINE_TLS_CERT"
KEY_ENV = "FABRIC_ENGINE_TLS_KEY"
SERVER_NAME_ENV = "FABRIC_ENGINE_TLS_SERVER_NAME"
FILES = (CA_ENV, CERT_ENV, KEY_ENV)


class EngineTlsError(ValueError):
    """The engine's mTLS settings are incomplete or name a file that cannot be read (one line)."""


@dataclass(frozen=True)
class EngineTls:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    server_name: str | None


def engine_tls(environ: Mapping[str, str] | None = None) -> EngineTls | None:
    """The client certificate to present to the engine, from FABRIC_ENGINE_TLS_*; None when none is set."""
    env = os.environ if environ is None else environ
    given = {name: env.get(name, "").strip() for name in FILES}
    server_name = env.get(SERVER_NAME_ENV, "").strip() or None
    if not any(given.values()):
        if server_name:
            raise EngineTlsError(f"{SERVER_NAME_ENV} is set but {', '.join(FILES)} are not (engine mTLS)")
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise EngineTlsError(f"engine mTLS needs {', '.join(FILES)} together; {', '.join(missing)} not set")
    pems: dict[str, bytes] = {}
    for name, value in given.items():
        path = Path(value).expanduser()
        try:
            pems[name] = path.read_bytes()
        except OSError as error:
            raise EngineTlsError(f"{name}={value}: cannot read it ({error.strerror or error})") from None
        if b"-----BEGIN " not in pems[name]:
            raise EngineTlsError(f"{name}={value}: not a PEM file")
    return EngineTls(pems[CA_ENV], pems[CERT_ENV], pems[KEY_ENV], server_name)


def upstream_channel(address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """The door's channel to Temporal at `address`: mTLS with FABRIC_ENGINE_TLS_*, else plaintext."""
    tls = engine_tls()
    if tls is None:
        return grpc.aio.insecure_channel(address, options=list(options))
    credentials = grpc.ssl_channel_credentials(root_certificates=tls.ca_pem, private_key=tls.key_pem,
                                               certificate_chain=tls.cert_pem)
    settings = list(options)
    if tls.server_name:
        settings.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(address, credentials, options=settings)
