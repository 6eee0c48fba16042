"""The store's own facts (table fabric_meta): its identity and the configuration applied to it."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError

from inferofabric.store.db import Store
from inferofabric.store.tables import MetaRow, utcnow

INSTANCE = "instance_id"
APPLIED_CONFIG = "applied_config"


def get_meta(store: Store, key: str) -> Any | None:
    with store.session() as s:
        row = s.get(MetaRow, key)
        return json.loads(row.value) if row is not None else None


def set_meta(store: Store, key: str, value: Any) -> None:
    with store.session(write=True) as s:
        row = s.get(MetaRow, key) or MetaRow(key=key, value="")
        row.value = json.dumps(value)
        row.updated_at = utcnow()
        s.add(row)
        s.commit()


def instance_id(store: Store) -> str:
    """A random id made on first use and kept: the workers of one store carry it in their identity,
    so a worker of another store on the same task queue is recognised (and refused)."""
    found = get_meta(store, INSTANCE)
    if isinstance(found, str):
        return found
    made = uuid.uuid4().hex[:12]
    try:
        with store.session(write=True) as s:
            s.add(MetaRow(key=INSTANCE, value=json.dumps(made)))
            s.commit()
    except IntegrityError:  # another process made it first: theirs stands
        pass
    found = get_meta(store, INSTANCE)
    assert isinstance(found, str)
    return found
