"""The audit log's writer: the gate decides inside workflow code, where no I/O may happen, so it
hands each record to this sink, and a thread of the worker writes them to the store in batches
(every 200 ms). A row's `dedupe` key (run, history position, action) makes a record written twice
(a workflow task retried) one row. A worker that dies loses at most its last unflushed batch."""

from __future__ import annotations

import logging
import queue
import threading
from datetime import datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from inferofabric.auth.roles import Request
from inferofabric.auth.tokens import Identity
from inferofabric.store.db import Store, as_utc
from inferofabric.store.tables import AuditRow

log = logging.getLogger(__name__)
FLUSH_SECONDS = 0.2

# Actions as people say them (the audit log's `action` column).
NAMES = {"start:WorkloadWorkflow": "submit", "start:EndpointWorkflow": "endpoint deploy", "update:cancel": "cancel",
         "signal:request_cancel": "cancel", "update:set_priority": "priority", "update:approve": "approve",
         "update:scale": "endpoint scale", "update:update": "endpoint update", "update:delete": "endpoint delete"}


def action_name(action: str) -> str:
    return NAMES.get(action, action.removeprefix("control:"))


class AuditSink:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="fabric-audit", daemon=True)
        self._thread.start()

    def put(self, *, at: datetime, identity: Identity | None, request: Request, result: str, detail: str,
            key: str) -> None:
        self._queue.put({
            "at": as_utc(at), "identity": identity.subject if identity else "-",
            "role": identity.role if identity else "-", "team": (identity.team if identity else None) or request.team,
            "action": action_name(request.action), "target": request.subject or request.target,
            "result": result, "detail": detail[:2000], "dedupe": key[:255],
        })

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        stop = False
        while not stop:
            batch: list[dict[str, Any]] = []
            try:
                item = self._queue.get(timeout=FLUSH_SECONDS)
                while True:
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            if batch:
                self._write(batch)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        insert = sqlite_insert if self.store.is_sqlite else pg_insert
        statement = insert(AuditRow).values(batch).on_conflict_do_nothing(index_elements=["dedupe"])
        try:
            with self.store.session(write=True) as session:
                session.execute(statement)
                session.commit()
        except Exception:  # the log must never take the worker down; say so loudly instead
            log.exception("could not write %d audit records", len(batch))


def audit_entries(store: Store, limit: int = 100, identity: str | None = None,
                  team: str | None = None) -> list[dict[str, Any]]:
    """The newest `limit` rows, oldest first; only `identity`'s, only `team`'s when given."""
    from sqlmodel import col, select

    with store.session() as session:
        query = select(AuditRow).order_by(col(AuditRow.id).desc()).limit(limit)
        if identity:
            query = query.where(AuditRow.identity == identity)
        if team:
            query = query.where(AuditRow.team == team)
        rows = list(session.exec(query))
    return [{"time": as_utc(r.at).isoformat(), "identity": r.identity, "role": r.role, "team": r.team,
             "action": r.action, "target": r.target, "result": r.result, "detail": r.detail} for r in reversed(rows)]
