"""PoolWatcherWorkflow: one per pool (id `pool-watcher-<task queue>-<pool>`); keeps the pool's watcher running.

The watcher is one long-running activity (activities/watch.py) on the pool's monitor queue; it
heartbeats, so a worker that dies is noticed within the heartbeat timeout and the activity is
retried elsewhere, from its last heartbeat. Each activity run ends after `run_seconds` (then the
next one reads the pool's spec afresh: new credentials, a new endpoint); history stays bounded by
continue-as-new. A removed pool ends the workflow.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from inferofabric.models.messages import WatcherInput, WatchPoolInput, WatchPoolResult
    from inferofabric.task_queues import fabric_queue, monitor_queue_for
    from inferofabric.workflows.decode_failures import DECODE_FAILURES  # undecodable input fails the workflow
    from inferofabric.workflows.pool_spec import current_pool_spec

HEARTBEAT = timedelta(seconds=30)


def watcher_id(pool: str, task_queue: str) -> str:
    """One watcher per pool of each fabric (fabrics in one namespace have their own task queues)."""
    return f"pool-watcher-{task_queue}-{pool}"


@workflow.defn(name="PoolWatcherWorkflow", failure_exception_types=DECODE_FAILURES, sandboxed=False)
class PoolWatcherWorkflow:
    @workflow.run
    async def run(self, state: WatcherInput) -> None:
        settings = state.settings
        for _ in range(settings.runs_per_history):
            pool = await current_pool_spec(state.pool)
            if pool is None:
                return  # the pool was removed
            workflow.set_current_details(f"watching the jobs of pool **{pool.name}** every "
                                         f"{settings.period_seconds:g}s (one batched look per period)")
            result: WatchPoolResult = await workflow.execute_activity(
                "watch_pool", WatchPoolInput(pool=pool, settings=settings, known=state.known),
                task_queue=monitor_queue_for(pool, fabric_queue(workflow.info().task_queue)),
                result_type=WatchPoolResult,
                start_to_close_timeout=timedelta(seconds=settings.run_seconds + 120), heartbeat_timeout=HEARTBEAT,
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
                summary=f"watch the jobs of {pool.name}",
            )
            state.known = result.known
        workflow.continue_as_new(state)
