"""The control plane's durable records (sqlmodel): pools, policy versions, reservations, placements."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class PoolRow(SQLModel, table=True):
    __tablename__ = "pools"
    name: str = Field(primary_key=True, max_length=63)
    spec: str = Field(sa_column=Column(Text, nullable=False))  # PoolSpec JSON
    health: str = Field(default="healthy", max_length=16)  # last probed health
    health_reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    health_since: datetime = Field(default_factory=utcnow)
    cordoned: bool = False
    discovered_gpus: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class HealthEventRow(SQLModel, table=True):
    __tablename__ = "health_events"
    id: int | None = Field(default=None, primary_key=True)
    pool: str = Field(index=True, max_length=63)
    from_health: str | None = Field(default=None, max_length=16)
    to_health: str = Field(max_length=16)
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    at: datetime = Field(default_factory=utcnow)


class PolicyRow(SQLModel, table=True):
    __tablename__ = "policies"
    version: int | None = Field(default=None, primary_key=True)
    document: str = Field(sa_column=Column(Text, nullable=False))  # PlacementPolicy JSON
    created_at: datetime = Field(default_factory=utcnow)


class ReservationRow(SQLModel, table=True):
    """GPUs held for one attempt of one workload, from placement until the job ends or moves."""

    __tablename__ = "reservations"
    __table_args__ = (UniqueConstraint("workload_id", "attempt", name="uq_reservation_attempt"),)
    id: int | None = Field(default=None, primary_key=True)
    workload_id: str = Field(index=True, max_length=255)
    attempt: int
    pool: str = Field(index=True, max_length=63)
    gpu_type: str | None = Field(default=None, max_length=64)
    gpus: int = 0
    active: bool = Field(default=True, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    released_at: datetime | None = None
    # Who holds it, for quotas, fair share and preemption (set by admission).
    team: str = Field(default="", max_length=63)
    location: str = Field(default="", max_length=16)
    priority_class: str = Field(default="", max_length=63)
    class_value: int = 0
    priority: int = 0
    borrowing: bool = False
    expected_end: datetime | None = None
    preempting: bool = False


class QueueRow(SQLModel, table=True):
    """A waiting workload (one row per workload): written by the workload, read by the admission loop.

    `state` is `waiting` until a cycle admits it (reservation made in the same transaction), then
    `admitted` until the loop has woken the workload, when the row goes. `version` changes with
    every rewrite of the row, so the loop's parse cache knows what to re-read.
    """

    __tablename__ = "queue"
    workload_id: str = Field(primary_key=True, max_length=255)
    attempt: int
    # Submission order, kept across preemptions and moves: microseconds since the epoch. BIGINT in the
    # schema (migration 0002) and here: as an Integer the PostgreSQL driver cast it to a 32-bit int
    # and refused every enqueue ("integer out of range").
    seq: int = Field(index=True, sa_type=BigInteger)
    version: int = 0
    team: str = Field(max_length=63)
    priority_class: str | None = Field(default=None, max_length=63)  # set by `fabric priority`
    spec: str = Field(sa_column=Column(Text, nullable=False))  # WorkloadSpec JSON
    exclude: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    failed_pool_health: str | None = Field(default=None, max_length=16)
    state: str = Field(default="waiting", max_length=16)  # indexed by ix_queue_cycle (migration 0002)
    decision: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    enqueued_at: datetime = Field(default_factory=utcnow)
    approval: str | None = Field(default=None, max_length=255)  # "approved" | "<mode> denied by <who>"
    approval_asked_at: datetime | None = None  # when admission first asked a person (the timeout runs from it)


class TeamUsageRow(SQLModel, table=True):
    """A team's decayed GPU-seconds (fair share's past usage), as of `as_of`."""

    __tablename__ = "team_usage"
    team: str = Field(primary_key=True, max_length=63)
    gpu_seconds: float = 0.0
    as_of: datetime = Field(default_factory=utcnow)


class PlacementRow(SQLModel, table=True):
    __tablename__ = "placements"
    id: int | None = Field(default=None, primary_key=True)
    workload_id: str = Field(index=True, max_length=255)
    attempt: int
    pool: str | None = Field(default=None, max_length=63)
    decision: str = Field(sa_column=Column(Text, nullable=False))  # Decision JSON
    created_at: datetime = Field(default_factory=utcnow)


class SecretRow(SQLModel, table=True):
    __tablename__ = "secrets"
    name: str = Field(primary_key=True, max_length=253)
    pool: str | None = Field(default=None, max_length=63)  # scoped to one pool when set
    ciphertext: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    # Its owner: a team (its members may set it; its workloads may use it), or None for the fabric's
    # own (admin only; pool credentials; no workload may use it). `shared_with`: further teams whose
    # workloads may use it, comma-separated.
    team: str | None = Field(default=None, max_length=63)
    shared_with: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class AuditRow(SQLModel, table=True):
    """One decision on a request that changes something: who, what, on what, and the answer."""

    __tablename__ = "audit_log"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    identity: str = Field(max_length=255)  # the token's subject; "-" when there was no valid token
    role: str = Field(max_length=16)
    team: str | None = Field(default=None, max_length=63)
    action: str = Field(max_length=128)  # submit, cancel, drain, set_policy, signal:relocate...
    target: str = Field(max_length=255)
    result: str = Field(max_length=16)  # ok | refused
    detail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    dedupe: str = Field(max_length=255, unique=True)  # one row per decision, whatever retries happen


class MetaRow(SQLModel, table=True):
    """Facts about the store itself: its identity (which workers serve it) and what configuration was
    applied to it (so a restart keeps what the user set since)."""

    __tablename__ = "fabric_meta"
    key: str = Field(primary_key=True, max_length=63)
    value: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class LedgerRow(SQLModel, table=True):
    """What one attempt held and what it cost: written with its reservation (admission), its start
    when the back end says it runs, its end when its GPUs are released. Cost = held hours x GPUs x
    the price per GPU-hour of its pool when it was placed (on-prem: the owned cost the pool declares)."""

    __tablename__ = "ledger"
    __table_args__ = (UniqueConstraint("workload_id", "attempt", "segment", name="uq_ledger_segment"),)
    id: int | None = Field(default=None, primary_key=True)
    workload_id: str = Field(index=True, max_length=255)
    attempt: int
    team: str = Field(default="", max_length=63, index=True)
    project: str = Field(default="", max_length=63)
    pool: str = Field(max_length=63)
    location: str = Field(default="", max_length=16)
    region: str = Field(default="", max_length=63)
    gpu_type: str | None = Field(default=None, max_length=64)
    gpus: int = 0
    price_per_gpu_hour: float = 0.0
    reason: str = Field(default="", max_length=32)  # default | burst | failover | fallback
    admitted_at: datetime = Field(default_factory=utcnow, index=True)
    started_at: datetime | None = None  # the back end's start: before it, launch-pending time (not charged)
    ended_at: datetime | None = Field(default=None, index=True)  # None: running, accruing cost to date
    estimated_cost: float = 0.0  # reserved against budgets at admission (runtime x hourly rate)
    # USD per held hour: GPUs x price, plus CPUs and memory where the pool prices them (None: GPUs only)
    rate_per_hour: float | None = None
    cpus: float = 0.0  # every replica's: what a price per CPU-hour applies to
    memory_gib: float = 0.0
    segment: int = 1  # a price change while the attempt runs ends this line and opens segment + 1
    cost: float | None = None  # committed when the line ends
    gpu_hours: float | None = None  # committed when the line ends


class LedgerDayRow(SQLModel, table=True):
    """Ended lines summed per UTC day and attribution: what reports over a million lines and the
    budgets' standing read (a line adds its held hours to each day it spans when it ends)."""

    __tablename__ = "ledger_days"
    __table_args__ = (UniqueConstraint("day", "team", "project", "pool", "location", "region",
                                       name="uq_ledger_day"),)
    id: int | None = Field(default=None, primary_key=True)
    day: str = Field(max_length=10)  # YYYY-MM-DD (UTC)
    team: str = Field(max_length=63)
    project: str = Field(max_length=63)
    pool: str = Field(max_length=63)
    location: str = Field(max_length=16)
    region: str = Field(max_length=63)
    gpu_hours: float = 0.0
    cost: float = 0.0


class BudgetAlertRow(SQLModel, table=True):
    """A budget alert raised once per budget, period and share (the audit log holds the event)."""

    __tablename__ = "budget_alerts"
    __table_args__ = (UniqueConstraint("budget", "period_start", "share", name="uq_budget_alert"),)
    id: int | None = Field(default=None, primary_key=True)
    budget: str = Field(max_length=255)
    period_start: str = Field(max_length=32)
    share: float
    raised_at: datetime = Field(default_factory=utcnow)
    spent: float
