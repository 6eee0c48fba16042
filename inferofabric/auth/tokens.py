"""Tokens and request proofs.

A token (`fabric token create`) is `<grant>~<secret>`: the grant is a JWT signed by the fabric's key
(subject, role, team, expiry, id); the secret is derived from the fabric's key and the token id, so
the fabric can recompute it and nobody else can. A client never sends its token: with each request
it sends a *proof*, a short-lived JWT signed with the token's secret that names the grant, the action
and the target (`start:WorkloadWorkflow` on workload `w-1`). Temporal keeps request headers in
workflow history; a proof found there is good for nothing but that same request on that same
target, for a few minutes, so the history never holds a reusable credential.

Verification is deterministic (no clock of its own: the caller passes "now", the workflow's time),
so the gate can run inside workflow code and replay gives the same answer.
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
PROOF_SECONDS = 900  # a proof is good this long after it was made (clock skew, a busy worker)
SCHEDULED = "scheduled:"  # prefix of a proof a Temporal Schedule carries for the starts it makes
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
                 ttl: timedelta = timedelta(days=30), now: float) -> str:
    if role not in (*ROLES, SYSTEM):
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if role == "member" and not team:
        raise ValueError("a member token needs --team")
    token_id = uuid.uuid4().hex
    claims: dict[str, Any] = {"sub": subject or f"{role}-{token_id[:8]}", "role": role, "jti": token_id,
                              "iat": int(now), "exp": int(now + ttl.total_seconds())}
    if team:
        claims["team"] = team
    grant = jwt.encode(claims, key, algorithm=ALGORITHM)
    return f"{grant}{SEPARATOR}{_token_secret(key, token_id)}"


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a token as written (not verified: for the CLI to say who it is)."""
    grant = token.strip().split(SEPARATOR, 1)[0]
    try:
        return dict(jwt.decode(grant, options={"verify_signature": False}))
    except jwt.PyJWTError as error:
        raise AuthError(f"not a fabric token: {error}") from None


def make_proof(token: str, action: str, target: str, *, now: float, seconds: float = PROOF_SECONDS) -> str:
    grant, sep, secret = token.strip().partition(SEPARATOR)
    if not sep or not secret:
        raise AuthError("not a fabric token (expected the text `fabric token create` printed)")
    return jwt.encode({"grant": grant, "act": action, "tgt": target, "iat": int(now), "exp": int(now + seconds)},
                      secret, algorithm=ALGORITHM)


_NO_CLOCK: Any = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}


def verify_proof(key: bytes, proof: str, action: str, target: str, *, now: float) -> Identity:
    """The identity behind a proof for exactly this action on this target, or AuthError."""
    try:
        outer = jwt.decode(proof, options={"verify_signature": False})
        claims = jwt.decode(str(outer.get("grant", "")), key, algorithms=[ALGORITHM], options=_NO_CLOCK)
    except jwt.PyJWTError:
        raise AuthError("the token is not one this fabric issued") from None
    if float(claims.get("exp", 0)) < now:
        raise AuthError(f"the token of {claims.get('sub')} has expired")
    try:
        body = jwt.decode(proof, _token_secret(key, str(claims.get("jti", ""))), algorithms=[ALGORITHM],
                          options=_NO_CLOCK)
    except jwt.PyJWTError:
        raise AuthError("the request was not signed with the token's secret") from None
    scheduled = str(body.get("act", "")).startswith(SCHEDULED)
    act = str(body.get("act", "")).removeprefix(SCHEDULED)
    tgt = str(body.get("tgt", ""))
    if act != action or not (tgt == target or (scheduled and target.startswith(tgt + "-"))):
        raise AuthError("the request's proof was made for another request")
    if float(body.get("exp", 0)) < now or float(body.get("iat", 0)) > now + PROOF_SECONDS:
        raise AuthError("the request's proof has expired (is this machine's clock right?)")
    return Identity(subject=str(claims.get("sub", "?")), role=str(claims.get("role", "")),
                    team=claims.get("team"), token_id=str(claims.get("jti", "")))


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
