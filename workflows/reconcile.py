"""The reconciler's steps, shared by the pool monitor (periodically, and when a pool recovers) and
ControlWorkflow (`fabric pool reconcile POOL`, on demand).

1. the pool's side lists its live fabric jobs (`pool_job_states`: one batched look, compact);
2. the control plane compares them with the store's reservations and the workflows
   (`control_reconcile`, activities/reconcile.py): leaked reservations are released there;
3. the pool's side cancels the orphan jobs, in one batched activity (`cancel_jobs`).
Called from workflow code only (deterministic). `stop_jobs` is also the monitor's way to stop, in
one call, the copies a failover left on the pool it moved work off.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from inferofabric.models.messages import PoolSpec, ReconcileInput, ReconcileReport, StatusesInput
    from inferofabric.task_queues import task_queue_for

POOL_CALL = timedelta(seconds=60)
RETRY = RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=5))
STOP_BUDGET = timedelta(minutes=3)


async def reconcile(pool: PoolSpec) -> ReconcileReport:
    queue = task_queue_for(pool, workflow.info().task_queue)
    try:
        states: dict[str, str] = await workflow.execute_activity(
            "pool_job_states", pool, task_queue=queue, result_type=dict, start_to_close_timeout=POOL_CALL,
            retry_policy=RETRY, summary=f"list the fabric's jobs on {pool.name}")
    except ActivityError as error:
        return ReconcileReport(pool=pool.name, errors=[f"the pool did not answer: {error.cause or error}"])
    report: ReconcileReport = await workflow.execute_activity(
        "control_reconcile", ReconcileInput(pool=pool.name, states=states), result_type=ReconcileReport,
        start_to_close_timeout=timedelta(minutes=5), retry_policy=RETRY, summary=f"reconcile {pool.name}")
    if report.orphans:
        outcome = await stop_jobs(pool, report.orphans, f"remove {len(report.orphans)} orphan job(s) from {pool.name}")
        report.cancelled += [job_id for job_id in report.orphans if outcome.get(job_id) == ""]
        report.errors += [f"could not remove orphan {job_id}: {outcome[job_id]}"
                          for job_id in report.orphans if outcome.get(job_id)]
    if report.released or report.orphans or report.errors:
        workflow.logger.info("reconciled %s", report.summary())
    return report


async def stop_jobs(pool: PoolSpec, job_ids: list[str], summary: str, retry: RetryPolicy = RETRY,
                    budget: timedelta = STOP_BUDGET) -> dict[str, str]:
    """Cancel the jobs on the pool in one activity: job id -> "" when stopped, else why not (every
    job says why when the pool's side did not answer at all). `budget` bounds the whole try, a dead
    agent's queue included (nobody picks the task up there)."""
    try:
        outcome: dict[str, str] = await workflow.execute_activity(
            "cancel_jobs", StatusesInput(pool=pool, job_ids=job_ids), task_queue=task_queue_for(
                pool, workflow.info().task_queue), result_type=dict, start_to_close_timeout=POOL_CALL,
            schedule_to_close_timeout=budget, retry_policy=retry, summary=summary)
    except ActivityError as error:
        why = f"the pool did not answer: {error.cause or error}"
        return {job_id: why for job_id in job_ids}
    return {job_id: outcome.get(job_id, "not reported") for job_id in job_ids}
