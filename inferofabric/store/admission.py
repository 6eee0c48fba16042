"""The store's side of admission: the queue table, reservations with their owners, team usage.

One admission cycle is one serialized transaction (the placement lock of store/db.py): it reads the
waiting rows, the active reservations, the pools and the teams' usage, lets the pure planner decide
(policies/admission.py), and writes the reservations of what it admitted, the preemption marks and
the admitted rows' decisions before it commits. A worker killed before the commit changes nothing;
one killed after it leaves rows in state `admitted`, which the next cycle wakes again: an admission
is never lost and never made twice (the reservation's (workload, attempt) key is unique).
"""

from __future__ import annotations

import gc
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select, update

from inferofabric.models.status import Decision, PoolView
from inferofabric.policies.admission import CyclePlan, Held
from inferofabric.policies.budget import hourly_rate
from inferofabric.policies.fairshare import accrue
from inferofabric.store.budget import raise_alerts
from inferofabric.store.db import PLACED, Store, as_utc, ledger_on, release_attempt_in
from inferofabric.store.tables import LedgerRow, PlacementRow, QueueRow, ReservationRow, TeamUsageRow, utcnow

_Q = QueueRow.__table__  # type: ignore[attr-defined]
_R = ReservationRow.__table__  # type: ignore[attr-defined]
_L = LedgerRow.__table__  # type: ignore[attr-defined]
_U = TeamUsageRow.__table__  # type: ignore[attr-defined]
_P = PlacementRow.__table__  # type: ignore[attr-defined]
# A row's life: `waiting` -> `admitted` (a cycle reserved its GPUs) -> `placed` (the workload was
# told; the row stays, spec and all, while the attempt holds GPUs) -> gone with the attempt's GPUs.
WAITING, ADMITTED = "waiting", "admitted"


@dataclass
class QueueItem:
    """A queue row without its spec text (the planner's cache parses that once per version)."""

    workload_id: str
    attempt: int
    seq: int
    version: int
    team: str
    priority_class: str | None
    exclude: dict[str, str]
    failed_pool_health: str | None
    approval: str | None = None
    approval_asked_at: float | None = None


@dataclass
class Wake:
    workload_id: str
    attempt: int
    decision: Decision


@dataclass
class CycleOutcome:
    plan: CyclePlan
    wake: list[Wake] = field(default_factory=list)  # admitted now or earlier and not yet woken
    next_expiry: float | None = None  # the earliest pool exclusion (or approval timeout) ends then
    alerts: list[dict[str, Any]] = field(default_factory=list)  # budget alerts raised by this cycle


@dataclass
class Enqueue:
    """One attempt joining the queue. `exclude`: pool -> [why, until (epoch seconds, or None for as
    long as the row waits)]; `release_attempt`: an earlier attempt of the workload whose reservations
    are released in the same transaction (a move)."""

    workload_id: str
    attempt: int
    seq: int
    team: str
    spec_json: str
    exclude: dict[str, list[Any]] | None = None
    failed_pool_health: str | None = None
    release_attempt: int | None = None


def enqueue(store: Store, workload_id: str, attempt: int, seq: int, team: str, spec_json: str,
            exclude: dict[str, list[Any]] | None = None, failed_pool_health: str | None = None,
            release_attempt: int | None = None) -> bool:
    """Put (or keep) the workload's attempt in the queue; see `enqueue_many`."""
    return enqueue_many(store, [Enqueue(workload_id, attempt, seq, team, spec_json, exclude, failed_pool_health,
                                        release_attempt)])[0]


def enqueue_many(store: Store, items: Sequence[Enqueue]) -> list[bool]:
    """Put (or keep) each attempt in the queue, all in one transaction (a failover re-queues hundreds
    at once: one commit for the lot instead of one each, behind one write lock). Idempotent: a
    retried item for the same attempt changes nothing. Per item, False when that attempt was
    already admitted."""
    out: list[bool] = []
    with store.session(write=True) as s:
        for item in items:
            out.append(_enqueue_one(s, item))
        s.commit()
    return out


def _enqueue_one(s: Any, item: Enqueue) -> bool:
    if item.release_attempt is not None and item.release_attempt != item.attempt:
        release_attempt_in(s, item.workload_id, item.release_attempt)
    row = s.get(QueueRow, item.workload_id)
    if row is not None and row.attempt == item.attempt:
        return bool(row.state == WAITING)
    reserved = s.execute(select(_R.c.id).where(_R.c.workload_id == item.workload_id,
                                               _R.c.attempt == item.attempt)).first()
    if reserved is not None:
        return False
    if row is None:
        row = QueueRow(workload_id=item.workload_id, attempt=item.attempt, seq=item.seq, team=item.team,
                       spec=item.spec_json)
    row.attempt, row.seq, row.team, row.spec = item.attempt, item.seq, item.team, item.spec_json
    row.exclude = json.dumps(item.exclude or {}, sort_keys=True)
    row.failed_pool_health = item.failed_pool_health
    row.state, row.decision, row.reason = WAITING, None, ""
    row.approval, row.approval_asked_at = None, None  # a new attempt is a new question
    row.version = (row.version or 0) + 1
    row.enqueued_at = utcnow()
    s.add(row)
    s.flush()  # a later item of the same batch for this workload must see this one
    return True


def dequeue(store: Store, workload_id: str, attempt: int) -> int:
    """Leave the queue (a cancel while waiting); releases what a racing cycle may have reserved for
    this attempt. Returns the number of reservations released."""
    with store.placement_transaction() as s:
        s.execute(delete(_Q).where(_Q.c.workload_id == workload_id))
        released = release_attempt_in(s, workload_id, attempt)
        s.commit()
        return released


def set_priority_class(store: Store, workload_id: str, priority_class: str) -> bool:
    """Change a waiting workload's class; False when it is not waiting."""
    with store.session(write=True) as s:
        row = s.get(QueueRow, workload_id)
        if row is None or row.state != WAITING:
            return False
        row.priority_class = priority_class
        row.version += 1
        s.add(row)
        s.commit()
        return True


_ITEMS_SQL = ("SELECT workload_id, attempt, seq, version, team, priority_class, exclude, failed_pool_health, "
              "approval, approval_asked_at FROM queue WHERE state = 'waiting'")


def _epoch(value: Any) -> float | None:
    """A timestamp column read through the driver (SQLite hands back text) as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value).timestamp()


def queue_items(session: Any, clock: float | None = None,
                memo: dict[str, tuple[Any, QueueItem]] | None = None) -> tuple[list[QueueItem], float | None]:
    """The waiting rows, with the pool exclusions still in force at `clock`, and when the earliest of
    those ends (the loop then looks again). Plain DB-API rows: a cycle reads 10,000 of them, and
    `memo` (row -> item, kept by the caller) hands back the same item for a row that did not change."""
    rows = session.connection().exec_driver_sql(_ITEMS_SQL).fetchall()
    now = clock if clock is not None else utcnow().timestamp()
    items = []
    next_expiry: float | None = None
    for row in rows:
        workload_id, attempt, seq, version, team, priority_class, exclude_text, failed, approval, asked = row
        plain = not exclude_text or exclude_text == "{}"
        if memo is not None and plain:
            hit = memo.get(workload_id)
            if hit is not None and hit[0] == row:
                items.append(hit[1])
                continue
        exclude: dict[str, str] = {}
        if exclude_text and exclude_text != "{}":
            for pool, (why, until) in json.loads(exclude_text).items():
                if until is None or until > now:
                    exclude[pool] = why
                    if until is not None:
                        next_expiry = until if next_expiry is None else min(next_expiry, until)
        item = QueueItem(workload_id, attempt, int(seq), version, team, priority_class, exclude, failed,
                         approval, _epoch(asked))
        items.append(item)
        if memo is not None and plain:
            memo[workload_id] = (row, item)
    if memo is not None and len(memo) > 2 * len(rows) + 1000:
        live = {row[0] for row in rows}
        for stale in [w for w in memo if w not in live]:
            del memo[stale]
    return items, next_expiry


def _column_of(session: Any, column: Any, workload_ids: Sequence[str]) -> dict[str, Any]:
    """One column of the named queue rows, read in chunks (a cycle may ask for thousands)."""
    out: dict[str, Any] = {}
    for start in range(0, len(workload_ids), 500):
        chunk = list(workload_ids[start:start + 500])
        for workload_id, value in session.execute(select(_Q.c.workload_id, column).where(_Q.c.workload_id.in_(chunk))):
            out[workload_id] = value
    return out


def enqueued_at(session: Any, workload_ids: Sequence[str]) -> dict[str, datetime]:
    return {w: as_utc(at) for w, at in _column_of(session, _Q.c.enqueued_at, workload_ids).items()}


def queue_specs(session: Any, workload_ids: Sequence[str]) -> dict[str, str]:
    """Spec JSON of the named rows."""
    return _column_of(session, _Q.c.spec, workload_ids)


def held(session: Any) -> list[Held]:
    rows = session.execute(select(_R).where(_R.c.active.is_(True)))
    out = []
    for r in rows:
        started = as_utc(r.created_at).timestamp()
        out.append(Held(r.workload_id, r.attempt, r.team, r.pool, r.location, r.gpu_type, r.gpus, r.class_value,
                        r.priority_class, r.priority, started,
                        as_utc(r.expected_end).timestamp() if r.expected_end else None, r.borrowing, r.preempting,
                        order=r.id))
    return out


def team_usage(session: Any, current: Iterable[Held], now: datetime, half_life_s: float,
               write: bool) -> dict[str, float]:
    """Each team's decayed GPU-seconds up to `now`, from the stored value and what it holds now."""
    in_use: dict[str, int] = defaultdict(int)
    for h in current:
        if h.team:
            in_use[h.team] += h.gpus
    stored = {r.team: (r.gpu_seconds, as_utc(r.as_of)) for r in session.execute(select(_U))}
    usage = {}
    for team in set(stored) | set(in_use):
        value, as_of = stored.get(team, (0.0, now))
        usage[team] = accrue(value, in_use.get(team, 0), (now - as_of).total_seconds(), half_life_s)
    if write:
        for team, value in usage.items():
            if team in stored:
                session.execute(update(_U).where(_U.c.team == team).values(gpu_seconds=value, as_of=now))
            else:
                session.execute(_U.insert().values(team=team, gpu_seconds=value, as_of=now))
    return usage


Planner = Callable[[Any, list[QueueItem], list[Held], list[PoolView], dict[str, float], datetime], CyclePlan]


def run_cycle(store: Store, planner: Planner, half_life_s: float, dry_run: bool = False,
              clock: float | None = None, memo: dict[str, Any] | None = None) -> CycleOutcome:
    """One admission cycle in one serialized transaction (`dry_run`: decide, change nothing).
    `clock` (epoch s) is the admission loop's workflow time, against which exclusions expire.

    The cycle allocates tens of thousands of short-lived objects over a large heap (the parsed
    queue): with the cyclic garbage collector on, its full collections cost as much as the cycle
    itself (bench/admission.py), so it is paused for the cycle and runs again right after."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return _run_cycle(store, planner, half_life_s, dry_run, clock, memo)
    finally:
        if paused:
            gc.enable()


def _run_cycle(store: Store, planner: Planner, half_life_s: float, dry_run: bool,
               clock: float | None, memo: dict[str, Any] | None) -> CycleOutcome:
    with store.session() if dry_run else store.placement_transaction() as s:
        current = held(s)  # the first statement takes the write lock (SQLite): read the clock after it,
        now = utcnow()  # so a reservation never starts before a release it saw committed
        usage = team_usage(s, current, now, half_life_s, write=not dry_run)
        items, next_expiry = queue_items(s, clock, memo)
        views = store.pool_views(s)
        plan = planner(s, items, current, views, usage, now)
        by_name = {view.name: view for view in views}
        if dry_run:
            s.rollback()
            return CycleOutcome(plan=plan, next_expiry=next_expiry)
        wake = [Wake(r.workload_id, r.attempt, Decision.model_validate_json(r.decision))
                for r in s.execute(select(_Q.c.workload_id, _Q.c.attempt, _Q.c.decision)
                                   .where(_Q.c.state == ADMITTED))]
        ledger = ledger_on()
        for admission in plan.admitted:
            entry, decision = admission.pending, admission.decision
            decision.decided_at = now
            runtime = entry.spec.max_runtime_seconds
            s.execute(_R.insert().values(
                workload_id=entry.workload_id, attempt=entry.attempt, pool=decision.pool, gpu_type=decision.gpu_type,
                gpus=decision.gpus, active=True, created_at=now, released_at=None, team=entry.team,
                location=str(decision.location or ""), priority_class=entry.priority_class,
                class_value=entry.class_value, priority=entry.spec.priority, borrowing=decision.borrowing,
                expected_end=now + timedelta(seconds=runtime) if runtime else None, preempting=False))
            if ledger:
                s.execute(_L.insert().values(
                    workload_id=entry.workload_id, attempt=entry.attempt, team=entry.team,
                    project=entry.spec.project, pool=decision.pool, location=str(decision.location or ""),
                    region=decision.region or "", gpu_type=decision.gpu_type, gpus=decision.gpus,
                    reason=decision.mode[:32], admitted_at=now,
                    price_per_gpu_hour=(decision.price_per_hour or 0.0) / decision.gpus if decision.gpus else 0.0,
                    started_at=None, ended_at=None, estimated_cost=decision.estimated_cost or 0.0,
                    rate_per_hour=hourly_rate(by_name[decision.pool], decision.gpu_type, entry.spec)
                    if decision.pool in by_name else None, cpus=entry.spec.replicas * entry.spec.resources.cpu,
                    memory_gib=entry.spec.replicas * entry.spec.resources.memory_bytes / 2**30, segment=1))
            document = decision.model_dump_json()
            s.execute(_P.insert().values(workload_id=entry.workload_id, attempt=entry.attempt, pool=decision.pool,
                                         decision=document, created_at=now))
            s.execute(update(_Q).where(_Q.c.workload_id == entry.workload_id, _Q.c.attempt == entry.attempt)
                      .values(state=ADMITTED, decision=document))
            wake.append(Wake(entry.workload_id, entry.attempt, decision))
        for asked in plan.approvals:
            s.execute(update(_Q).where(_Q.c.workload_id == asked.pending.workload_id,
                                       _Q.c.approval_asked_at.is_(None)).values(approval_asked_at=now))
        alerts = raise_alerts(s, plan.budgets, now) if plan.budgets else []
        if plan.next_deadline is not None:
            next_expiry = plan.next_deadline if next_expiry is None else min(next_expiry, plan.next_deadline)
        for preemption in plan.preemptions:
            victim = preemption.victim
            s.execute(update(_R).where(_R.c.workload_id == victim.workload_id, _R.c.attempt == victim.attempt,
                                       _R.c.active.is_(True)).values(preempting=True))
        s.commit()
        return CycleOutcome(plan=plan, wake=wake, next_expiry=next_expiry, alerts=alerts)


def woken(store: Store, done: Sequence[tuple[str, int]]) -> None:
    """The workloads were told of their admission: their rows are `placed` (no cycle reads them; a
    failover re-queues from them, and they go when the attempt's GPUs are released)."""
    if not done:
        return
    with store.session(write=True) as s:
        for start in range(0, len(done), 200):
            chunk = done[start:start + 200]
            pairs = or_(*[and_(_Q.c.workload_id == w, _Q.c.attempt == a) for w, a in chunk])
            s.execute(update(_Q).where(_Q.c.state == ADMITTED, pairs).values(state=PLACED, reason=""))
        s.commit()


@dataclass
class Requeued:
    """One attempt that held GPUs on a failed pool; `next_attempt` is set when the store re-queued it."""

    workload_id: str
    attempt: int
    next_attempt: int | None


def requeue_off_pool(store: Store, pool: str, failed_pool_health: str) -> list[Requeued]:
    """A failover, on the store's side, in one transaction: every attempt holding GPUs on `pool`
    whose workload was told of its admission gives its GPUs back and its next attempt joins the queue
    where it stood (same `seq`), kept off unhealthy pools like the workload's own re-queue would.

    One write for a pool's hundreds of jobs: the admission loop can place them while their workflows
    still take in the news (each one finds its next attempt queued or already admitted, and sends no
    enqueue of its own). An attempt still on its way to the workload (row `admitted`) is left to the
    workload's own move. Idempotent: a second call finds nothing held on the pool."""
    now = utcnow()
    out: list[Requeued] = []
    with store.session(write=True) as s:
        rows = s.execute(select(_R.c.workload_id, _R.c.attempt, _Q.c.attempt, _Q.c.state)
                         .select_from(_R.outerjoin(_Q, _Q.c.workload_id == _R.c.workload_id))
                         .where(_R.c.pool == pool, _R.c.active.is_(True))).all()
        for workload_id, attempt, row_attempt, row_state in sorted(set(rows)):
            if row_state != PLACED or row_attempt != attempt:
                out.append(Requeued(workload_id, attempt, None))
                continue
            s.execute(update(_Q).where(_Q.c.workload_id == workload_id).values(
                attempt=attempt + 1, state=WAITING, decision=None, reason="", approval=None, approval_asked_at=None,
                failed_pool_health=failed_pool_health, version=_Q.c.version + 1, enqueued_at=now))
            release_attempt_in(s, workload_id, attempt)  # after the row moved on: it keeps the row
            out.append(Requeued(workload_id, attempt, attempt + 1))
        s.commit()
    return out


def record_reasons(store: Store, reasons: dict[str, str]) -> None:
    """Keep the latest wait reason on the row (what `fabric status` shows for a waiting workload)."""
    if not reasons:
        return
    with store.session(write=True) as s:
        for workload_id, reason in reasons.items():
            s.execute(update(_Q).where(_Q.c.workload_id == workload_id).values(reason=reason))
        s.commit()


def reasons(store: Store, workload_ids: Sequence[str], waited_s: float = 0.0) -> dict[str, tuple[str, int]]:
    """Recorded wait reason and attempt of the named rows that have waited at least `waited_s`."""
    since = utcnow() - timedelta(seconds=waited_s)
    with store.session() as s:
        rows = s.execute(select(_Q.c.workload_id, _Q.c.reason, _Q.c.attempt, _Q.c.enqueued_at)
                         .where(_Q.c.workload_id.in_(list(workload_ids)), _Q.c.state == WAITING))
        return {r.workload_id: (r.reason, r.attempt) for r in rows if as_utc(r.enqueued_at) <= since}

