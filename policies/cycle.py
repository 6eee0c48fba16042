"""What one admission cycle reads and what it decides (pure: no I/O, no temporalio).

`CycleInput` is the snapshot a cycle decides on, built once per cycle (the live loop from the store's
transaction, `fabric policy simulate` from its simulated fleet) and handed to `plan_cycle`;
`CyclePlan` is what it decided: admissions, preemptions, claims and, for people, the waiting work
in order with its reasons.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from inferofabric.models.common import Health
from inferofabric.models.status import Decision, PoolView, WaitKind
from inferofabric.models.workload import WorkloadSpec
from inferofabric.policies.budget import BudgetState
from inferofabric.policies.engine import CompiledPolicy

NEVER, LOWER_PRIORITY, RECLAIM_BORROWED = "never", "lower_priority", "reclaim_borrowed"


@dataclass
class Pending:
    """A waiting workload as the planner sees it."""

    workload_id: str
    attempt: int
    seq: int  # submission order; kept when the workload is preempted or moved
    team: str
    spec: WorkloadSpec
    priority_class: str
    class_value: int
    preemption: str = NEVER
    exclude: dict[str, str] = field(default_factory=dict)
    failed_pool_health: Health | None = None
    shape: Hashable | None = None  # filled by `shape_key` when absent
    approval: str | None = None  # "approved" | "denied" (by whom, in words) | None: not decided
    approval_asked_at: float | None = None  # when admission first asked for it (epoch s)

    @property
    def gpus(self) -> int:
        return self.spec.total_gpus

    @property
    def runtime_s(self) -> float | None:
        return float(self.spec.max_runtime_seconds) if self.spec.max_runtime_seconds else None


@dataclass
class Held:
    """GPUs an admitted attempt holds (a reservation)."""

    workload_id: str
    attempt: int
    team: str
    pool: str
    location: str
    gpu_type: str | None
    gpus: int
    class_value: int = 0
    priority_class: str = ""
    priority: int = 0
    started_at: float = 0.0
    expected_end: float | None = None  # started_at + max_runtime_seconds, when known
    borrowing: bool = False
    preempting: bool = False  # a preemption was requested: these GPUs are about to be freed
    order: int = 0  # admission order (the reservation's id): breaks ties of equal start times


@dataclass(frozen=True)
class CycleInput:
    """The snapshot one admission cycle decides on.

    `pools` carry their reservations in `used`; `held` lists those reservations with their owners;
    `usage` is each team's decayed GPU-seconds; `now` in epoch seconds; `budgets` each budget's
    standing before the cycle (the cycle adds its reservations to them); `explain`: record position
    and reason of the first N waiting workloads (True: all). The cycle marks the `Held` it preempts
    (`preempting`) and fills each `Pending`'s `shape`."""

    pending: Sequence[Pending]
    held: Sequence[Held]
    pools: Sequence[PoolView]
    policy: CompiledPolicy
    usage: Mapping[str, float] = field(default_factory=dict)
    now: float = 0.0
    explain: int | bool = False
    budgets: Sequence[BudgetState] = ()


@dataclass
class Admission:
    pending: Pending
    decision: Decision


@dataclass
class Preemption:
    victim: Held
    preemptor: str
    reason: str


@dataclass
class Waiting:
    workload_id: str
    team: str
    priority_class: str
    position: int  # 1 = next to be admitted
    team_position: int
    reason: str  # for people
    kind: WaitKind = WaitKind.OTHER  # for code


@dataclass(frozen=True)
class ClaimMade:
    """GPUs a waiting workload keeps from work ordered after it (backfill that ends before `shadow` aside)."""

    claimant: str
    pool: str
    gpu_type: str
    amount: int
    shadow: float  # when the claimant is expected to be able to start (inf: unknown)


@dataclass
class CyclePlan:
    admitted: list[Admission] = field(default_factory=list)
    preemptions: list[Preemption] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)  # in admission order (only when explained)
    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    quotas: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    waiting_total: int = 0  # every workload left waiting (`waiting` may hold only the first ones)
    evaluations: int = 0  # policy-engine decisions made (the rest were skipped as known misfits)
    skipped: int = 0
    approvals: list[Admission] = field(default_factory=list)  # placements waiting for a person's approval
    budgets: list[BudgetState] = field(default_factory=list)  # each budget after this cycle's reservations
    next_deadline: float | None = None  # the earliest approval timeout (the loop looks again then)
    claims: list[ClaimMade] = field(default_factory=list)  # in the order they were made
