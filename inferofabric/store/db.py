"""The store: one class over sqlmodel that every activity and the embedded stack use.

SQLite by default (a file under FABRIC_HOME), PostgreSQL with FABRIC_DATABASE_URL. Placement runs
decide-and-reserve in one serialized transaction (BEGIN IMMEDIATE on SQLite, an advisory
transaction lock on PostgreSQL), which is what keeps concurrent placements from overcommitting.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event, text
from sqlmodel import Session, col, create_engine, func, select

from inferofabric.models.common import Health
from inferofabric.models.policy import PlacementPolicy
from inferofabric.models.pool import PoolSpec
from inferofabric.models.status import Decision, HealthEvent, PoolStatus, PoolView
from inferofabric.store.tables import (
    HealthEventRow,
    PlacementRow,
    PolicyRow,
    PoolRow,
    ReservationRow,
    SecretRow,
    utcnow,
)

PLACEMENT_LOCK_KEY = 0x1F4B_F00D  # PostgreSQL advisory lock id for placement transactions
MIGRATIONS = Path(__file__).parent / "migrations"


class NotFound(LookupError):
    """A pool, policy or secret that does not exist (shown to users as a one-line error)."""


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below control transactions
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Writers take the write lock up front: a deferred transaction that reads and then writes can
        # fail with SQLITE_BUSY under concurrency instead of waiting its turn.
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            _sqlite_setup(self.engine)
        else:
            self.engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
        self._local_lock = threading.Lock()

    # -- schema -------------------------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._local_lock, self.engine.begin() as connection:
            if not self.is_sqlite:
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PLACEMENT_LOCK_KEY + 1})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        bind = self.engine.execution_options(sqlite_immediate=True) if write and self.is_sqlite else self.engine
        with Session(bind, expire_on_commit=False) as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()

    # -- pools --------------------------------------------------------------------------------------
    def upsert_pool(self, spec: PoolSpec) -> None:
        with self.session(write=True) as s:
            row = s.get(PoolRow, spec.name)
            if row is None:
                s.add(PoolRow(name=spec.name, spec=spec.model_dump_json()))
            else:
                row.spec = spec.model_dump_json()
                row.updated_at = utcnow()
                s.add(row)
            s.commit()

    def delete_pool(self, name: str) -> None:
        with self.session(write=True) as s:
            row = s.get(PoolRow, name)
            if row is None:
                raise NotFound(f"no pool named {name!r}")
            active = s.exec(select(func.count()).where(ReservationRow.pool == name, col(ReservationRow.active))).one()
            if active:
                raise ValueError(f"pool {name!r} still has {active} active workload(s); drain it first")
            s.delete(row)
            s.commit()

    def pool_spec(self, name: str) -> PoolSpec:
        with self.session() as s:
            row = s.get(PoolRow, name)
            if row is None:
                raise NotFound(f"no pool named {name!r}")
            return PoolSpec.model_validate_json(row.spec)

    def pool_specs(self) -> list[PoolSpec]:
        with self.session() as s:
            return [PoolSpec.model_validate_json(r.spec) for r in s.exec(select(PoolRow).order_by(PoolRow.name))]

    def set_cordoned(self, name: str, cordoned: bool, reason: str = "") -> HealthEvent | None:
        with self.session(write=True) as s:
            row = s.get(PoolRow, name)
            if row is None:
                raise NotFound(f"no pool named {name!r}")
            before = _effective_health(row)
            row.cordoned = cordoned
            after = _effective_health(row)
            event_row = None
            if before != after:
                event_row = HealthEventRow(pool=name, from_health=before.value, to_health=after.value,
                                           reason=reason or ("cordoned by operator" if cordoned else "uncordoned"))
                s.add(event_row)
            s.add(row)
            s.commit()
            return _event(event_row) if event_row else None

    def set_health(self, name: str, health: Health, reason: str, gpus: dict[str, int] | None = None) -> HealthEvent | None:
        """Record a probed health; returns the transition event when the effective health changed."""
        with self.session(write=True) as s:
            row = s.get(PoolRow, name)
            if row is None:
                raise NotFound(f"no pool named {name!r}")
            before = _effective_health(row)
            if gpus is not None:
                row.discovered_gpus = json.dumps(gpus, sort_keys=True)
            changed = row.health != health.value
            if changed:
                row.health = health.value
                row.health_reason = reason
                row.health_since = utcnow()
            after = _effective_health(row)
            event_row = None
            if before != after:
                event_row = HealthEventRow(pool=name, from_health=before.value, to_health=after.value, reason=reason)
                s.add(event_row)
            s.add(row)
            s.commit()
            return _event(event_row) if event_row else None

    def health_events(self, pool: str | None = None, limit: int = 20) -> list[HealthEvent]:
        with self.session() as s:
            query = select(HealthEventRow).order_by(col(HealthEventRow.id).desc()).limit(limit)
            if pool:
                query = query.where(HealthEventRow.pool == pool)
            return [_event(r) for r in s.exec(query)]

    def pool_views(self, session: Session | None = None) -> list[PoolView]:
        """Every pool with its effective health and the GPUs reserved on it, as the engine sees them."""
        if session is None:
            with self.session() as s:
                return self.pool_views(s)
        used: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        rows = session.exec(
            select(ReservationRow.pool, ReservationRow.gpu_type, func.sum(ReservationRow.gpus))
            .where(col(ReservationRow.active))
            .group_by(ReservationRow.pool, ReservationRow.gpu_type)
        )
        for pool, gpu_type, total in rows:
            if gpu_type:
                used[pool][gpu_type] += int(total or 0)
        views = []
        for row in session.exec(select(PoolRow).order_by(PoolRow.name)):
            spec = PoolSpec.model_validate_json(row.spec)
            views.append(PoolView(
                name=spec.name, location=spec.location, backend=spec.backend, region=spec.region,
                gpus=_capacity(spec, row), used=dict(used.get(spec.name, {})),
                price_per_gpu_hour=spec.price_per_gpu_hour, labels=spec.labels, health=_effective_health(row),
            ))
        return views

    def pool_statuses(self) -> list[PoolStatus]:
        with self.session() as s:
            views = {v.name: v for v in self.pool_views(s)}
            statuses = []
            for row in s.exec(select(PoolRow).order_by(PoolRow.name)):
                view = views[row.name]
                statuses.append(PoolStatus(
                    name=row.name, location=view.location, backend=view.backend, region=view.region,
                    simulated=view.backend == "simulated", health=view.health,
                    health_reason="cordoned by operator" if row.cordoned else row.health_reason,
                    health_since=row.health_since, gpus=view.gpus, used=view.used,
                    price_per_gpu_hour=view.price_per_gpu_hour, labels=view.labels,
                    recent_health=self.health_events(row.name, limit=5),
                ))
            return statuses

    # -- policy -------------------------------------------------------------------------------------
    def set_policy(self, policy: PlacementPolicy) -> int:
        with self.session(write=True) as s:
            row = PolicyRow(document=policy.model_dump_json())
            s.add(row)
            s.commit()
            assert row.version is not None
            return row.version

    def active_policy(self) -> tuple[int | None, PlacementPolicy | None]:
        with self.session() as s:
            row = s.exec(select(PolicyRow).order_by(col(PolicyRow.version).desc()).limit(1)).first()
            if row is None:
                return None, None
            return row.version, PlacementPolicy.model_validate_json(row.document)

    # -- placement ----------------------------------------------------------------------------------
    @contextmanager
    def _placement_transaction(self) -> Iterator[Session]:
        # One placement at a time across every worker: SQLite's BEGIN IMMEDIATE takes the write lock
        # (see _sqlite_setup); PostgreSQL takes a transaction-scoped advisory lock.
        with self._local_lock if self.is_sqlite else _nullcontext(), self.session(write=True) as s:
            if not self.is_sqlite:
                s.exec(text("SELECT pg_advisory_xact_lock(:k)").bindparams(k=PLACEMENT_LOCK_KEY))  # type: ignore[call-overload]
            yield s

    def place(self, workload_id: str, attempt: int, decide: Callable[[list[PoolView]], Decision]) -> Decision:
        """Decide and reserve atomically. Idempotent: a retried call for the same attempt returns
        the reservation already made instead of reserving twice."""
        with self._placement_transaction() as s:
            existing = s.exec(select(ReservationRow).where(
                ReservationRow.workload_id == workload_id, ReservationRow.attempt == attempt)).first()
            if existing is not None:
                recorded = s.exec(select(PlacementRow).where(
                    PlacementRow.workload_id == workload_id, PlacementRow.attempt == attempt,
                    PlacementRow.pool == existing.pool).order_by(col(PlacementRow.id).desc())).first()
                s.rollback()
                if recorded is not None:
                    return Decision.model_validate_json(recorded.decision)
            decision = decide(self.pool_views(s))
            decision.decided_at = utcnow()
            if decision.pool is not None:
                s.add(ReservationRow(workload_id=workload_id, attempt=attempt, pool=decision.pool,
                                     gpu_type=decision.gpu_type, gpus=decision.gpus))
            last = s.exec(select(PlacementRow).where(PlacementRow.workload_id == workload_id)
                          .order_by(col(PlacementRow.id).desc()).limit(1)).first()
            if decision.pool is not None or last is None or last.pool is not None or last.attempt != attempt:
                s.add(PlacementRow(workload_id=workload_id, attempt=attempt, pool=decision.pool,
                                   decision=decision.model_dump_json()))
            s.commit()
            return decision

    def release(self, workload_id: str, attempt: int | None = None) -> int:
        """Release the workload's active reservations (one attempt, or all). Returns how many."""
        with self.session(write=True) as s:
            query = select(ReservationRow).where(ReservationRow.workload_id == workload_id, col(ReservationRow.active))
            if attempt is not None:
                query = query.where(ReservationRow.attempt == attempt)
            rows = list(s.exec(query))
            for row in rows:
                row.active = False
                row.released_at = utcnow()
                s.add(row)
            s.commit()
            return len(rows)

    def active_reservations(self, pool: str | None = None) -> list[ReservationRow]:
        with self.session() as s:
            query = select(ReservationRow).where(col(ReservationRow.active))
            if pool:
                query = query.where(ReservationRow.pool == pool)
            return list(s.exec(query))

    def all_reservations(self) -> list[ReservationRow]:
        with self.session() as s:
            return list(s.exec(select(ReservationRow).order_by(col(ReservationRow.id))))

    def decisions(self, workload_id: str) -> list[Decision]:
        with self.session() as s:
            rows = s.exec(select(PlacementRow).where(PlacementRow.workload_id == workload_id)
                          .order_by(col(PlacementRow.id)))
            return [Decision.model_validate_json(r.decision) for r in rows]

    # -- secrets ------------------------------------------------------------------------------------
    def put_secret(self, name: str, ciphertext: str, pool: str | None = None) -> None:
        with self.session(write=True) as s:
            row = s.get(SecretRow, name) or SecretRow(name=name, ciphertext=ciphertext)
            row.ciphertext = ciphertext
            row.pool = pool
            s.add(row)
            s.commit()

    def get_secret(self, name: str) -> SecretRow:
        with self.session() as s:
            row = s.get(SecretRow, name)
            if row is None:
                raise NotFound(f"no secret named {name!r}")
            return row

    def secret_names(self) -> list[tuple[str, str | None]]:
        with self.session() as s:
            return [(r.name, r.pool) for r in s.exec(select(SecretRow).order_by(SecretRow.name))]


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield


def _effective_health(row: PoolRow) -> Health:
    return Health.CORDONED if row.cordoned else Health(row.health)


def _capacity(spec: PoolSpec, row: PoolRow) -> dict[str, int]:
    """Declared inventory, capped by what the back end reports it really has (when it can tell)."""
    if not row.discovered_gpus:
        return dict(spec.gpus)
    discovered: dict[str, int] = json.loads(row.discovered_gpus)
    if not spec.gpus:
        return discovered
    return {t: min(n, discovered.get(t, 0)) for t, n in spec.gpus.items()}


def _event(row: HealthEventRow) -> HealthEvent:
    return HealthEvent(pool=row.pool, from_health=Health(row.from_health) if row.from_health else None,
                       to_health=Health(row.to_health), reason=row.reason, at=_aware(row.at))


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def get_store(url: str | None = None) -> Store:
    """One migrated Store per database URL per process (activities share it)."""
    from inferofabric.settings import database_url

    url = url or database_url()
    with _stores_lock:
        store = _stores.get(url)
        if store is None:
            store = Store(url)
            store.migrate()
            _stores[url] = store
        return store
