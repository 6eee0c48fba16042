"""Sealed secrets: values are encrypted (Fernet) when stored and opened only where a job is launched.

Workflow inputs, history, search attributes and logs only ever see the sealed text. The key comes
from $FABRIC_SECRET_KEY (a Fernet key; give the same key to agents), else a key file created once
under $FABRIC_HOME (mode 0600). A pool may be given its own key with
$FABRIC_SECRET_KEY_<POOL> (upper case, '-' as '_'): secrets scoped to that pool are sealed with it,
so only that pool's agent can open them.

Secrets have owners: a team (its members set it, its workloads use it, and those of the teams it is
shared with), or the fabric itself (`team` None: set by an admin, used for pools' credentials, never
by a workload). A workload that names a secret it may not use fails before anything is opened.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from inferofabric.settings import fabric_home

FABRIC_OWNER = "fabric"  # how the fabric's own secrets' owner is shown


class SecretError(ValueError):
    """A secret that cannot be opened (wrong key), is missing, or is not the workload's to use."""


def owner_of(team: str | None) -> str:
    return team or FABRIC_OWNER


def shared_teams(shared_with: str | None) -> list[str]:
    return [t for t in (shared_with or "").split(",") if t]


def check_use(name: str, owner_team: str | None, shared_with: str | None, workload_team: str) -> None:
    """Raise SecretError (one line, not retryable) unless a workload of `workload_team` may use the
    secret: its own team's, or one shared with its team; never another team's or the fabric's own."""
    if owner_team is not None and (owner_team == workload_team or workload_team in shared_teams(shared_with)):
        return
    whose = "the fabric's own (admin only)" if owner_team is None else f"team {owner_team!r}'s"
    raise SecretError(f"secret {name!r} is {whose}, not team {workload_team!r}'s: a workload may use only its "
                      f"own team's secrets (or ones shared with it: `fabric secret set {name} --team "
                      f"{owner_team or 'T'} --share-with {workload_team}`)")


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
