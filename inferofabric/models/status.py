"""What the fabric reports back: decisions with their reasons, workload status, pool status."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from inferofabric.models.common import Health, Location, WorkloadState


class PoolView(BaseModel):
    """A pool as the policy engine sees it at the moment of a decision."""

    name: str
    location: Location
    backend: str
    region: str
    gpus: dict[str, int]
    used: dict[str, int] = Field(default_factory=dict)
    price_per_gpu_hour: dict[str, float] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    health: Health = Health.HEALTHY
    price_per_cpu_hour: float | None = None
    price_per_gib_hour: float | None = None

    def free(self, gpu_type: str) -> int:
        return self.gpus.get(gpu_type, 0) - self.used.get(gpu_type, 0)

    @property
    def total_gpus(self) -> int:
        return sum(self.gpus.values())

    @property
    def used_gpus(self) -> int:
        return sum(self.used.values())


class RejectionKind(StrEnum):
    """Why a pool was not chosen, as a type: code branches on this, `Rejection.reason` is for people."""

    CAPACITY = "capacity"  # it offers the GPU type, but not enough of it is free now
    NO_GPU_TYPE = "no_gpu_type"  # it offers none of the acceptable GPU types
    UNHEALTHY = "unhealthy"  # not in service: unhealthy or cordoned
    EXCLUDED = "excluded"  # this workload is kept off it (it failed there, a drain)
    LOCATION = "location"  # the workload requires another location
    REGION = "region"  # outside the workload's allowed regions
    GANG = "gang"  # its back end cannot launch a gang (`replicas` > 1)
    COMPLIANCE = "compliance"  # a policy constraint (deny / require) keeps the workload off it
    QUOTA = "quota"  # the team's GPU quota (with its cohort) does not allow the GPUs there
    BUDGET = "budget"  # a team's or project's budget does not allow the estimated cost there
    RANKED_LOWER = "ranked_lower"  # allowed and fits, but another pool was ranked first
    OUTSIDE_TARGET = "outside_target"  # fits, but not in the target the decision placed in
    OTHER = "other"  # anything else, and rejections recorded before kinds existed


class WaitKind(StrEnum):
    """Why a workload still waits, as a type (the first cause that applies; the reason text says the rest)."""

    CAPACITY = "capacity"  # a pool it may use has its GPU type, but not enough free (or held for others)
    QUOTA = "quota"
    BUDGET = "budget"
    UNHEALTHY = "unhealthy"  # every pool it could use is out of service
    COMPLIANCE = "compliance"  # constraints keep it off every pool that could hold it
    EXCLUDED = "excluded"
    NO_POOL = "no_pool"  # no registered pool it may use (location, region, gang, GPU type, none registered)
    INFEASIBLE = "infeasible"  # no registered pool could ever hold it
    APPROVAL_PENDING = "approval_pending"  # a person has to approve its burst
    APPROVAL_DENIED = "approval_denied"  # its burst was denied and nothing else fits
    PREEMPTING = "preempting"  # it preempts work (or waits for preempted work to stop)
    OTHER = "other"


class Rejection(BaseModel):
    pool: str
    reason: str  # for people: its wording may change
    kind: RejectionKind = RejectionKind.OTHER  # for code (payloads recorded before kinds have none)


class Decision(BaseModel):
    """One placement decision and why: the chosen pool (or none: the workload waits) and every rejection."""

    workload_id: str
    attempt: int
    pool: str | None = None
    location: Location | None = None
    region: str | None = None
    backend: str | None = None
    gpu_type: str | None = None
    gpus: int = 0
    price_per_hour: float | None = None
    mode: str = "default"  # default | burst | failover | fallback
    reason: str = ""
    rejected: list[Rejection] = Field(default_factory=list)
    inputs: dict[str, float | str] = Field(default_factory=dict)
    policy_version: int | None = None
    decided_at: datetime | None = None
    # Set by admission: the class the workload was admitted with, and whether it borrows cohort quota.
    priority_class: str | None = None
    borrowing: bool = False
    estimated_cost: float | None = None  # runtime (max_runtime_seconds or the policy's default) x GPUs x price
    approval: str | None = None  # set when the policy asks a person to approve this placement: the rule
    wait_kind: WaitKind | None = None  # mode "wait": why, as a type (None on a placement)

    @property
    def placed(self) -> bool:
        return self.pool is not None


class JobRef(BaseModel):
    pool: str
    job_id: str
    backend: str


class AttemptRecord(BaseModel):
    attempt: int
    pool: str | None = None
    job_id: str | None = None
    outcome: str = ""  # running | succeeded | failed | moved: <why> | cancelled
    started_at: datetime | None = None
    ended_at: datetime | None = None


class WorkloadStatus(BaseModel):
    id: str
    state: WorkloadState
    pool: str | None = None
    location: Location | None = None
    region: str | None = None
    backend: str | None = None
    gpu_type: str | None = None
    gpus: int = 0
    attempts: int = 0
    job_id: str | None = None
    message: str = ""
    team: str | None = None
    submitted_at: datetime | None = None
    updated_at: datetime | None = None
    history: list[AttemptRecord] = Field(default_factory=list)
    priority_class: str | None = None
    borrowing: bool = False  # admitted over the team's nominal quota (first to be preempted)
    position: int | None = None  # while queued: 1 = next to be admitted (from the queue, not the workflow)
    reason: str | None = None  # while queued: why it waits
    address: str | None = None  # host:port its job listens on, when the back end gives one (endpoint replicas)


class Explanation(BaseModel):
    id: str
    state: WorkloadState
    decisions: list[Decision] = Field(default_factory=list)
    events: list[str] = Field(default_factory=list)
    queue: QueueEntry | None = None  # while queued: its place in the order and why it waits


class QueueEntry(BaseModel):
    """One waiting workload in admission order (`fabric queue`)."""

    id: str
    team: str
    priority_class: str
    position: int
    team_position: int
    reason: str
    attempt: int = 1
    gpus: int = 0
    gpu_types: list[str] = Field(default_factory=list)
    waiting_since: datetime | None = None


class QueueView(BaseModel):
    """The queue as the admission loop would walk it now, with fair shares and quotas shown."""

    entries: list[QueueEntry] = Field(default_factory=list)
    shares: dict[str, dict[str, float]] = Field(default_factory=dict)
    quotas: dict[str, dict[str, dict[str, int]]] = Field(default_factory=dict)
    total: int = 0


class HealthEvent(BaseModel):
    pool: str
    from_health: Health | None
    to_health: Health
    reason: str
    at: datetime


class PoolStatus(BaseModel):
    name: str
    location: Location
    backend: str
    region: str
    simulated: bool
    health: Health
    health_reason: str = ""
    health_since: datetime | None = None
    gpus: dict[str, int]
    used: dict[str, int]
    price_per_gpu_hour: dict[str, float] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    recent_health: list[HealthEvent] = Field(default_factory=list)

Explanation.model_rebuild()
