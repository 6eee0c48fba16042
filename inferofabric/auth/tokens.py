"""Tokens: the fabric's API keys.

A token (`fabric token create`) is `<grant>~<secret>`: the grant is a JWT signed by the fabric's key
(subject, role, team or pool, expiry, id); the secret is derived from the fabric's key and the token
id, so the fabric can recompute it and nobody else can. A client sends its token as Temporal's API
key (`authorization: Bearer <token>`) to the fabric's front door (inferofabric/door), which checks
it on every call and writes the verified identity into the request's Temporal header. The token
never enters workflow history; the identity the door writes there grants nothing to whoever reads
it, because the door strips any identity a caller sends and nobody but the control plane reaches
Temporal itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt

ALGORITHM = "HS256"
ROLES = ("admin", "operator", "member")
SYSTEM = "system"  # the fabric's own parts (workers, agents); never handed to people
AGENT = "agent"  # a pool's agent: polls and answers only `pool.<its pool>` (the token names the pool)
SEPARATOR = "~"
KEY_FILE = "auth.key"
ADMIN_TOKEN_FILE = "admin.token"


class AuthError(Exception):
    """A request without a valid identity, or one whose role does not allow it."""


@dataclass(frozen=True)
class Identity:
    subject: str
    role: str
    team: str | None = None
    token_id: str = ""
    expires: float = 0.0  # the token's expiry (epoch seconds): the gate refuses a start after it
    pool: str | None = None  # an agent's pool

    def describe(self) -> str:
        return f"{self.subject} ({self.role}{' of ' + self.team if self.team else ''})"


def signing_key(home: Path) -> bytes:
    """`$FABRIC_AUTH_KEY`, else `$FABRIC_HOME/auth.key` (created once, mode 0600). Give every worker
    of one fabric the same key; agents need none (they run no workflows)."""
    if os.environ.get("FABRIC_AUTH_KEY"):
        return os.environ["FABRIC_AUTH_KEY"].encode()
    path = home / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return path.read_bytes().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_bytes().strip()


def _token_secret(key: bytes, token_id: str) -> str:
    return hmac.new(key, f"fabric-token:{token_id}".encode(), hashlib.sha256).hexdigest()


def create_token(key: bytes, role: str, *, team: str | None = None, subject: str | None = None,
                 ttl: timedelta = timedelta(days=30), now: float, pool: str | None = None) -> str:
    if role not in (*ROLES, SYSTEM, AGENT):
        raise ValueError(f"unknown role {role!r}; one of {', '.join((*ROLES, AGENT))}")
    if role == "member" and not team:
        raise ValueError("a member token needs --team")
    if role == AGENT and not pool:
        raise ValueError("an agent token needs --pool (an agent serves one pool)")
    token_id = uuid.uuid4().hex
    claims: dict[str, Any] = {"sub": subject or f"{role}-{token_id[:8]}", "role": role, "jti": token_id,
                              "iat": int(now), "exp": int(now + ttl.total_seconds())}
    if team:
        claims["team"] = team
    if pool:
        claims["pool"] = pool
    grant = jwt.encode(claims, key, algorithm=ALGORITHM)
    return f"{grant}{SEPARATOR}{_token_secret(key, token_id)}"


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a token as written (not verified: for the CLI to say who it is)."""
    grant = token.strip().split(SEPARATOR, 1)[0]
    try:
        return dict(jwt.decode(grant, options={"verify_signature": False}))
    except jwt.PyJWTError as error:
        raise AuthError(f"not a fabric token: {error}") from None


def verify_token(key: bytes, token: str, *, now: float) -> Identity:
    """The identity a token proves, or AuthError: the grant must be signed with `key`, unexpired,
    and the secret half must be the one the fabric derives for its id (constant-time compare)."""
    grant, sep, secret = token.strip().partition(SEPARATOR)
    if not sep or not secret:
        raise AuthError("not a fabric token (expected the text `fabric token create` printed)")
    try:
        claims = jwt.decode(grant, key, algorithms=[ALGORITHM], options=_NO_CLOCK)
    except jwt.PyJWTError:
        raise AuthError("the token is not one this fabric issued") from None
    if not hmac.compare_digest(secret.encode(), _token_secret(key, str(claims.get("jti", ""))).encode()):
        raise AuthError("the token is not one this fabric issued")
    expires = float(claims.get("exp", 0))
    if expires < now:
        raise AuthError(f"the token of {claims.get('sub')} has expired")
    role = str(claims.get("role", ""))
    if role not in (*ROLES, SYSTEM, AGENT):
        raise AuthError(f"the token has an unknown role {role!r}")
    return Identity(subject=str(claims.get("sub", "?")), role=role, team=claims.get("team"),
                    token_id=str(claims.get("jti", "")), expires=expires, pool=claims.get("pool"))


_NO_CLOCK: Any = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}


def admin_token_path(home: Path) -> Path:
    return home / ADMIN_TOKEN_FILE


def ensure_admin_token(home: Path, now: float) -> str:
    """The embedded stack's first admin token, written once under FABRIC_HOME (mode 0600)."""
    path = admin_token_path(home)
    if path.exists():
        return path.read_text().strip()
    token = create_token(signing_key(home), "admin", subject="admin", ttl=timedelta(days=365), now=now)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token
