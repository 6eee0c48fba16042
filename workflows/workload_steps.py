"""What each WorkloadWorkflow attempt is made of, apart from deciding what to do next: follow the
job on its pool (the watcher's news, or a look of its own), stop it, give its GPUs back, leave the
queue, and keep the workload's visible state (status, events, search attributes, the endpoint's
reports) current. workflows/workload.py decides; this module does. Deterministic: all I/O is in
activities, called from workflow code only.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from inferofabric.models.common import Health, WorkloadState
    from inferofabric.models.endpoint_status import ReplicaReport
    from inferofabric.models.jobs import JobStatus
    from inferofabric.models.messages import DequeueInput, JobInput, ReleaseInput, ReplicaReportInput
    from inferofabric.models.pool import PoolSpec
    from inferofabric.models.status import WorkloadStatus
    from inferofabric.task_queues import task_queue_for
    from inferofabric.workflows.failures import cause_message
    from inferofabric.workflows.workload_state import WorkloadRun
    from inferofabric.workflows.workload_visibility import upsert

LOCAL_TIMEOUT = timedelta(seconds=60)
LOCAL_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=5))
# No patch markers: the admission redesign replaced every workflow recorded before it (no production
# deployment existed); tests/histories holds histories of the current code only.
# A pool a job failed on (launch failed, job lost) while its recorded health was still good is kept
# out of placement for this long; a pool the monitor or a drain took out of service needs no such
# exclusion: its recorded health keeps it out until it is healthy (and uncordoned) again.
EXCLUDE_FAILED_POOL = timedelta(seconds=30)
# Moves not charged to max_attempts still end somewhere: a workload moved this often gives up.
MAX_MOVES = 50
# Until the pool's watcher reports a job, the workflow looks at it itself this often (doubling).
NO_NEWS_CHECK = timedelta(seconds=10)
NO_NEWS_CHECK_MAX = timedelta(minutes=10)


class Moved(Exception):
    """The current attempt must move to another pool (pool failed, drained, job lost)."""

    def __init__(self, reason: str, health: Health, recorded: bool = False, preempted: bool = False,
                 charged: bool = False, copy_stopped: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.health = health
        self.recorded = recorded  # the pool's health/cordon is already recorded in the store
        self.preempted = preempted  # the admission loop asked for the GPUs back: not the job's fault
        self.charged = charged  # the job's own trouble: counts against max_attempts
        self.copy_stopped = copy_stopped  # the pool monitor stops the copy left behind (one batch per pool)


class WorkloadSteps:
    """The steps a workload's attempts are made of, over the one state of its run (WorkloadWorkflow
    holds that state, and these steps, and decides which step comes next)."""

    def __init__(self, state: WorkloadRun) -> None:
        self.state = state

    async def leave_requeued(self, workload_id: str) -> None:
        """Ending with a next attempt that a failover queued for us (or the loop admitted already):
        take it out of the queue, with whatever it holds."""
        state = self.state
        ahead = [n for n in [state.requeued, *state.admitted_ahead] if n is not None and n > state.attempt]
        if ahead:
            await self.dequeue(workload_id, max(ahead))
            self.state.requeued = None
            self.state.admitted_ahead.clear()

    async def dequeue(self, workload_id: str, attempt: int) -> None:
        await workflow.execute_local_activity(
            "dequeue_workload", DequeueInput(workload_id=workload_id, attempt=attempt), result_type=int,
            start_to_close_timeout=LOCAL_TIMEOUT, retry_policy=LOCAL_RETRY)

    async def follow(self, pool: PoolSpec, done: Any, timeout: timedelta | None) -> JobStatus | None:
        """Sleep until the watcher's news satisfies `done` (or `timeout` passes: the job as last seen);
        None when a cancel came first; Moved when the pool fails, is drained or preempts us.

        Until the watcher has said anything about this job (it reports every job at its first look),
        the workflow asks the pool itself now and then (10 s, doubling up to 10 min): a job that
        ended before the watcher's first look, or a watcher that is down, cannot leave it waiting."""
        def stop() -> bool:
            return self.state.stopping()

        def settled() -> bool:
            return stop() or (self.state.job is not None and done(self.state.job))

        def settled_or_news() -> bool:
            return settled() or self.state.news

        deadline = workflow.now() + timeout if timeout is not None else None
        check = NO_NEWS_CHECK
        while not settled():
            left = (deadline - workflow.now()) if deadline is not None else None
            if left is not None and left <= timedelta(0):
                break
            # Without news yet, wake for the first news or the next look of our own; with news, only
            # the deadline (if any) bounds the wait.
            if self.state.news:
                condition, wait = settled, left
            else:
                condition, wait = settled_or_news, (check if left is None else min(left, check))
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(condition, timeout=wait)
            if not settled() and not self.state.news and self.state.status is not None and self.state.status.job_id:
                await self._ask_pool(pool, self.state.status.job_id)
                check = min(check * 2, NO_NEWS_CHECK_MAX)
        if self.state.job is not None and done(self.state.job) and not self.state.cancel_requested:
            return self.state.job
        if not stop():
            return self.state.job  # timed out
        return self.stopped(pool.name)

    async def _ask_pool(self, pool: PoolSpec, job_id: str) -> None:
        """One look at the job from here (the watcher has not reported it yet)."""
        try:
            status: JobStatus = await self.activity(
                "job_status", JobInput(pool=pool, job_id=job_id), task_queue_for(pool, workflow.info().task_queue),
                JobStatus, timedelta(seconds=30), retry=RetryPolicy(maximum_attempts=2),
                summary=f"look at {job_id} (no news from the pool's watcher yet)")
        except ActivityError:
            return
        if self.state.job is None or not self.state.job.state.terminal:
            self.state.job = status

    async def race(self, task: Any, pool: str, settle_on_cancel: bool = False) -> JobStatus | None:
        """Await an activity unless the pool fails or a cancel arrives first (None = cancel)."""
        future = asyncio.ensure_future(task)
        stop = asyncio.ensure_future(workflow.wait_condition(self.state.stopping))
        done, _ = await workflow.wait([future, stop], return_when=asyncio.FIRST_COMPLETED)
        if future in done:
            stop.cancel()
            return future.result()  # type: ignore[no-any-return]
        if settle_on_cancel and self.state.cancel_requested:
            with contextlib.suppress(ActivityError):
                await future
            return None
        future.cancel()
        with contextlib.suppress(asyncio.CancelledError, ActivityError):
            await future
        return self.stopped(pool)

    def stopped(self, pool: str) -> JobStatus | None:
        """What stopped the wait: None for a cancel, else raise the move."""
        if self.state.cancel_requested:
            return None
        if self.state.preempt is not None:
            raise Moved(self.state.preempt.reason, Health.HEALTHY, recorded=True, preempted=True)
        assert self.state.relocate is not None
        raise Moved(f"pool {pool} {self.state.relocate.reason}", self.state.relocate.health, recorded=True,
                     copy_stopped=self.state.relocate.copies_stopped_by_sender)

    async def end_failed(self, workload_id: str, attempt: int, error: BaseException) -> WorkloadStatus:
        """The one way a workload ends on a failure it cannot get past: out of the queue (or its job
        stopped), its GPUs released, and the reason in its status, history, explanation and search
        attributes. A clean-up step that fails as well is recorded, not raised: the pool's reconciler
        releases what an ended workload still holds."""
        assert self.state.status is not None
        where = f" on {self.state.status.pool}" if self.state.status.pool else ""
        reason = f"attempt {attempt}{where} could not go on: {cause_message(error)}"
        queued = self.state.status.state == WorkloadState.QUEUED
        if not queued:
            self.history_end("failed")
        leave = (lambda: self.dequeue(workload_id, attempt)) if queued else (
            lambda: self.cleanup_attempt(workload_id, attempt, best_effort=True))
        for step in (leave, lambda: self.release_unreleased(workload_id), self.drain_background):
            # each on its own: one that fails does not skip the others
            try:
                await step()
            except (ActivityError, ApplicationError) as cleanup:
                self.event(f"clean-up after the failure did not finish ({cause_message(cleanup)}); the pool's "
                            "reconciler releases what is left")
        return await self.finish(WorkloadState.FAILED, reason)

    async def cancel_attempt(self, workload_id: str, attempt: int) -> WorkloadStatus:
        await self.cleanup_attempt(workload_id, attempt, best_effort=False)
        self.history_end("cancelled")
        return await self.finish(WorkloadState.CANCELLED, "cancelled by request")

    async def cleanup_attempt(self, workload_id: str, attempt: int, best_effort: bool,
                              cancel_job: bool = True, release: bool = True, ended: JobStatus | None = None) -> None:
        """Stop the attempt's job (if asked) and release its GPUs (unless the caller releases them
        with the next enqueue).

        Best effort (moving off a failed pool): the cancel runs in the background so a dead pool
        cannot delay the move; the pool monitor removes orphan copies when the pool answers again.
        """
        pool = self.state.pool
        if cancel_job and pool is not None and self.state.status is not None and self.state.status.job_id:
            cancel = self._cancel_job(pool, self.state.status.job_id, best_effort)
            if best_effort:
                self.state.background.append(asyncio.ensure_future(cancel))
            else:
                await cancel
        if release:
            await self._release(workload_id, attempt, ended)
        self.state.pool = None

    async def _release(self, workload_id: str, attempt: int, ended: JobStatus | None = None) -> None:
        """Give the attempt's GPUs back; its ledger line ends at the back end's end when `ended` says."""
        await workflow.execute_local_activity(
            "release_capacity", ReleaseInput(workload_id=workload_id, attempt=attempt,
                                             ended_at=ended.finished_at if ended else None,
                                             started_at=ended.started_at if ended else None),
            start_to_close_timeout=LOCAL_TIMEOUT, retry_policy=LOCAL_RETRY)

    async def release_unreleased(self, workload_id: str) -> None:
        """Give back the GPUs of a moved attempt that no enqueue has released yet."""
        if self.state.unreleased is not None:
            await self._release(workload_id, self.state.unreleased)
            self.state.unreleased = None

    async def _cancel_job(self, pool: PoolSpec, job_id: str, best_effort: bool) -> None:
        try:
            await self.activity(
                "cancel_job", JobInput(pool=pool, job_id=job_id), task_queue_for(pool, workflow.info().task_queue),
                type(None), timedelta(seconds=20), retry=RetryPolicy(maximum_attempts=2 if best_effort else 5),
                summary=f"cancel {job_id} on {pool.name}",
                schedule_to_close=timedelta(seconds=30 if best_effort else 120),
            )
            self.event(f"cancelled {job_id} on {pool.name}")
        except ActivityError as error:
            self.event(f"could not cancel {job_id} on {pool.name} now ({cause_message(error)}); "
                        "the pool monitor removes it when the pool answers again")

    async def drain_background(self) -> None:
        if self.state.background:
            await asyncio.gather(*self.state.background, return_exceptions=True)
            self.state.background.clear()

    def activity(self, name: str, arg: Any, queue: str, result_type: Any, start_to_close: timedelta,
                  retry: RetryPolicy, summary: str, heartbeat: timedelta | None = None,
                  schedule_to_close: timedelta | None = None) -> Any:
        return workflow.execute_activity(
            name, arg, task_queue=queue, result_type=result_type, start_to_close_timeout=start_to_close,
            schedule_to_close_timeout=schedule_to_close, heartbeat_timeout=heartbeat, retry_policy=retry,
            summary=summary,
        )

    # -- state ---------------------------------------------------------------------------------------
    async def finish(self, state: WorkloadState, message: str) -> WorkloadStatus:
        self.set_status(state=state, message=message)
        self.upsert(state=state)
        self.event(f"{state.value}: {message}")
        assert self.state.status is not None
        return self.state.status

    def set_status(self, **fields: Any) -> None:
        assert self.state.status is not None
        before = (self.state.status.state, self.state.status.address)
        for key, value in fields.items():
            setattr(self.state.status, key, value)
        self.state.status.updated_at = workflow.now()
        if (self.state.status.state, self.state.status.address) != before:
            self._report()

    def _report(self) -> None:
        """A replica of an endpoint (a child of its EndpointWorkflow) tells the endpoint where it is
        and in what state. Through a local activity: the signal carries the worker's own identity."""
        parent = workflow.info().parent
        if parent is None or self.state.status is None:
            return
        self.state.report_seq += 1
        status = self.state.status
        report = ReplicaReport(replica=status.id, seq=self.state.report_seq, state=status.state, pool=status.pool,
                               location=status.location, backend=status.backend, address=status.address,
                               message=status.message)
        self.state.reports = [r for r in self.state.reports if not r.done()]
        self.state.reports.append(workflow.start_local_activity(
            "report_replica", ReplicaReportInput(endpoint_id=parent.workflow_id, report=report),
            start_to_close_timeout=LOCAL_TIMEOUT,
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=5), maximum_attempts=5)))

    async def flush_reports(self) -> None:
        if self.state.reports:
            await asyncio.gather(*self.state.reports, return_exceptions=True)
            self.state.reports.clear()

    def history_end(self, outcome: str) -> None:
        if self.state.status and self.state.status.history:
            self.state.status.history[-1].outcome = outcome
            self.state.status.history[-1].ended_at = workflow.now()

    def event(self, text: str) -> None:
        self.state.events.append(f"{workflow.now().strftime('%H:%M:%S')} {text}")

    def upsert(self, **attributes: Any) -> None:
        self.state.memo = upsert(self.state.status, self.state.memo, **attributes)
