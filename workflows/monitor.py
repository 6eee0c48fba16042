"""PoolMonitorWorkflow: one per pool; probes health on a period, with hysteresis.

A pool turns unhealthy after `unhealthy_after` failed probes in a row (a probe that times out,
e.g. because the pool's agent is silent and nobody polls its task queue, is a failed probe), and
healthy again after `healthy_after` good ones. A throttled API ("slow down") is neither: a pool
that answers is alive. Probes run on the pool's monitor queue, whose slots no launch or control call
can take. On turning unhealthy it tells every workload on the pool to move (one activity signals
them all); it reconciles the pool (leaked reservations, orphan jobs) every `reconcile_seconds`,
and when the pool recovers. Moves and reconciliations run beside the probes, never in their way.
History is bounded with continue-as-new.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from inferofabric.models.common import Health

    # PoolSpec comes from the module that declares JobInput, so that the spec returned by
    # control_pool_spec is an instance of the very class JobInput.pool expects: in the sandbox,
    # inferofabric.models.pool can be a re-imported copy of the class messages.py refers to.
    from inferofabric.models.messages import (
        MonitorInput,
        MoveOffInput,
        PoolSpec,
        ProbeResult,
        ReconcileReport,
        RecordHealthInput,
    )
    from inferofabric.task_queues import fabric_queue, monitor_queue_for, task_queue_for
    from inferofabric.workflows.decode_failures import DECODE_FAILURES  # undecodable input fails the workflow
    from inferofabric.workflows.pool_spec import current_pool_spec
    from inferofabric.workflows.reconcile import reconcile, stop_jobs

LOCAL_TIMEOUT = timedelta(seconds=30)
LOCAL_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=5))
# A probe run by the control plane's own worker may wait this long for it (a busy worker is not a
# dead pool); an agent's probe keeps the configured budget (silence = the agent is gone).
OWN_PROBE_BUDGET = timedelta(seconds=30)
# The best-effort stop of the copies a failover left on the pool (what it does not stop, the
# reconciler removes when the pool answers again).
FAILOVER_STOP_BUDGET = timedelta(seconds=60)


def next_health(current: Health | None, probe: ProbeResult, failures: int, successes: int,
                unhealthy_after: int, healthy_after: int) -> Health | None:
    """The hysteresis rule, as a pure function (unit-tested on its own)."""
    if probe.throttled:
        return current
    if not probe.ok:
        if failures >= unhealthy_after:
            return Health.UNHEALTHY
        return current
    if current == Health.UNHEALTHY and successes < healthy_after:
        return current
    return probe.health


@workflow.defn(name="PoolMonitorWorkflow", failure_exception_types=DECODE_FAILURES, sandboxed=False)
class PoolMonitorWorkflow:
    def __init__(self) -> None:
        self._state: MonitorInput | None = None
        self._background: list[asyncio.Task[None]] = []
        self._last_report: ReconcileReport | None = None
        self._reconcile_requested = False

    @workflow.query(name="state")
    def state(self) -> MonitorInput:
        assert self._state is not None
        return self._state

    @workflow.query(name="last_reconcile")
    def last_reconcile(self) -> ReconcileReport | None:
        return self._last_report

    @workflow.signal(name="reconcile")
    def request_reconcile(self) -> None:
        self._reconcile_requested = True

    @workflow.run
    async def run(self, state: MonitorInput) -> None:
        self._state = state
        settings = state.settings
        if state.last_reconcile is None:
            state.last_reconcile = workflow.now().timestamp()
        for _ in range(settings.iterations_per_run):
            pool = await current_pool_spec(state.pool)
            if pool is None:
                await self._settle()
                return  # the pool was removed: nothing left to watch
            probe = await self._probe(pool)
            if probe.throttled:
                pass  # alive but slow: the counters stay as they are
            elif probe.ok:
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
            due = workflow.now().timestamp() - state.last_reconcile >= settings.reconcile_seconds
            if (due or self._reconcile_requested) and state.health != Health.UNHEALTHY:
                self._reconcile_requested = False
                state.last_reconcile = workflow.now().timestamp()
                self._spawn(self._reconcile(pool))
            await workflow.sleep(timedelta(seconds=_next_probe_in(state)))
        await self._settle()
        workflow.continue_as_new(state)

    def _spawn(self, work: Any) -> None:
        self._background = [task for task in self._background if not task.done()]
        self._background.append(asyncio.ensure_future(work))

    async def _settle(self) -> None:
        """Let moves and reconciliations in flight finish before the run ends."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
            self._background.clear()

    async def _probe(self, pool: PoolSpec) -> ProbeResult:
        """One probe. For a pool with an agent, silence within the budget is a failed probe (nobody
        polls its queue: the agent or its network is gone). For a pool probed from the control
        plane's own worker, a probe that does not come back in time says the *worker* is busy, not
        that the pool is down: it is inconclusive (the back ends' own request timeouts turn a
        hanging cloud API into an explicit failure)."""
        budget = timedelta(seconds=self._state.settings.probe_timeout_seconds)  # type: ignore[union-attr]
        fabric = fabric_queue(workflow.info().task_queue)
        queue = monitor_queue_for(pool, fabric)
        agent = task_queue_for(pool, fabric) != fabric
        try:
            result: ProbeResult = await workflow.execute_activity(
                "probe_pool", pool, task_queue=queue, result_type=ProbeResult,
                schedule_to_close_timeout=budget if agent else max(budget, OWN_PROBE_BUDGET),
                retry_policy=RetryPolicy(maximum_attempts=1), summary=f"probe {pool.name}",
            )
            return result
        except ActivityError as error:
            if _timed_out(error) and not agent:
                return ProbeResult(ok=True, throttled=True, health=Health.HEALTHY,
                                   reason="the probe did not come back from this worker in time (busy worker)")
            reason = "no answer from the pool's agent" if _timed_out(error) else f"probe failed: {error.cause}"
            return ProbeResult(ok=False, health=Health.UNHEALTHY, reason=reason)

    async def _record(self, pool: PoolSpec, before: Health | None, after: Health, probe: ProbeResult) -> None:
        reason = probe.reason or after.value
        await workflow.execute_local_activity(
            "control_record_health", RecordHealthInput(pool=pool.name, health=after, reason=reason, gpus=probe.gpus),
            start_to_close_timeout=LOCAL_TIMEOUT, retry_policy=LOCAL_RETRY,
        )
        # Act on the monitor's own transition, not only on a change of the pool's effective health in
        # the store: a cordoned pool that dies shows no effective change (it stays "cordoned"), yet
        # the work still running on it must move, and its orphans must go when it recovers.
        if after == Health.UNHEALTHY and before != Health.UNHEALTHY:
            self._spawn(self._move_workloads(pool, reason))
        elif before == Health.UNHEALTHY and after != Health.UNHEALTHY:
            if self._state is not None:
                self._state.last_reconcile = workflow.now().timestamp()
            self._spawn(self._reconcile(pool))

    async def _move_workloads(self, pool: PoolSpec, reason: str) -> None:
        """Tell every workload on the pool to move, then stop the copies they left there in one
        batched call (best effort: a dead pool does not answer; the reconciler removes what is left
        when the pool is back)."""
        try:
            left: list[str] = await workflow.execute_activity(
                "control_move_off",
                MoveOffInput(pool=pool.name, reason=f"became unhealthy: {reason}", health=Health.UNHEALTHY),
                start_to_close_timeout=timedelta(minutes=10), heartbeat_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=5), maximum_attempts=5),
                summary=f"move every workload off {pool.name}")
        except ActivityError as error:
            workflow.logger.warning("could not tell every workload to leave %s: %s", pool.name, error)
            return
        if left:
            # Short: a dead pool mostly does not answer, and the end of a monitor run waits for this.
            outcome = await stop_jobs(pool, left, f"stop the {len(left)} copies left on {pool.name}",
                                      retry=RetryPolicy(maximum_attempts=2), budget=FAILOVER_STOP_BUDGET)
            stopped = sum(1 for why in outcome.values() if not why)
            if stopped < len(left):
                workflow.logger.info("%d of %d copies left on %s not stopped yet (the reconciler removes them "
                                     "when the pool answers)", len(left) - stopped, len(left), pool.name)

    async def _reconcile(self, pool: PoolSpec) -> None:
        self._last_report = await reconcile(pool)
        health = self._state.health.value if self._state and self._state.health else "unknown"
        workflow.set_current_details(f"health **{health}**\n\nlast reconciliation: {self._last_report.summary()}")


def _next_probe_in(state: MonitorInput) -> float:
    """The period, or the shorter transition period while probes disagree with the recorded health
    (failing while healthy, answering while unhealthy): a transition is confirmed, or called off, fast."""
    settings = state.settings
    failing = state.failures > 0 and state.health != Health.UNHEALTHY
    recovering = state.successes > 0 and state.health == Health.UNHEALTHY
    if settings.transition_period_seconds is not None and (failing or recovering):
        return min(settings.transition_period_seconds, settings.period_seconds)
    return settings.period_seconds


def _timed_out(error: ActivityError) -> bool:
    from temporalio.exceptions import TimeoutError as TemporalTimeout

    return isinstance(error.cause, TemporalTimeout)
