"""Inputs and outputs of the fabric's activities and workflows (what goes into Temporal history).

Nothing here carries a secret value: workload env entries that reference secrets travel as sealed
(encrypted) text and are opened only inside the activity that launches the job.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from inferofabric.models.common import Health
from inferofabric.models.endpoint_status import ReplicaReport
from inferofabric.models.jobs import JobStatus
from inferofabric.models.pool import PoolSpec
from inferofabric.models.status import Decision
from inferofabric.models.workload import WorkloadSpec

SEARCH_ATTRIBUTES = {
    "FabricPool": "Keyword",
    "FabricLocation": "Keyword",
    "FabricTeam": "Keyword",
    "FabricState": "Keyword",
    "FabricGpuType": "Keyword",
    "FabricGpus": "Int",
}


class WorkloadRequest(BaseModel):
    """The workflow's input. Validated inside the workflow so bad input fails at once, non-retryably."""

    spec: WorkloadSpec
    max_attempts: int = Field(default=5, ge=1, le=50)
    watch_interval_seconds: float = Field(default=1.0, gt=0, le=60)


class LaunchInput(BaseModel):
    pool: PoolSpec
    workload_id: str
    attempt: int
    job_id: str
    spec: WorkloadSpec
    gpu_type: str | None = None
    gpus: int = 0
    sealed_env: dict[str, str] = Field(default_factory=dict)  # env name -> sealed secret value


class JobInput(BaseModel):
    pool: PoolSpec
    job_id: str
    tail: int = 200


class StatusesInput(BaseModel):
    pool: PoolSpec
    job_ids: list[str] = Field(default_factory=list)


class WatcherSettings(BaseModel):
    period_seconds: float = Field(default=2.0, gt=0, description="one batched look at the pool's jobs per period")
    run_seconds: float = Field(default=600.0, gt=0, description="one watch activity's life (a fresh pool spec after)")
    runs_per_history: int = Field(default=10, ge=1, description="continue-as-new after this many activity runs")


class WatcherInput(BaseModel):
    """PoolWatcherWorkflow's state across continue-as-new: the job states already delivered."""

    pool: str
    settings: WatcherSettings = Field(default_factory=WatcherSettings)
    known: dict[str, str] = Field(default_factory=dict)  # job id -> state the workflow was told


class WatchPoolInput(BaseModel):
    pool: PoolSpec
    settings: WatcherSettings = Field(default_factory=WatcherSettings)
    known: dict[str, str] = Field(default_factory=dict)


class WatchPoolResult(BaseModel):
    known: dict[str, str] = Field(default_factory=dict)
    looks: int = 0
    delivered: int = 0
    throttled: int = 0


class JobUpdate(BaseModel):
    """From the pool's watcher (or the reconciler): the job of this attempt changed state."""

    attempt: int
    status: JobStatus


class ReleaseInput(BaseModel):
    workload_id: str
    attempt: int | None = None
    ended_at: datetime | None = None  # the back end's end of the job, for the ledger (else: now)
    started_at: datetime | None = None  # the back end's start, when the ledger has none yet


class StartedInput(BaseModel):
    """The back end runs an attempt's job since `started_at` (its ledger line accrues from then)."""

    workload_id: str
    attempt: int
    started_at: datetime


class SealSecretsInput(BaseModel):
    """Seal the workload's secret env entries for the pool that will run it (`seal_secrets`)."""

    spec: WorkloadSpec
    pool: str


class ReplicaReportInput(BaseModel):
    """A replica tells its endpoint's workflow where it is and in what state (`report_replica`)."""

    endpoint_id: str
    report: ReplicaReport


class ControlRequest(BaseModel):
    """An operator/SDK operation run by ControlWorkflow as an activity on the control plane."""

    op: str
    args: dict[str, Any] = Field(default_factory=dict)


class MonitorSettings(BaseModel):
    period_seconds: float = Field(default=1.0, gt=0)
    # While the pool is in transition (a probe disagreed with its recorded health), the next probe
    # comes this soon (HAProxy's `fastinter`): the hysteresis still asks for `unhealthy_after`
    # failures in a row, but a dead pool is confirmed in a fraction of a long period. None: the
    # period. Temporal's timers resolve to about a second, so it only helps periods of a few seconds
    # and more (the default 1 s period has nothing to gain).
    transition_period_seconds: float | None = Field(default=None, gt=0)
    probe_timeout_seconds: float = Field(default=2.0, gt=0)
    unhealthy_after: int = Field(default=2, ge=1, description="consecutive failed probes")
    healthy_after: int = Field(default=2, ge=1, description="consecutive good probes")
    iterations_per_run: int = Field(default=200, ge=1, description="continue-as-new after this many probes")
    reconcile_seconds: float = Field(default=300.0, gt=0, description="reconcile the pool this often")


class MonitorInput(BaseModel):
    pool: str
    settings: MonitorSettings = Field(default_factory=MonitorSettings)
    health: Health | None = None
    failures: int = 0
    successes: int = 0
    last_reconcile: float | None = None  # workflow clock, epoch seconds


class ProbeResult(BaseModel):
    ok: bool
    health: Health
    reason: str = ""
    gpus: dict[str, int] | None = None
    throttled: bool = False  # the API said "slow down": counts neither as a failed nor a good probe


# -- control-plane operations on a pool (activities/control.py) ------------------------------------------
class CordonInput(BaseModel):
    """Cordon (or uncordon) a pool (`control_cordon`)."""

    pool: str
    cordoned: bool


class RecordHealthInput(BaseModel):
    """The pool monitor's verdict on a pool, and the GPUs its probe saw (`control_record_health`)."""

    pool: str
    health: Health
    reason: str
    gpus: dict[str, int] | None = None


class RelocateInput(BaseModel):
    """A drain: tell every workload on the pool to move, each stopping its own copy (`control_relocate`)."""

    pool: str
    reason: str
    health: Health


class MoveOffInput(BaseModel):
    """A failover: re-queue every workload on the pool and tell each (`control_move_off`)."""

    pool: str
    reason: str
    health: Health


class ReconcileInput(BaseModel):
    """The pool's live fabric jobs (job id -> state, from the pool's side), to compare with the store
    and the workflows (`control_reconcile`)."""

    pool: str
    states: dict[str, str]


class RelocateSignal(BaseModel):
    pool: str
    reason: str
    health: Health = Health.UNHEALTHY
    # The sender (the pool monitor, after a failover) stops every copy left on the pool in one batched
    # call: the workload does not cancel its own (hundreds of single cancels against a dead pool are
    # load on the very worker that must place and launch the moved work).
    copies_stopped_by_sender: bool = False
    # A failover names the attempt it moves (None: whatever runs on `pool`, e.g. a drain) and, when
    # the store re-queued the workload itself (one transaction for the whole pool), its next attempt:
    # the workload then sends no enqueue of its own and may find that attempt admitted already.
    attempt: int | None = None
    requeued_attempt: int | None = None


# -- admission ----------------------------------------------------------------------------------------
class EnqueueInput(BaseModel):
    """A workload's attempt joins the queue (or re-joins it, keeping `seq`, after a move or preemption)."""

    workload_id: str
    attempt: int
    seq: int
    spec: WorkloadSpec
    exclude: dict[str, str] = Field(default_factory=dict)
    exclude_until: dict[str, float] = Field(default_factory=dict)  # pool -> when it may be used again (epoch s)
    failed_pool_health: Health | None = None
    # The previous attempt, moved off its pool: its GPUs are given back in the same transaction (one
    # store write and one wake per move instead of two: a failover moves hundreds at once).
    release_attempt: int | None = None


class DequeueInput(BaseModel):
    """A workload's attempt leaves the queue, with whatever it holds (`dequeue_workload`)."""

    workload_id: str
    attempt: int


class PriorityClassInput(BaseModel):
    """Change a waiting workload's priority class (`set_priority_class`)."""

    workload_id: str
    priority_class: str


class ApprovalInput(BaseModel):
    """Record a person's answer to a burst waiting for approval (`set_approval`): "approved", or why not."""

    workload_id: str
    answer: str


class AdmittedSignal(BaseModel):
    """From the admission loop: the attempt is admitted, GPUs reserved on `pool`."""

    attempt: int
    decision: Decision
    pool: PoolSpec


class PreemptSignal(BaseModel):
    """From the admission loop: give the GPUs of this attempt back; the workload re-queues in its place."""

    attempt: int
    reason: str
    by: str = ""


class ApprovalAnswer(BaseModel):
    """`fabric approve ID` / `fabric deny ID`: a person's answer to a burst that needs approval. `by`
    must be the sender's token subject (the auth gate checks it)."""

    approve: bool
    by: str = ""
    note: str = ""


class WaitingSignal(BaseModel):
    """From the admission loop: why the workload still waits (sent when the reason changes)."""

    attempt: int
    reason: str
    position: int = 0


class AdmissionInput(BaseModel):
    """The admission loop's state carried across continue-as-new."""

    cycles: int = 0
    admitted: int = 0
    preempted: int = 0
    history_limit: int = Field(default=4000, ge=100, description="continue-as-new past this many events")


class CycleSummary(BaseModel):
    """What one admission cycle did (small: it is recorded in the loop's history)."""

    admitted: int = 0
    woken: int = 0
    preempted: int = 0
    waiting: int = 0
    evaluations: int = 0
    skipped: int = 0
    unwoken: int = 0  # admitted but not told yet (a signal failed): retried shortly
    duration_ms: float = 0.0
    head: list[str] = Field(default_factory=list)  # the first few waiting: "id: reason"
    next_expiry: float | None = None  # the earliest exclusion of a pool that ends (workflow clock, epoch s)


class ReconcileReport(BaseModel):
    """What one reconciliation of a pool found and did (`fabric pool reconcile`, the monitor's)."""

    pool: str
    jobs_seen: int = 0
    reservations: int = 0
    released: list[str] = Field(default_factory=list)  # "workload attempt N: why"
    orphans: list[str] = Field(default_factory=list)  # job ids no live attempt owns: to cancel
    cancelled: list[str] = Field(default_factory=list)  # orphans the caller removed from the pool
    errors: list[str] = Field(default_factory=list)

    def summary(self) -> str:
        return (f"pool {self.pool}: {self.jobs_seen} jobs, {self.reservations} reservations; "
                f"released {len(self.released)} leaked reservations, removed {len(self.cancelled)} of "
                f"{len(self.orphans)} orphan jobs" + (f"; {len(self.errors)} errors" if self.errors else ""))
