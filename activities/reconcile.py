"""The reconciler's control-plane half: the store's reservations against the pool's jobs and the
workflows' states.

Three sources can disagree after crashes, races and moves: the store (GPUs reserved per attempt),
the back end (the jobs that exist) and Temporal (which workload attempts are alive). The rules:
- a reservation whose workflow has closed is leaked (the attempt died between reserve and
  release): it is released, and the admission loop woken;
- a live fabric job that no active reservation owns is an orphan (a copy left by a move, a launch
  that raced a cancel): it is named, and the caller cancels it on the pool — on every pool,
  cordoned and drained ones included.
A reservation younger than GRACE is left alone: its launch may still be on its way.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from inferofabric.backends.base import JobState, job_id_for
from inferofabric.models.messages import ReconcileReport
from inferofabric.store.db import Store, as_utc
from inferofabric.threads import in_store

GRACE = timedelta(seconds=60)
DESCRIBES_IN_FLIGHT = 32


async def _workflow_closed(client: Client, workload_id: str) -> bool | None:
    """True when the workload's workflow has closed (or never existed); None when Temporal did not say."""
    try:
        description = await client.get_workflow_handle(workload_id).describe()
    except RPCError as error:
        return True if error.status == RPCStatusCode.NOT_FOUND else None
    return description.status != WorkflowExecutionStatus.RUNNING


async def reconcile_pool(store: Store, client: Client, pool: str, states: dict[str, str],
                         now: datetime | None = None) -> ReconcileReport:
    now = now or datetime.now(UTC)
    rows = await in_store(store.active_reservations, pool)
    report = ReconcileReport(pool=pool, jobs_seen=len(states), reservations=len(rows))
    gate = asyncio.Semaphore(DESCRIBES_IN_FLIGHT)
    released = 0
    gone: set[tuple[str, int]] = set()

    async def check(workload_id: str, attempt: int) -> None:
        nonlocal released
        async with gate:
            closed = await _workflow_closed(client, workload_id)
        if closed is None:
            report.errors.append(f"{workload_id}: Temporal did not answer")
        elif closed:
            released += await in_store(store.release, workload_id, attempt)
            gone.add((workload_id, attempt))
            report.released.append(f"{workload_id} attempt {attempt}: its workflow has ended")

    old = [r for r in rows if as_utc(r.created_at) < now - GRACE]
    await asyncio.gather(*(check(r.workload_id, r.attempt) for r in old))
    owned = {job_id_for(r.workload_id, r.attempt) for r in rows if (r.workload_id, r.attempt) not in gone}
    report.orphans = sorted(job_id for job_id, state in states.items()
                            if job_id not in owned and not JobState(state).terminal)
    report.released.sort()
    if released:
        from inferofabric.activities.admission import wake_from_activity

        await wake_from_activity(f"reconciler released {released} reservations on {pool}")
    return report
