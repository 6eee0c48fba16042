"""PoolMonitorWorkflow: one per pool; probes health on a period, with hysteresis.

A pool turns unhealthy after `unhealthy_after` failed probes in a row (a probe that times out,
e.g. because the pool's agent is silent and nobody polls its task queue, is a failed probe), and
healthy again after `healthy_after` good ones. On turning unhealthy it tells every workload on the
pool to move; on recovering it removes orphan copies left behind by those moves. History is
bounded with continue-as-new.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from inferofabric.backends.base import job_id_for
    from inferofabric.backends.registry import task_queue_for
    from inferofabric.models.common import Health

    # PoolSpec comes from the module that declares JobInput, so that the spec returned by
    # control_pool_spec is an instance of the very class JobInput.pool expects: in the sandbox,
    # inferofabric.models.pool can be a re-imported copy of the class messages.py refers to.
    from inferofabric.models.messages import JobInput, MonitorInput, PoolSpec, ProbeResult, RelocateSignal

LOCAL_TIMEOUT = timedelta(seconds=30)
LOCAL_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=5))


def next_health(current: Health | None, probe: ProbeResult, failures: int, successes: int,
                unhealthy_after: int, healthy_after: int) -> Health | None:
    """The hysteresis rule, as a pure function (unit-tested on its own)."""
    if not probe.ok:
        if failures >= unhealthy_after:
            return Health.UNHEALTHY
        return current
    if current == Health.UNHEALTHY and successes < healthy_after:
        return current
    return probe.health


@workflow.defn(name="PoolMonitorWorkflow")
class PoolMonitorWorkflow:
    def __init__(self) -> None:
        self._state: MonitorInput | None = None

    @workflow.query(name="state")
    def state(self) -> MonitorInput:
        assert self._state is not None
        return self._state

    @workflow.run
    async def run(self, state: MonitorInput) -> None:
        self._state = state
        settings = state.settings
        for _ in range(settings.iterations_per_run):
            try:
                pool: PoolSpec = await workflow.execute_local_activity(
                    "control_pool_spec", state.pool, result_type=PoolSpec,
                        start_to_close_timeout=LOCAL_TIMEOUT, retry_policy=LOCAL_RETRY)
            except (ActivityError, ApplicationError) as error:
                # A local activity's failure can arrive unwrapped (ApplicationError, not ActivityError).
                cause = error.cause if isinstance(error, ActivityError) else error
                if isinstance(cause, ApplicationError) and cause.type == "NotFound":
                    return  # the pool was removed: nothing left to watch
                raise
            probe = await self._probe(pool)
            if probe.ok:
                state.successes += 1
                state.failures = 0
            else:
                state.failures += 1
                state.successes = 0
            health = next_health(state.health, probe, state.failures, state.successes,
                                 settings.unhealthy_after, settings.healthy_after)
            if health is not None and (health != state.health or probe.gpus is not None):
                await self._record(pool, state.health, health, probe)
                state.health = health
            await workflow.sleep(timedelta(seconds=settings.period_seconds))
        workflow.continue_as_new(state)

    async def _probe(self, pool: PoolSpec) -> ProbeResult:
        timeout = timedelta(seconds=self._state.settings.probe_timeout_seconds)  # type: ignore[union-attr]
        try:
            result: ProbeResult = await workflow.execute_activity(
                "probe_pool", pool, task_queue=task_queue_for(pool, workflow.info().task_queue),
                result_type=ProbeResult, schedule_to_close_timeout=timeout,
                retry_policy=RetryPolicy(maximum_attempts=1), summary=f"probe {pool.name}",
            )
            return result
        except ActivityError as error:
            reason = "no answer from the pool's agent" if _timed_out(error) else f"probe failed: {error.cause}"
            return ProbeResult(ok=False, health=Health.UNHEALTHY, reason=reason)

    async def _record(self, pool: PoolSpec, before: Health | None, after: Health, probe: ProbeResult) -> None:
        reason = probe.reason or after.value
        await workflow.execute_local_activity(
            "control_record_health", args=[pool.name, after, reason, probe.gpus],
            start_to_close_timeout=LOCAL_TIMEOUT, retry_policy=LOCAL_RETRY,
        )
        # Act on the monitor's own transition, not only on a change of the pool's effective health in
        # the store: a cordoned pool that dies shows no effective change (it stays "cordoned"), yet
        # the work still running on it must move, and its orphans must go when it recovers.
        if after == Health.UNHEALTHY and before != Health.UNHEALTHY:
            await self._move_workloads(pool, reason)
        elif before == Health.UNHEALTHY and after != Health.UNHEALTHY:
            await self._remove_orphans(pool)

    async def _move_workloads(self, pool: PoolSpec, reason: str) -> None:
        rows = await workflow.execute_local_activity("control_workloads_on_pool", pool.name,
            start_to_close_timeout=LOCAL_TIMEOUT, retry_policy=LOCAL_RETRY)
        for row in rows:
            handle = workflow.get_external_workflow_handle(row["workload_id"])
            try:
                await handle.signal("relocate", RelocateSignal(pool=pool.name, reason=f"became unhealthy: {reason}"))
            except Exception:
                workflow.logger.info("workload %s already finished", row["workload_id"])

    async def _remove_orphans(self, pool: PoolSpec) -> None:
        """Cancel jobs on the pool that no active reservation owns (copies left by a failover)."""
        queue = task_queue_for(pool, workflow.info().task_queue)
        try:
            jobs: list[str] = await workflow.execute_activity(
                "list_pool_jobs", pool, task_queue=queue, start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3), summary=f"find orphans on {pool.name}")
        except ActivityError:
            return  # try again at the next recovery
        rows = await workflow.execute_local_activity("control_workloads_on_pool", pool.name,
            start_to_close_timeout=LOCAL_TIMEOUT, retry_policy=LOCAL_RETRY)
        owned = {job_id_for(row["workload_id"], row["attempt"]) for row in rows}
        for job_id in jobs:
            if job_id in owned:
                continue
            try:
                await workflow.execute_activity(
                    "cancel_job", JobInput(pool=pool, job_id=job_id), task_queue=queue,
                    start_to_close_timeout=timedelta(seconds=30), retry_policy=RetryPolicy(maximum_attempts=3),
                    summary=f"remove orphan {job_id}")
                workflow.logger.info("removed orphan job %s from pool %s", job_id, pool.name)
            except ActivityError:
                continue


def _timed_out(error: ActivityError) -> bool:
    from temporalio.exceptions import TimeoutError as TemporalTimeout

    return isinstance(error.cause, TemporalTimeout)
