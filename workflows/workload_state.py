"""The state of one workload's run: the one thing WorkloadWorkflow holds.

WorkloadWorkflow (workflows/workload.py) decides, WorkloadSteps (workflows/workload_steps.py) carries
the attempts out; both read and write this one object, which the workflow creates and hands to its
steps. What the signals, updates and queries see is here and nowhere else. Plain data, no I/O.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from inferofabric.models.jobs import JobStatus
    from inferofabric.models.messages import AdmittedSignal, PreemptSignal, RelocateSignal
    from inferofabric.models.pool import PoolSpec
    from inferofabric.models.status import Decision, WorkloadStatus


def _memo() -> dict[str, Any]:
    return {"region": "", "attempts": 0, "backend": "", "message": ""}


@dataclass
class WorkloadRun:
    """Everything a WorkloadWorkflow run knows about its workload, as of now."""

    status: WorkloadStatus | None = None  # what `status` shows (None until the run has read its input)
    decisions: list[Decision] = field(default_factory=list)  # one per admission, for `explain`
    events: list[str] = field(default_factory=list)  # "HH:MM:SS text", for `explain`
    cancel_requested: bool = False
    relocate: RelocateSignal | None = None  # the pool failed or is drained: move
    pool: PoolSpec | None = None  # the pool of the current attempt, while it has one
    background: list[asyncio.Future[None]] = field(default_factory=list)  # best-effort cancels under way
    memo: dict[str, Any] = field(default_factory=_memo)  # search attributes, as last set
    attempt: int = 0
    admitted: AdmittedSignal | None = None  # the current attempt's admission
    preempt: PreemptSignal | None = None
    job: JobStatus | None = None  # the current attempt's job, as the pool's watcher last saw it
    launched: bool = False  # the current attempt's launch returned (before it, "lost" is not news)
    news: bool = False  # the pool's watcher has reported this attempt's job
    unreleased: int | None = None  # a moved attempt whose GPUs the next enqueue gives back
    requeued: int | None = None  # the next attempt, queued by a failover on our behalf
    admitted_ahead: dict[int, AdmittedSignal] = field(default_factory=dict)  # an admission before its attempt
    reports: list[Any] = field(default_factory=list)  # an endpoint's replica: state reports on their way
    report_seq: int = 0

    def stopping(self) -> bool:
        """A cancel, a move or a preemption came: the current step stops waiting."""
        return self.cancel_requested or self.relocate is not None or self.preempt is not None
