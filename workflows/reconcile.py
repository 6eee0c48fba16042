"""The reconciler's steps, shared by the pool monitor (periodically, and when a pool recovers) and
ControlWorkflow (`fabric pool reconcile POOL`, on demand).

1. the pool's side lists its live fabric jobs (`pool_job_states`: one batched look, compact);
2. the control plane compares them with the store's reservations and the workflows
   (`control_reconcile`, activities/reconcile.py): leaked reservations are released there;
3. the pool's side cancels each orphan job.
Called from workflow code only (deterministic).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from inferofabric.backends.registry import task_queue_for
    from inferofabric.models.messages import JobInput, PoolSpec, ReconcileReport

POOL_CALL = timedelta(seconds=60)
RETRY = RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=5))


async def reconcile(pool: PoolSpec) -> ReconcileReport:
    queue = task_queue_for(pool, workflow.info().task_queue)
    try:
        states: dict[str, str] = await workflow.execute_activity(
            "pool_job_states", pool, task_queue=queue, result_type=dict, start_to_close_timeout=POOL_CALL,
            retry_policy=RETRY, summary=f"list the fabric's jobs on {pool.name}")
    except ActivityError as error:
        return ReconcileReport(pool=pool.name, errors=[f"the pool did not answer: {error.cause or error}"])
    report: ReconcileReport = await workflow.execute_activity(
        "control_reconcile", args=[pool.name, states], result_type=ReconcileReport,
        start_to_close_timeout=timedelta(minutes=5), retry_policy=RETRY, summary=f"reconcile {pool.name}")
    for job_id in report.orphans:
        try:
            await workflow.execute_activity(
                "cancel_job", JobInput(pool=pool, job_id=job_id), task_queue=queue, start_to_close_timeout=POOL_CALL,
                retry_policy=RETRY, summary=f"remove orphan {job_id}")
            report.cancelled.append(job_id)
        except ActivityError as error:
            report.errors.append(f"could not remove orphan {job_id}: {error.cause or error}")
    if report.released or report.orphans or report.errors:
        workflow.logger.info("reconciled %s", report.summary())
    return report
