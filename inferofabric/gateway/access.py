"""Who the gateway serves (an endpoint spec's `access`).

- `public`: anyone who reaches the gateway;
- `token` (the default): the request carries `Authorization: Bearer <credential>`, either
  - a fabric token (`fabric token create`, auth/tokens.py): signed with this fabric's key and not
    expired; any role, but a member only for its own team's endpoints, or
  - an endpoint key (`fabric endpoint key create NAME`, store/endpoint_keys.py) of this endpoint,
    made by its team and not revoked.

A refusal is 401 (no credential, or one that is not valid) or 403 (valid, but not for this
endpoint), with a one-line reason. Verified tokens are remembered (by their SHA-256) until they
expire, so a request pays for the signature check once; the active keys are read from the store
again every KEYS_REFRESH seconds (a revoked key is refused within that time), and when a request
brings a key not known: that request waits for the next read, which happens at most every
KEYS_MISS_REFRESH seconds whatever the number of unknown keys (a key made a moment ago works at once;
a flood of made-up keys costs the store two reads a second).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from inferofabric.auth.tokens import AuthError, Identity, verify_token
from inferofabric.store.endpoint_keys import KeyGrant, active_keys, digest, looks_like_key

log = logging.getLogger(__name__)
KEYS_REFRESH = 1.0
KEYS_MISS_REFRESH = 0.5
MAX_REMEMBERED = 10_000
ROLES_FOR_ANY_ENDPOINT = ("admin", "operator", "system")


@dataclass(frozen=True)
class Refusal:
    status: int  # 401 or 403
    reason: str


def bearer(header: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <credential>` header (None: none given)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def token_may_call(identity: Identity, team: str) -> Refusal | None:
    if identity.role in ROLES_FOR_ANY_ENDPOINT or (identity.role == "member" and identity.team == team):
        return None
    return Refusal(403, f"{identity.describe()} may not call team {team!r}'s endpoints")


class Access:
    def __init__(self, key: bytes | None, store: Any | None) -> None:
        self.key = key
        self.store = store  # store.db.Store, or None: no endpoint keys (fabric tokens only)
        self._tokens: dict[str, Identity] = {}
        self._keys: dict[str, KeyGrant] = {}
        self._keys_read = 0.0
        self._keys_lock = asyncio.Lock()

    async def check(self, endpoint: str, team: str, access: str, authorization: str | None) -> Refusal | None:
        """None: serve the request; else why not."""
        if access == "public":
            return None
        credential = bearer(authorization)
        if credential is None:
            return Refusal(401, f"endpoint {endpoint!r} needs `Authorization: Bearer <a fabric token or an "
                                "endpoint key>`")
        if looks_like_key(credential):
            grant = await self._key(credential)
            if grant is None:
                return Refusal(401, "the endpoint key is not valid (unknown or revoked)")
            if grant.endpoint != endpoint or grant.team != team:
                return Refusal(403, f"the endpoint key {grant.id} is not for endpoint {endpoint!r}")
            return None
        identity = self._token(credential)
        if isinstance(identity, Refusal):
            return identity
        return token_may_call(identity, team)

    def _token(self, token: str) -> Identity | Refusal:
        now = time.time()
        remembered = hashlib.sha256(token.encode()).hexdigest()
        identity = self._tokens.get(remembered)
        if identity is not None and identity.expires >= now:
            return identity
        if self.key is None:
            return Refusal(401, "this gateway has no signing key to check fabric tokens with")
        try:
            identity = verify_token(self.key, token, now=now)
        except AuthError as error:
            return Refusal(401, str(error))
        if len(self._tokens) >= MAX_REMEMBERED:
            self._tokens.clear()
        self._tokens[remembered] = identity
        return identity

    async def _key(self, key: str) -> KeyGrant | None:
        wanted = digest(key)
        found = self._keys.get(wanted)
        if found is None and self.store is not None:
            asked = time.monotonic()
            wait = self._keys_read + KEYS_MISS_REFRESH - asked
            if wait > 0:
                await asyncio.sleep(wait)
            await self.refresh_keys(unless_read_since=asked)
            found = self._keys.get(wanted)
        return found

    async def refresh_keys(self, unless_read_since: float | None = None) -> None:
        if self.store is None:
            return
        async with self._keys_lock:
            if unless_read_since is not None and self._keys_read >= unless_read_since:
                return  # another request's read began after this one asked: it saw what there is
            self._keys_read = time.monotonic()
            try:
                self._keys = await asyncio.to_thread(active_keys, self.store)
            except Exception:  # the store is away: keep the last list (the log says why)
                log.exception("gateway: reading the endpoint keys failed")

    async def refresh_loop(self) -> None:
        while True:
            if time.monotonic() - self._keys_read >= KEYS_REFRESH:
                await self.refresh_keys()
            await asyncio.sleep(KEYS_REFRESH / 2)
