"""Sealed secrets: values are encrypted (Fernet) when stored and opened only where a job is launched.

Workflow inputs, history, search attributes and logs only ever see the sealed text. The key comes
from $FABRIC_SECRET_KEY (a Fernet key; give the same key to agents), else a key file created once
under $FABRIC_HOME (mode 0600). A pool may be given its own key with
$FABRIC_SECRET_KEY_<POOL> (upper case, '-' as '_'): secrets scoped to that pool are sealed with it,
so only that pool's agent can open them.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from inferofabric.settings import fabric_home


class SecretError(ValueError):
    """A secret that cannot be opened (wrong key) or is missing."""


def _env_name(pool: str | None) -> str:
    return "FABRIC_SECRET_KEY" + (f"_{pool.upper().replace('-', '_')}" if pool else "")


def _key(pool: str | None = None, home: Path | None = None) -> bytes:
    if pool and os.environ.get(_env_name(pool)):
        return os.environ[_env_name(pool)].encode()
    if os.environ.get("FABRIC_SECRET_KEY"):
        return os.environ["FABRIC_SECRET_KEY"].encode()
    path = (home or fabric_home()) / "secret.key"
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    return path.read_bytes().strip()


def seal(value: str, pool: str | None = None, home: Path | None = None) -> str:
    return Fernet(_key(pool, home)).encrypt(value.encode()).decode()


def unseal(sealed: str, pool: str | None = None, home: Path | None = None) -> str:
    try:
        return Fernet(_key(pool, home)).decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise SecretError("a secret could not be opened with this worker's key "
                          f"(set {_env_name(pool)} or FABRIC_SECRET_KEY to the control plane's key)") from None
