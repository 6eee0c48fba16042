"""The store: one class over sqlmodel that every activity and the embedded stack use.

SQLite by default (a file under FABRIC_HOME), PostgreSQL with FABRIC_DATABASE_URL. Placement runs
decide-and-reserve in one serialized transaction (BEGIN IMMEDIATE on SQLite, an advisory
transaction lock on PostgreSQL), which is what keeps concurrent placements from overcommitting.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import CursorResult, DateTime, Engine, bindparam, event, make_url, text
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, create_engine, func, select

from inferofabric.errors import NotFound
from inferofabric.models.common import Health
from inferofabric.models.policy import PlacementPolicy
from inferofabric.models.pool import PoolSpec
from inferofabric.models.status import Decision, HealthEvent, PoolStatus, PoolView
from inferofabric.store.tables import (
    HealthEventRow,
    LedgerDayRow,
    LedgerRow,
    PlacementRow,
    PolicyRow,
    PoolRow,
    QueueRow,
    ReservationRow,
    SecretRow,
    utcnow,
)

PLACEMENT_LOCK_KEY = 0x1F4B_F00D  # PostgreSQL advisory lock id for placement transactions
_MIGRATION_LOCK = threading.Lock()
MIGRATIONS = Path(__file__).parent / "migrations"

# The statements of the placement path, built once (building a statement costs more than running it
# on SQLite, and placements run one at a time: their Python work is everyone's latency).
_RESERVATIONS = ReservationRow.__table__  # type: ignore[attr-defined]
_PLACEMENTS = PlacementRow.__table__  # type: ignore[attr-defined]
_RESERVED = (
    select(col(ReservationRow.pool), col(ReservationRow.gpu_type), func.sum(col(ReservationRow.gpus)))
    .where(col(ReservationRow.active))
    .group_by(col(ReservationRow.pool), col(ReservationRow.gpu_type))
)
_POOLS = sa_select(col(PoolRow.name), col(PoolRow.spec), col(PoolRow.health), col(PoolRow.cordoned),
                   col(PoolRow.discovered_gpus)).order_by(col(PoolRow.name))
_POOL_SPEC = select(PoolRow.spec).where(PoolRow.name == bindparam("name"))
_ACTIVE_POLICY = (select(PolicyRow.version, PolicyRow.document)
                  .order_by(col(PolicyRow.version).desc()).limit(1))
_EXISTING = select(ReservationRow.pool).where(ReservationRow.workload_id == bindparam("workload_id"),
                                              ReservationRow.attempt == bindparam("attempt"))
_RECORDED = (
    select(PlacementRow.decision)
    .where(PlacementRow.workload_id == bindparam("workload_id"), PlacementRow.attempt == bindparam("attempt"),
           PlacementRow.pool == bindparam("pool"))
    .order_by(col(PlacementRow.id).desc()).limit(1)
)
_LAST_PLACEMENT = (
    select(PlacementRow.pool, PlacementRow.attempt)
    .where(PlacementRow.workload_id == bindparam("workload_id"))
    .order_by(col(PlacementRow.id).desc()).limit(1)
)
_RESERVE = _RESERVATIONS.insert()
_RECORD = _PLACEMENTS.insert()
_RELEASE_ALL = (
    _RESERVATIONS.update()
    .where(_RESERVATIONS.c.workload_id == bindparam("w"), _RESERVATIONS.c.active.is_(True))
    .values(active=False, released_at=bindparam("now"))
)
_RELEASE_ATTEMPT = _RELEASE_ALL.where(_RESERVATIONS.c.attempt == bindparam("a"))
# An admitted attempt keeps its queue row (state `placed`, with its spec) while it holds GPUs, so a
# failover can re-queue a whole pool's work in one transaction (store/admission.py); the row goes with
# the attempt's GPUs.
_QUEUE = QueueRow.__table__  # type: ignore[attr-defined]
PLACED = "placed"
_FORGET_PLACED_ALL = _QUEUE.delete().where(_QUEUE.c.workload_id == bindparam("w"), _QUEUE.c.state == PLACED)
_FORGET_PLACED = _FORGET_PLACED_ALL.where(_QUEUE.c.attempt == bindparam("a"))
_LEDGER = LedgerRow.__table__  # type: ignore[attr-defined]
_DAYS = LedgerDayRow.__table__  # type: ignore[attr-defined]
# The ledger line ends with its GPUs (at the back end's end when the caller knows it) and commits its
# cost; a line whose job never started gets no start, so it costs nothing.
_OPEN_LINES = (
    sa_select(_LEDGER.c.id, _LEDGER.c.started_at, _LEDGER.c.gpus, _LEDGER.c.price_per_gpu_hour,
              _LEDGER.c.rate_per_hour, _LEDGER.c.team,
           _LEDGER.c.project, _LEDGER.c.pool, _LEDGER.c.location, _LEDGER.c.region)
    .where(_LEDGER.c.workload_id == bindparam("w"), _LEDGER.c.ended_at.is_(None))
)
_END_LINE = (
    _LEDGER.update().where(_LEDGER.c.id == bindparam("line"))
    .values(ended_at=bindparam("ended"), started_at=bindparam("began", type_=DateTime(timezone=True)),
            gpu_hours=bindparam("hours"), cost=bindparam("cost"))
)
_STARTED = (
    _LEDGER.update()
    .where(_LEDGER.c.workload_id == bindparam("w"), _LEDGER.c.attempt == bindparam("a"),
           _LEDGER.c.started_at.is_(None), _LEDGER.c.ended_at.is_(None))
    .values(started_at=bindparam("started"))
)


def ledger_on() -> bool:
    """The cost ledger is always kept, except under FABRIC_LEDGER=off: bench/cost.py measures what
    keeping it costs the fabric's throughput by turning it off."""
    return os.environ.get("FABRIC_LEDGER", "on").lower() != "off"


def end_lines_in(session: Any, workload_id: str, attempt: int | None, ended: datetime,
                 started_at: datetime | None = None) -> None:
    """End the open ledger lines of one attempt (or all) at `ended`, committing what each cost."""
    if not ledger_on():
        return
    query = _OPEN_LINES if attempt is None else _OPEN_LINES.where(_LEDGER.c.attempt == attempt)
    for line in session.execute(query, {"w": workload_id}).all():
        began = as_utc(line.started_at) if line.started_at else (min(as_utc(started_at), ended)
                                                                 if started_at else None)
        held = max(0.0, (ended - began).total_seconds() / 3600) if began else 0.0
        session.execute(_END_LINE, {"line": line.id, "ended": ended, "began": began, "hours": held * line.gpus,
                                    "cost": held * line_rate(line)})
        if began is not None and held > 0:
            add_to_days(session, line, began, ended)


def line_rate(line: Any) -> float:
    """A ledger line's USD per held hour (lines without a rate: their GPUs at their price)."""
    rate = getattr(line, "rate_per_hour", None)
    return float(rate) if rate is not None else line.gpus * line.price_per_gpu_hour


def _prices(spec: PoolSpec) -> tuple[Any, ...]:
    return (sorted(spec.price_per_gpu_hour.items()), spec.price_per_cpu_hour, spec.price_per_gib_hour)


_OPEN_ON_POOL = sa_select(_LEDGER).where(_LEDGER.c.pool == bindparam("pool"), _LEDGER.c.ended_at.is_(None))


def reprice_lines_in(session: Any, spec: PoolSpec, now: datetime) -> None:
    """The pool's prices changed: from now on its open lines cost the new prices. A line that has
    started ends now at the old rate and its attempt continues in the next segment at the new one;
    one that has not started yet takes the new prices as they are."""
    for line in session.execute(_OPEN_ON_POOL, {"pool": spec.name}).all():
        price = spec.price_per_gpu_hour.get(line.gpu_type or "", 0.0) if line.gpu_type else 0.0
        rate = (line.gpus * price + line.cpus * (spec.price_per_cpu_hour or 0.0)
                + line.memory_gib * (spec.price_per_gib_hour or 0.0))
        if line.started_at is None:
            session.execute(_LEDGER.update().where(_LEDGER.c.id == line.id)
                            .values(price_per_gpu_hour=price, rate_per_hour=rate))
            continue
        began = as_utc(line.started_at)
        held = max(0.0, (now - began).total_seconds() / 3600)
        spent = held * line_rate(line)
        session.execute(_END_LINE, {"line": line.id, "ended": now, "began": began, "hours": held * line.gpus,
                                    "cost": spent})
        if held > 0:
            add_to_days(session, line, began, now)
        values = {c: getattr(line, c) for c in ("workload_id", "attempt", "team", "project", "pool", "location",
                                                 "region", "gpu_type", "gpus", "reason", "cpus", "memory_gib")}
        session.execute(_LEDGER.insert().values(
            **values, segment=line.segment + 1, price_per_gpu_hour=price, rate_per_hour=rate, admitted_at=now,
            started_at=now, ended_at=None, estimated_cost=max(0.0, line.estimated_cost - spent)))


def spans(lo: datetime, hi: datetime, step: str | None = "day") -> list[tuple[str, float]]:
    """[lo, hi) in hours, whole (`step` None) or per UTC day or week, under the date each day or week
    (Monday) begins: [("2026-12-01", 1.5), ...]. The daily sums and the cost reports split time here."""
    lo, hi = as_utc(lo), as_utc(hi)
    if hi <= lo:
        return []
    if step is None:
        return [("", (hi - lo).total_seconds() / 3600)]
    out = []
    cursor = lo
    while cursor < hi:
        day = datetime(cursor.year, cursor.month, cursor.day, tzinfo=UTC)
        begin = day - timedelta(days=day.weekday()) if step == "week" else day
        upto = min(begin + timedelta(days=7 if step == "week" else 1), hi)
        out.append((begin.date().isoformat(), (upto - cursor).total_seconds() / 3600))
        cursor = upto
    return out


def day_spans(began: datetime, ended: datetime) -> list[tuple[str, float]]:
    return spans(began, ended, "day")  # the interval's hours per UTC day: [("2026-12-01", 1.5), ...]


def add_to_days(session: Any, line: Any, began: datetime, ended: datetime) -> None:
    """Add an ended line's held hours and cost to the daily sums (ledger_days), day by day."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert
    for day, hours in day_spans(began, ended):
        statement = insert(_DAYS).values(day=day, team=line.team, project=line.project, pool=line.pool,
                                         location=line.location, region=line.region, gpu_hours=hours * line.gpus,
                                         cost=hours * line_rate(line))
        session.execute(statement.on_conflict_do_update(
            index_elements=["day", "team", "project", "pool", "location", "region"],
            set_={"gpu_hours": _DAYS.c.gpu_hours + statement.excluded.gpu_hours,
                  "cost": _DAYS.c.cost + statement.excluded.cost}))


def release_attempt_in(session: Any, workload_id: str, attempt: int, ended_at: datetime | None = None,
                       started_at: datetime | None = None) -> int:
    """Release one attempt's active reservations inside the caller's transaction, and end its ledger
    line (`started_at`: the back end's start, for a job whose start was not recorded yet). Returns how
    many reservations were released."""
    now = utcnow()
    result = session.execute(_RELEASE_ATTEMPT, {"w": workload_id, "a": attempt, "now": now})
    session.execute(_FORGET_PLACED, {"w": workload_id, "a": attempt})
    ended = min(as_utc(ended_at) if ended_at else now, now)
    end_lines_in(session, workload_id, attempt, ended, started_at)
    return int(getattr(result, "rowcount", 0) or 0)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below control transactions
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        _wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA cache_size=-32000")  # 32 MB: an admission cycle reads the whole queue
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Writers take the write lock up front: a deferred transaction that reads and then writes can
        # fail with SQLITE_BUSY under concurrency instead of waiting its turn.
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _private_file(url: str) -> None:
    """A SQLite store is the owner's alone (mode 0600; SQLite gives its -wal and -shm files the same):
    it holds sealed secrets, the audit log and every team's costs."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if extra.exists() and extra.stat().st_mode & 0o077:
                extra.chmod(0o600)
    except OSError:  # not ours to change (a shared read-only copy): SQLite says what it can do
        pass


def _wal(cursor: Any) -> None:
    """Switch a SQLite database to WAL once. Switching needs a moment of exclusive access, and SQLite
    answers "database is locked" at once (no busy wait) while another process holds the database, as
    when several processes open a new database together: retry for a while instead of failing."""
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + 30
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            _private_file(url)
            self.engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            _sqlite_setup(self.engine)
        else:
            self.engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
        # SQLite: the writers of this process take turns on a Python lock before they ask SQLite for
        # its write lock. Left to SQLite alone, contending writers sleep in its busy handler (retries
        # backing off to 100 ms each): under a failover's hundreds of writes a one-millisecond enqueue
        # waited over a second. Other processes still wait in the busy handler (busy_timeout 30 s).
        self._local_lock = threading.RLock()
        # SQLite writers take the write lock at BEGIN (see _sqlite_setup).
        self._write_engine = (self.engine.execution_options(sqlite_immediate=True) if self.is_sqlite
                              else self.engine)
        # Parsed pool documents by (name, JSON text): placement reads every pool on every decision.
        self._specs: dict[str, tuple[str, PoolSpec]] = {}

    # -- schema -------------------------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        # Alembic's `context`/`op` are process-wide proxies: one migration at a time per process. Across
        # processes, SQLite's write lock is taken up front (a deferred transaction that reads the version
        # and then creates tables fails with "database is locked" next to another migrating process) and
        # PostgreSQL takes an advisory lock.
        bind = self.engine.execution_options(sqlite_immediate=True) if self.is_sqlite else self.engine
        with _MIGRATION_LOCK, bind.begin() as connection:
            if not self.is_sqlite:
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PLACEMENT_LOCK_KEY + 1})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        bind = self._write_engine if write else self.engine
        with self._local_lock if write and self.is_sqlite else _nullcontext(), \
                Session(bind, expire_on_commit=False) as session:
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
                before = PoolSpec.model_validate_json(row.spec)
                row.spec = spec.model_dump_json()
                row.updated_at = utcnow()
                s.add(row)
                if _prices(before) != _prices(spec):
                    reprice_lines_in(s, spec, utcnow())
            s.commit()

    def delete_pool(self, name: str) -> None:
        # Under the placement lock: a placement running now must not reserve on the pool after the
        # check below found it idle (SQLite's write lock already serializes the two).
        with self.placement_transaction() as s:
            row = s.get(PoolRow, name)
            if row is None:
                raise NotFound(f"no pool named {name!r}")
            active = s.exec(select(func.count()).where(ReservationRow.pool == name,
                                                       col(ReservationRow.active))).one()
            if active:
                raise ValueError(f"pool {name!r} still has {active} active workload(s); drain it first")
            s.delete(row)
            s.commit()

    def pool_spec(self, name: str) -> PoolSpec:
        with self.session() as s:
            document = s.execute(_POOL_SPEC, {"name": name}).scalar()
            if document is None:
                raise NotFound(f"no pool named {name!r}")
            return PoolSpec.model_validate_json(document)

    def pool_specs(self) -> list[PoolSpec]:
        with self.session() as s:
            rows = s.exec(select(PoolRow).order_by(PoolRow.name))
            return [PoolSpec.model_validate_json(r.spec) for r in rows]

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
                default_reason = "cordoned by operator" if cordoned else "uncordoned"
                event_row = HealthEventRow(pool=name, from_health=before.value, to_health=after.value,
                                           reason=reason or default_reason)
                s.add(event_row)
            s.add(row)
            s.commit()
            return _event(event_row) if event_row else None

    def set_health(self, name: str, health: Health, reason: str,
                   gpus: dict[str, int] | None = None) -> HealthEvent | None:
        """Record a probed health; returns the transition event when the effective health changed."""
        return self.record_probe(name, health, reason, gpus)[0]

    def record_probe(self, name: str, health: Health, reason: str,
                     gpus: dict[str, int] | None = None) -> tuple[HealthEvent | None, bool]:
        """`set_health`, and whether the GPUs placement counts there (declared, capped by discovery)
        changed with the probe's discovered inventory."""
        with self.session(write=True) as s:
            row = s.get(PoolRow, name)
            if row is None:
                raise NotFound(f"no pool named {name!r}")
            before = _effective_health(row)
            spec = self._parsed_spec(row.name, row.spec)
            capacity = _capacity(spec, row)
            if gpus is not None:
                row.discovered_gpus = json.dumps(gpus, sort_keys=True)
            capacity_changed = gpus is not None and _capacity(spec, row) != capacity
            changed = row.health != health.value
            if changed:
                row.health = health.value
                row.health_reason = reason
                row.health_since = utcnow()
            after = _effective_health(row)
            event_row = None
            if before != after:
                event_row = HealthEventRow(pool=name, from_health=before.value, to_health=after.value,
                                           reason=reason)
                s.add(event_row)
            s.add(row)
            s.commit()
            return (_event(event_row) if event_row else None), capacity_changed

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
        for pool, gpu_type, total in session.execute(_RESERVED):
            if gpu_type:
                used[pool][gpu_type] += int(total or 0)
        views = []
        for row in session.execute(_POOLS):
            spec = self._parsed_spec(row.name, row.spec)
            views.append(PoolView(
                name=spec.name, location=spec.location, backend=spec.backend, region=spec.region,
                gpus=_capacity(spec, row), used=dict(used.get(spec.name, {})),
                price_per_gpu_hour=spec.price_per_gpu_hour, labels=spec.labels, health=_effective_health(row),
                price_per_cpu_hour=spec.price_per_cpu_hour, price_per_gib_hour=spec.price_per_gib_hour,
            ))
        return views

    def _parsed_spec(self, name: str, document: str) -> PoolSpec:
        """The pool's spec, parsed once per version of its document (read only: callers get copies)."""
        cached = self._specs.get(name)
        if cached is None or cached[0] != document:
            cached = (document, PoolSpec.model_validate_json(document))
            self._specs[name] = cached
        return cached[1]

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
            row = s.execute(_ACTIVE_POLICY).first()
            if row is None:
                return None, None
            return row.version, PlacementPolicy.model_validate_json(row.document)

    # -- placement ----------------------------------------------------------------------------------
    @contextmanager
    def placement_transaction(self) -> Iterator[Session]:
        # One placement at a time across every worker: SQLite's BEGIN IMMEDIATE takes the write lock
        # (see _sqlite_setup); PostgreSQL takes a transaction-scoped advisory lock.
        with self.session(write=True) as s:
            if not self.is_sqlite:
                s.exec(text("SELECT pg_advisory_xact_lock(:k)").bindparams(k=PLACEMENT_LOCK_KEY))  # type: ignore[call-overload]
            yield s

    def place(self, workload_id: str, attempt: int, decide: Callable[[list[PoolView]], Decision]) -> Decision:
        """Decide and reserve atomically. Idempotent: a retried call for the same attempt returns
        the reservation already made instead of reserving twice."""
        # Core statements rather than ORM objects: this transaction holds the placement lock, so every
        # bit of Python work in it is on the critical path of every concurrent placement.
        key = {"workload_id": workload_id, "attempt": attempt}
        with self.placement_transaction() as s:
            existing = s.execute(_EXISTING, key).first()
            if existing is not None:
                recorded = s.execute(_RECORDED, {**key, "pool": existing.pool}).first()
                s.rollback()
                if recorded is not None:
                    return Decision.model_validate_json(recorded.decision)
            decision = decide(self.pool_views(s))
            decision.decided_at = now = utcnow()
            record = True
            if decision.pool is not None:
                s.execute(_RESERVE, {**key, "pool": decision.pool, "gpu_type": decision.gpu_type,
                                     "gpus": decision.gpus, "active": True, "created_at": now,
                                     "released_at": None})
            else:
                # A workload that keeps waiting records its first "wait" of an attempt, not every retry.
                last = s.execute(_LAST_PLACEMENT, {"workload_id": workload_id}).first()
                record = last is None or last.pool is not None or last.attempt != attempt
            if record:
                s.execute(_RECORD, {**key, "pool": decision.pool, "decision": decision.model_dump_json(),
                                    "created_at": now})
            s.commit()
            return decision

    def release(self, workload_id: str, attempt: int | None = None, ended_at: datetime | None = None,
                started_at: datetime | None = None) -> int:
        """Release the workload's active reservations (one attempt, or all) and end their ledger lines
        (at `ended_at`, the back end's end, when known). Returns how many were released."""
        with self.session(write=True) as s:
            if attempt is None:
                now = utcnow()
                result = s.execute(_RELEASE_ALL, {"w": workload_id, "now": now})
                s.execute(_FORGET_PLACED_ALL, {"w": workload_id})
                end_lines_in(s, workload_id, None, now)
                released = cast("CursorResult[Any]", result).rowcount
            else:
                released = release_attempt_in(s, workload_id, attempt, ended_at, started_at)
            s.commit()
            return int(released or 0)

    def ledger_started(self, workload_id: str, attempt: int, started_at: datetime) -> None:
        """The back end runs the attempt's job since `started_at`: its cost accrues from then."""
        with self.session(write=True) as s:
            s.execute(_STARTED, {"w": workload_id, "a": attempt, "started": min(as_utc(started_at), utcnow())})
            s.commit()

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
    def put_secret(self, name: str, ciphertext: str, pool: str | None = None, team: str | None = None,
                   shared_with: list[str] | tuple[str, ...] = ()) -> None:
        """Store a sealed value owned by `team` (None: the fabric's own), usable by its team's workloads
        and those of the teams in `shared_with`."""
        with self.session(write=True) as s:
            row = s.get(SecretRow, name) or SecretRow(name=name, ciphertext=ciphertext)
            row.ciphertext = ciphertext
            row.pool = pool
            row.team = team
            row.shared_with = ",".join(sorted({t for t in shared_with if t}))
            s.add(row)
            s.commit()

    def get_secret(self, name: str) -> SecretRow:
        with self.session() as s:
            row = s.get(SecretRow, name)
            if row is None:
                raise NotFound(f"no secret named {name!r}")
            return row

    def find_secret(self, name: str) -> SecretRow | None:
        with self.session() as s:
            return s.get(SecretRow, name)

    def secret_names(self) -> list[tuple[str, str | None]]:
        with self.session() as s:
            return [(r.name, r.pool) for r in s.exec(select(SecretRow).order_by(SecretRow.name))]

    def secret_rows(self) -> list[SecretRow]:
        """Every secret's row (names, scope and owner; the sealed values too: never show those)."""
        with self.session() as s:
            return list(s.exec(select(SecretRow).order_by(SecretRow.name)))


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield


def _effective_health(row: PoolRow | Any) -> Health:  # a PoolRow or a result row with its columns
    return Health.CORDONED if row.cordoned else Health(row.health)


def _capacity(spec: PoolSpec, row: PoolRow | Any) -> dict[str, int]:
    """Declared inventory, capped by what the back end reports it really has (when it can tell)."""
    if not row.discovered_gpus:
        return dict(spec.gpus)
    discovered: dict[str, int] = json.loads(row.discovered_gpus)
    if not spec.gpus:
        return discovered
    return {t: min(n, discovered.get(t, 0)) for t, n in spec.gpus.items()}


def _event(row: HealthEventRow) -> HealthEvent:
    return HealthEvent(pool=row.pool, from_health=Health(row.from_health) if row.from_health else None,
                       to_health=Health(row.to_health), reason=row.reason, at=as_utc(row.at))


def as_utc(value: datetime) -> datetime:
    """A stored timestamp as an aware UTC datetime (SQLite hands them back naive)."""
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
