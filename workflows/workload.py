"""WorkloadWorkflow: one durable workflow per workload (workflow id = workload id).

enqueue -> sleep until the admission loop admits it (signal `admitted`: decided and reserved) ->
launch on the chosen pool -> sleep until the pool's watcher says the job ended (signal `job_state`)
-> release. A waiting workload runs no timers and no placement of its own: it sleeps on the signal,
so a day of waiting adds no history; a running one holds no activity slot (one watcher per pool
follows every job there in batched looks).

If the pool fails (health monitor signal), is drained, or the job is lost, the workflow moves the
workload: it cancels the old copy best-effort, releases its GPUs and queues again (in its place,
with the failed pool excluded, under the policy's failover rule). The failed pool stays out while its
recorded health says so (unhealthy, cordoned), or for 30 s after a job-level failure. A preempted
workload (signal `preempt`) stops its job gracefully and re-queues in its place. Moves the fabric
or a pool caused (failover, drain, a job lost to node loss, eviction or a spot reclaim, preemption)
are not charged to `max_attempts`: only the job's own trouble is (a launch that fails, a job pending
past its launch timeout). Deterministic: all I/O is in activities.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from inferofabric.errors import NON_RETRYABLE, FailureType
    from inferofabric.models.common import Health, WorkloadState
    from inferofabric.models.jobs import JobState, JobStatus, job_id_for
    from inferofabric.models.messages import (
        AdmittedSignal,
        ApprovalAnswer,
        ApprovalInput,
        EnqueueInput,
        JobUpdate,
        LaunchInput,
        PreemptSignal,
        PriorityClassInput,
        RelocateSignal,
        SealSecretsInput,
        StartedInput,
        WaitingSignal,
        WorkloadRequest,
    )
    from inferofabric.models.pool import PoolSpec
    from inferofabric.models.status import AttemptRecord, Decision, Explanation, WorkloadStatus
    from inferofabric.task_queues import task_queue_for
    from inferofabric.workflows.decode_failures import DECODE_FAILURES  # undecodable input fails the workflow
    from inferofabric.workflows.failures import cause_message, cause_type, summarize
    from inferofabric.workflows.workload_state import WorkloadRun
    from inferofabric.workflows.workload_steps import (
        EXCLUDE_FAILED_POOL,
        LOCAL_RETRY,
        LOCAL_TIMEOUT,
        MAX_MOVES,
        Moved,
        WorkloadSteps,
    )
    from inferofabric.workflows.workload_visibility import STARTED_WITH, show_decision


@workflow.defn(name="WorkloadWorkflow", failure_exception_types=DECODE_FAILURES, sandboxed=False)
class WorkloadWorkflow:
    """Decides a workload's course (queue, admission, launch, move, end); WorkloadSteps carries it out.
    The workload's state is one object, `self.state` (WorkloadRun), which the steps share."""

    def __init__(self) -> None:
        self.state = WorkloadRun()
        self.steps = WorkloadSteps(self.state)

    # -- queries, signals, updates ------------------------------------------------------------------
    @workflow.query(name="status")
    def status(self) -> WorkloadStatus:
        assert self.state.status is not None
        return self.state.status

    @workflow.query(name="explain")
    def explain(self) -> Explanation:
        assert self.state.status is not None
        # Decisions come from the `admitted` signal (messages.py's Decision class); in a sandbox
        # that re-imports the status module that may be another class than Explanation's: rebuild them.
        return Explanation(id=self.state.status.id, state=self.state.status.state,
                           decisions=[Decision.model_validate(d.model_dump()) for d in self.state.decisions],
                           events=self.state.events)

    @workflow.signal(name="relocate")
    def relocate(self, signal: RelocateSignal) -> None:
        """From the pool monitor (pool failed) or `fabric pool drain`: move if it concerns our pool
        (a failover names the attempt: it concerns us even before that attempt's launch began)."""
        if self.state.status is None or self.state.relocate is not None:
            return
        if signal.attempt is not None:
            if signal.attempt != self.state.attempt:
                return
        elif self.state.status.pool != signal.pool:
            return
        self.state.relocate = signal
        if signal.requeued_attempt is not None and signal.requeued_attempt == self.state.attempt + 1:
            self.state.requeued = signal.requeued_attempt

    @workflow.signal(name="admitted")
    def admitted(self, signal: AdmittedSignal) -> None:
        """From the admission loop: this attempt's GPUs are reserved (a repeat of the signal is ignored)."""
        if signal.attempt == self.state.attempt and self.state.admitted is None:
            self.state.admitted = signal
        elif signal.attempt > self.state.attempt:
            # A failover re-queued our next attempt and the loop placed it before we took in the move.
            self.state.admitted_ahead[signal.attempt] = signal

    @workflow.signal(name="job_state")
    def job_state(self, update: JobUpdate) -> None:
        """From the pool's watcher (or the reconciler): the job of this attempt changed state."""
        if update.attempt != self.state.attempt:
            return
        status = JobStatus.model_validate(update.status.model_dump())
        if status.state == JobState.LOST and not self.state.launched:
            return  # not launched yet as far as we know: the launch's own answer decides
        self.state.news = True
        if self.state.job is None or not self.state.job.state.terminal:
            self.state.job = status

    @workflow.signal(name="preempt")
    def preempt(self, signal: PreemptSignal) -> None:
        if signal.attempt == self.state.attempt and self.state.preempt is None:
            self.state.preempt = signal

    @workflow.signal(name="waiting")
    def waiting(self, signal: WaitingSignal) -> None:
        """From the admission loop: why it still waits (sent when the reason changes)."""
        if signal.attempt != self.state.attempt or self.state.admitted is not None or self.state.status is None:
            return
        if signal.reason != self.state.status.message:
            self.steps.event(f"attempt {signal.attempt}: waiting (position {signal.position}): {signal.reason}")
            self.steps.set_status(message=signal.reason)
            workflow.set_current_details(f"**waiting** (position {signal.position} when last told)\n\n{signal.reason}")

    @workflow.update(name="set_priority")
    async def set_priority(self, priority_class: str) -> WorkloadStatus:
        """`fabric priority ID CLASS`: change the class while the workload waits."""
        assert self.state.status is not None
        if self.state.status.state != WorkloadState.QUEUED or self.state.admitted is not None:
            raise ApplicationError(f"workload {self.state.status.id!r} is {self.state.status.state.value}: the class "
                                   "of running work cannot change", type=FailureType.INVALID_INPUT, non_retryable=True)
        changed = await workflow.execute_local_activity(
            "set_priority_class", PriorityClassInput(workload_id=self.state.status.id, priority_class=priority_class),
            result_type=bool,
            start_to_close_timeout=LOCAL_TIMEOUT, retry_policy=LOCAL_RETRY)
        if changed:
            self.state.status.priority_class = priority_class
            self.steps.event(f"priority class set to {priority_class}")
        return self.state.status

    @set_priority.validator
    def _validate_priority(self, priority_class: str) -> None:
        if not isinstance(priority_class, str) or not priority_class:
            raise ValueError("a priority class name is required")

    @workflow.update(name="approve")
    async def approve(self, answer: ApprovalAnswer) -> WorkloadStatus:
        """`fabric approve ID` / `fabric deny ID`: answer a burst the policy asks a person to approve."""
        assert self.state.status is not None
        if self.state.status.state != WorkloadState.QUEUED or self.state.admitted is not None:
            raise ApplicationError(f"workload {self.state.status.id!r} is {self.state.status.state.value}: nothing to "
                                   "approve", type=FailureType.INVALID_INPUT, non_retryable=True)
        words = "approved" if answer.approve else "denied"
        text = "approved" if answer.approve else f"burst denied by {answer.by or 'someone'}"
        changed = await workflow.execute_local_activity(
            "set_approval", ApprovalInput(workload_id=self.state.status.id, answer=text), result_type=bool,
            start_to_close_timeout=LOCAL_TIMEOUT, retry_policy=LOCAL_RETRY)
        if not changed:
            raise ApplicationError(f"workload {self.state.status.id!r} is not waiting for an approval",
                                   type=FailureType.INVALID_INPUT, non_retryable=True)
        self.steps.event(f"attempt {self.state.attempt}: {words} by {answer.by or 'someone'}"
                    + (f": {answer.note}" if answer.note else ""))
        return self.state.status

    @approve.validator
    def _validate_approve(self, answer: ApprovalAnswer) -> None:
        """Checked by the auth gate too: only operators and admins answer, in their own name."""

    @workflow.update(name="cancel")
    async def cancel(self) -> WorkloadStatus:
        self.state.cancel_requested = True
        await workflow.wait_condition(lambda: self.state.status is not None and self.state.status.state.terminal)
        assert self.state.status is not None
        return self.state.status

    @cancel.validator
    def _validate_cancel(self) -> None:
        """Nothing to check in the request itself; having a validator makes the auth gate (an
        interceptor of validators) see every cancel before it is accepted."""

    @workflow.signal(name="request_cancel")
    def request_cancel(self) -> None:
        self.state.cancel_requested = True

    # -- main -----------------------------------------------------------------------------------------
    @workflow.run
    async def run(self, raw: Any) -> WorkloadStatus:
        """`raw` is validated here, not by the data converter: a malformed start (from the `temporal`
        CLI, say) then fails at once with a clear non-retryable error instead of retrying forever."""
        result = await self._run(raw)
        await self.steps.leave_requeued(workflow.info().workflow_id)
        await self.steps.flush_reports()
        # Let a pending `cancel` update see the final state before the workflow closes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _run(self, raw: Any) -> WorkloadStatus:
        workload_id = workflow.info().workflow_id
        self.state.status = WorkloadStatus(id=workload_id, state=WorkloadState.QUEUED, submitted_at=workflow.now(),
                                      updated_at=workflow.now())
        try:
            request = WorkloadRequest.model_validate(raw)
        except ValidationError as error:
            raise ApplicationError(f"invalid workload: {summarize(error)}", type=FailureType.INVALID_WORKLOAD_SPEC,
                                   non_retryable=True) from None
        spec = request.spec
        self.state.status.team = spec.team
        self.state.status.priority_class = spec.priority_class
        started_with = {pair.key.name for pair in workflow.info().typed_search_attributes}
        if not started_with >= STARTED_WITH:
            self.steps.upsert(state=WorkloadState.QUEUED, team=spec.team, gpus=spec.total_gpus)
        self.steps.event(f"submitted by team {spec.team}: {spec.gpu_count} x {'/'.join(spec.gpu_types) or 'no GPU'}")
        # Submission order: when the workflow was started (its start event), in microseconds, kept for every
        # re-queue. Not `info().start_time`: that is when a worker first ran it, and a busy worker takes
        # workloads started a moment apart in any order (two batch jobs once swapped places in the queue).
        seq = int(workflow.info().workflow_start_time.timestamp() * 1_000_000)

        exclude: dict[str, tuple[str, datetime]] = {}  # pool -> (why, until)
        failed_health: Health | None = None
        charged = 0  # attempts that ended because of the job itself (moves the fabric caused are not charged)
        moves = 0
        attempt = 0
        try:
            while True:
                attempt += 1
                if charged >= request.max_attempts:
                    return await self.steps.finish(WorkloadState.FAILED,
                                                   f"gave up after {request.max_attempts} attempts")
                if moves >= MAX_MOVES:
                    return await self.steps.finish(WorkloadState.FAILED, f"gave up after {moves} moves between pools")
                admitted = await self._queue_until_admitted(workload_id, attempt, seq, spec, exclude, failed_health)
                if admitted is None:
                    return await self.steps.finish(WorkloadState.CANCELLED, "cancelled while queued")
                decision = admitted.decision
                try:
                    final = await self._run_attempt(workload_id, attempt, spec, decision, admitted.pool, request)
                except Moved as moved:
                    assert decision.pool is not None
                    if moved.preempted:
                        failed_health = None
                        moves += 1
                    else:
                        if moved.charged:
                            charged += 1
                        else:
                            moves += 1
                        if not moved.recorded:
                            exclude[decision.pool] = (f"failed during attempt {attempt}: {moved.reason}",
                                                      workflow.now() + EXCLUDE_FAILED_POOL)
                        failed_health = moved.health
                    self.steps.history_end(("preempted: " if moved.preempted else "moved: ") + moved.reason)
                    self.steps.event(f"attempt {attempt} on {decision.pool} "
                                     f"{'preempted' if moved.preempted else 'moved'}: {moved.reason}")
                    # A preempted job gets its back end's graceful stop before its GPUs are given back.
                    # The GPUs go back with the next enqueue (one store write and one wake per move),
                    # or at once below when the workload does not queue again right away.
                    if moved.copy_stopped:
                        self.steps.event(f"the copy left on {decision.pool} is stopped by its pool monitor (one call "
                                    "for every copy there; the reconciler removes it if the pool does not answer)")
                    await self.steps.cleanup_attempt(workload_id, attempt, best_effort=not moved.preempted,
                                                     cancel_job=not moved.copy_stopped, release=False)
                    self.state.unreleased = attempt
                    self.state.relocate = None
                    self.state.preempt = None
                    verb = "preempted on" if moved.preempted else "moving off"
                    self.steps.set_status(state=WorkloadState.QUEUED, pool=None, location=None, region=None,
                                          backend=None, address=None, job_id=None,
                                          message=f"{verb} {decision.pool}: {moved.reason}")
                    self.steps.upsert(state=WorkloadState.QUEUED, pool="", location="")
                    if self.state.cancel_requested:
                        await self.steps.release_unreleased(workload_id)
                        return await self.steps.finish(WorkloadState.CANCELLED, "cancelled by request")
                    backoff = timedelta(seconds=min(2 ** (charged - 1) - 1, 30) if moved.charged else 0)
                    if backoff or charged >= request.max_attempts or moves >= MAX_MOVES:
                        await self.steps.release_unreleased(workload_id)  # never hold GPUs through a backoff
                    if backoff:
                        # A cancel during the backoff ends the wait at once.
                        with contextlib.suppress(TimeoutError):
                            await workflow.wait_condition(lambda: self.state.cancel_requested, timeout=backoff)
                        if self.state.cancel_requested:
                            return await self.steps.finish(WorkloadState.CANCELLED, "cancelled by request")
                    continue
                await self.steps.drain_background()
                return final
        except (ActivityError, ApplicationError) as error:
            # A step that failed for good (an activity or local activity out of retries, or refusing
            # non-retryably): the workload ends here, cleanly, instead of failing inside Temporal with
            # its status stuck at the last state it showed and its GPUs reserved.
            return await self.steps.end_failed(workload_id, attempt, error)
        except asyncio.CancelledError:
            # Cancelled from the Web UI / `temporal workflow cancel`: clean up, then report cancelled.
            self.state.cancel_requested = True
            if self.state.status is not None and self.state.status.state == WorkloadState.QUEUED:
                await self.steps.dequeue(workload_id, attempt)
                await self.steps.release_unreleased(workload_id)
            else:
                await self.steps.cleanup_attempt(workload_id, attempt, best_effort=False)
            await self.steps.finish(WorkloadState.CANCELLED, "cancelled")
            await self.steps.flush_reports()
            raise

    async def _queue_until_admitted(self, workload_id: str, attempt: int, seq: int, spec: Any,
                                    exclude: dict[str, tuple[str, datetime]],
                                    failed_health: Health | None) -> AdmittedSignal | None:
        """Join the queue and sleep until the admission loop admits this attempt (None: cancelled)."""
        self.state.attempt = attempt
        self.state.admitted = self.state.admitted_ahead.pop(attempt, None)
        self.state.admitted_ahead = {n: s for n, s in self.state.admitted_ahead.items() if n > attempt}
        self.state.job = None
        self.state.launched = False
        self.state.news = False
        if self.state.requeued == attempt:
            # The failover wrote this attempt into the queue (and gave the last one's GPUs back) in its
            # one transaction for the whole pool: nothing to send.
            self.steps.event(f"attempt {attempt}: queued by the failover, with every workload on the failed pool")
        else:
            now = workflow.now()
            live = {pool: (why, until) for pool, (why, until) in exclude.items() if now < until}
            await workflow.execute_local_activity(
                "enqueue_workload",
                EnqueueInput(workload_id=workload_id, attempt=attempt, seq=seq, spec=spec,
                             exclude={pool: why for pool, (why, _) in live.items()},
                             exclude_until={pool: until.timestamp() for pool, (_, until) in live.items()},
                             failed_pool_health=failed_health, release_attempt=self.state.unreleased),
                result_type=bool, start_to_close_timeout=LOCAL_TIMEOUT, retry_policy=LOCAL_RETRY,
            )
        self.state.requeued = None
        self.state.unreleased = None
        if attempt == 1 or not self.state.status or not self.state.status.message:
            self.steps.set_status(state=WorkloadState.QUEUED, message="queued: waiting for the admission loop")
        await workflow.wait_condition(lambda: self.state.admitted is not None or self.state.cancel_requested)
        if self.state.admitted is None or self.state.cancel_requested:
            # Leaving the queue also releases what an admission racing the cancel reserved.
            await self.steps.dequeue(workload_id, attempt)
            return None
        decision = self.state.admitted.decision
        self.state.decisions.append(decision)
        self.steps.event(f"attempt {attempt}: admitted on {decision.pool} ({decision.mode}): {decision.reason}")
        return self.state.admitted

    async def _run_attempt(self, workload_id: str, attempt: int, spec: Any, decision: Decision,
                           pool: PoolSpec, request: WorkloadRequest) -> WorkloadStatus:
        self.state.pool = pool
        queue = task_queue_for(pool, workflow.info().task_queue)
        job_id = job_id_for(workload_id, attempt)
        self.steps.set_status(state=WorkloadState.LAUNCHING, pool=pool.name, location=pool.location,
                              region=pool.region, backend=pool.backend, gpu_type=decision.gpu_type,
                              gpus=decision.gpus, attempts=attempt, job_id=job_id,
                              message=f"launching on {pool.name}{pool.simulated_label}",
                              priority_class=decision.priority_class, borrowing=decision.borrowing)
        assert self.state.status is not None
        self.state.status.history.append(AttemptRecord(attempt=attempt, pool=pool.name, job_id=job_id,
                                                       outcome="launching", started_at=workflow.now()))
        self.steps.upsert(state=WorkloadState.LAUNCHING, pool=pool.name, location=pool.location.value,
                          gpu_type=decision.gpu_type or "")
        show_decision(decision)
        if self.state.cancel_requested:
            return await self.steps.cancel_attempt(workload_id, attempt)
        if self.state.relocate is not None and self.state.relocate.attempt is not None:
            # The pool failed between this admission and its launch: move without launching there.
            self.steps.stopped(pool.name)

        sealed: dict[str, str] = {}
        if any(not isinstance(v, str) for v in spec.env.values()):
            try:
                sealed = await workflow.execute_local_activity(
                    "seal_secrets", SealSecretsInput(spec=spec, pool=pool.name), result_type=dict,
                    start_to_close_timeout=LOCAL_TIMEOUT,
                    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=5), maximum_attempts=10,
                                             non_retryable_error_types=NON_RETRYABLE))
            except (ActivityError, ApplicationError) as error:  # a local activity's may come unwrapped
                await self.steps.cleanup_attempt(workload_id, attempt, best_effort=True, cancel_job=False)
                self.steps.history_end("failed")
                return await self.steps.finish(WorkloadState.FAILED, f"secrets could not be prepared for "
                                               f"{pool.name}: {cause_message(error)}")
        launch = self.steps.activity(
            "launch_job",
            LaunchInput(pool=pool, workload_id=workload_id, attempt=attempt, job_id=job_id, spec=spec,
                        gpu_type=decision.gpu_type, gpus=decision.gpus, sealed_env=sealed),
            queue, JobStatus, timedelta(seconds=60),
            retry=RetryPolicy(maximum_interval=timedelta(seconds=5), maximum_attempts=6,
                              non_retryable_error_types=NON_RETRYABLE),
            summary=f"launch {job_id} on {pool.name}",
        )
        try:
            # A cancel that arrives mid-launch waits for the launch to return, then removes the job:
            # cancelling the activity instead could let a launch already under way create it after.
            status = await self.steps.race(launch, pool.name, settle_on_cancel=True)
        except ActivityError as error:
            cause = cause_type(error)
            if cause in NON_RETRYABLE:
                await self.steps.cleanup_attempt(workload_id, attempt, best_effort=True)
                return await self.steps.finish(WorkloadState.FAILED, f"rejected by {pool.name}: {cause_message(error)}")
            raise Moved(f"launch failed on {pool.name}: {cause_message(error)}", Health.UNHEALTHY,
                         charged=True) from None
        if status is None:
            return await self.steps.cancel_attempt(workload_id, attempt)
        self.state.launched = True
        if self.state.job is None or (not self.state.job.state.terminal and status.state.terminal):
            self.state.job = status
        if status.details.get("address"):
            self.steps.set_status(address=str(status.details["address"]))

        launch_timeout = timedelta(seconds=spec.launch_timeout_seconds or pool.launch_timeout_seconds)
        if self.state.job.state == JobState.PENDING:
            # Accepted but not running yet (queued for capacity, pulling the image): stay `launching`.
            self.steps.set_status(message=f"pending on {pool.name}: {self.state.job.message}")
            followed = await self.steps.follow(pool, lambda job: job.state != JobState.PENDING, launch_timeout)
            if followed is None:
                return await self.steps.cancel_attempt(workload_id, attempt)
            if followed.state == JobState.PENDING:
                raise Moved(f"still pending on {pool.name} after the launch timeout of "
                             f"{int(launch_timeout.total_seconds())}s: {followed.message or 'not started'}",
                             Health.HEALTHY, charged=True)
        assert self.state.job is not None
        status = self.state.job
        self.steps.set_status(state=WorkloadState.RUNNING, message=status.message or f"running on {pool.name}")
        if self.state.status is not None and self.state.status.history:
            self.state.status.history[-1].outcome = "running"
        if not status.state.terminal:
            # The ledger charges from the back end's start, not from admission (launch-pending time
            # is kept apart); a job already over by now gets its start with its end, in the release.
            await workflow.execute_local_activity(
                "ledger_started", StartedInput(workload_id=workload_id, attempt=attempt,
                                               started_at=status.started_at or workflow.now()),
                start_to_close_timeout=LOCAL_TIMEOUT, retry_policy=LOCAL_RETRY)
            self.steps.upsert(state=WorkloadState.RUNNING)
            followed = await self.steps.follow(pool, lambda job: job.state.terminal, None)
            if followed is None:
                return await self.steps.cancel_attempt(workload_id, attempt)
            status = followed
        if status.state == JobState.LOST:
            why = status.details.get("class", "lost")
            # A spot reclaim says nothing bad about the pool (the next instance may be fine): no
            # exclusion; a lost node or a vanished job keeps the pool out for a short while.
            raise Moved(f"job {why} on {pool.name}: {status.message}", Health.HEALTHY, recorded=why == "reclaimed")
        await self.steps.cleanup_attempt(workload_id, attempt, best_effort=False, cancel_job=False, ended=status)
        self.steps.history_end(status.state.value)
        await self.steps.drain_background()
        if status.state == JobState.SUCCEEDED:
            return await self.steps.finish(WorkloadState.SUCCEEDED, status.message or "succeeded")
        if status.state == JobState.CANCELLED:
            return await self.steps.finish(WorkloadState.CANCELLED, status.message or "cancelled on the pool")
        return await self.steps.finish(WorkloadState.FAILED, status.message or "failed")
