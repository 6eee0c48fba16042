"""Endpoint keys (table endpoint_keys): a caller's credential for one endpoint, made by its team.

`fabric endpoint key create NAME` prints a new key once; the store keeps only its SHA-256 (a key is
`fek_` and 32 random bytes from `secrets`, so a plain hash is all it needs: nothing to guess, no
password to stretch). The gateway serves an endpoint whose `access` is `token` to a request carrying
`Authorization: Bearer <key>` of that endpoint (and the team that made it), until the key is revoked.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, String, Text
from sqlmodel import Field, SQLModel, col, select

from inferofabric.store.db import Store
from inferofabric.store.tables import utcnow

PREFIX = "fek_"


class EndpointKeyRow(SQLModel, table=True):
    __tablename__ = "endpoint_keys"
    id: str = Field(primary_key=True, max_length=16)  # shown by `key list`, named by `key revoke`
    endpoint: str = Field(index=True, max_length=63)
    team: str = Field(max_length=63)  # the endpoint's team when it was made: a key serves only that team's
    digest: str = Field(sa_column=Column(String(64), unique=True, nullable=False))  # sha256 of the key, hex
    label: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_by: str = Field(max_length=255)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    revoked_by: str | None = Field(default=None, max_length=255)


@dataclass(frozen=True)
class KeyGrant:
    """What an active key serves (the gateway's view: no secret in it)."""

    id: str
    endpoint: str
    team: str


def digest(key: str) -> str:
    return hashlib.sha256(key.strip().encode()).hexdigest()


def looks_like_key(text: str) -> bool:
    return text.startswith(PREFIX)


def create_key(store: Store, endpoint: str, team: str, created_by: str, label: str = "") -> tuple[str, EndpointKeyRow]:
    """A new key for `endpoint`: returns the key (shown once, never stored) and its row."""
    key = PREFIX + secrets.token_urlsafe(32)
    row = EndpointKeyRow(id=secrets.token_hex(4), endpoint=endpoint, team=team, digest=digest(key), label=label,
                         created_by=created_by)
    with store.session(write=True) as s:
        s.add(row)
        s.commit()
    return key, row


def list_keys(store: Store, endpoint: str) -> list[EndpointKeyRow]:
    with store.session() as s:
        return list(s.exec(select(EndpointKeyRow).where(EndpointKeyRow.endpoint == endpoint)
                           .order_by(col(EndpointKeyRow.created_at))).all())


def revoke_key(store: Store, endpoint: str, key_id: str, revoked_by: str) -> EndpointKeyRow | None:
    """Revoke one key of `endpoint` (None: no such key). Revoking twice keeps the first time."""
    with store.session(write=True) as s:
        row = s.get(EndpointKeyRow, key_id)
        if row is None or row.endpoint != endpoint:
            return None
        if row.revoked_at is None:
            row.revoked_at, row.revoked_by = utcnow(), revoked_by
            s.add(row)
            s.commit()
        return row


def active_keys(store: Store) -> dict[str, KeyGrant]:
    """Every key not revoked, by digest (the gateway keeps this and reads it again every second)."""
    with store.session() as s:
        rows = s.exec(select(EndpointKeyRow.digest, EndpointKeyRow.id, EndpointKeyRow.endpoint, EndpointKeyRow.team)
                      .where(col(EndpointKeyRow.revoked_at).is_(None))).all()
    return {row[0]: KeyGrant(id=row[1], endpoint=row[2], team=row[3]) for row in rows}
