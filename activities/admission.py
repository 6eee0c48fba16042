"""Admission activities: join/leave the queue, change a class, and run one admission cycle.

They run as local activities in the control plane's worker (the store is there). Every change that
can change the answer (a submission, a release, a pool's health or capacity, a policy) wakes the
admission loop with a signal-with-start of `AdmissionWorkflow`, so the loop exists as soon as there
is anything to decide and sleeps otherwise. The cycle itself decides in one transaction
(store/admission.py), then tells the admitted workloads (signal `admitted`) and the victims of a
preemption (signal `preempt`); a signal that fails is retried by the next cycle, which finds the
row still `admitted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from inferofabric.activities.errors import typed_errors
from inferofabric.models.messages import (
    AdmissionInput,
    AdmittedSignal,
    ApprovalInput,
    CycleSummary,
    DequeueInput,
    EnqueueInput,
    PreemptSignal,
    PriorityClassInput,
    WaitingSignal,
)
from inferofabric.models.pool import PoolSpec
from inferofabric.policies.admission import CyclePlan
from inferofabric.queue import SpecCache, compiled_policy, make_planner
from inferofabric.store import admission as queue_store
from inferofabric.store.budget import post_alerts
from inferofabric.store.db import Store, get_store
from inferofabric.task_queues import fabric_queue, system_queue
from inferofabric.threads import in_store

ADMISSION_WORKFLOW = "AdmissionWorkflow"
SIGNAL_CONCURRENCY = 64
REASON_UPDATES_PER_CYCLE = 50  # waiting workloads told a changed reason per cycle (the head of the queue)
REASON_AFTER_S = 2.0  # ... once they have waited this long


def admission_id(task_queue: str) -> str:
    """One admission loop per fabric (per control-plane task queue)."""
    return f"fabric-admission-{task_queue}"


async def wake_admission(client: Client, task_queue: str, reason: str) -> None:
    """Signal-with-start the fabric's admission loop; returns once a wake sent after this call began
    has reached Temporal (so the loop will look at whatever the caller committed before)."""
    fabric = fabric_queue(task_queue)  # called from the fabric's queue or its system queue
    key = (id(client), fabric)
    batcher = _batchers.get(key)
    if batcher is None:
        batcher = _batchers[key] = _WakeBatcher(client, fabric)
    await batcher.wake(reason)


class _WakeBatcher:
    """Group commit for wakes: callers that arrive while a wake is on its way share the next one.

    Under load (hundreds of submissions and releases a second) this turns one signal per event into
    one per round trip, without ever dropping a wake: every caller waits for a signal that was sent
    after it arrived."""

    def __init__(self, client: Client, task_queue: str) -> None:
        self._client = client
        self._task_queue = task_queue
        self._next: asyncio.Future[None] | None = None  # the wake that has not been sent yet
        self._reasons: list[str] = []
        self._sending = False

    async def wake(self, reason: str) -> None:
        if self._next is None or self._next.done():
            self._next = asyncio.get_running_loop().create_future()
        waiter = self._next
        self._reasons.append(reason)
        if not self._sending:
            self._sending = True
            asyncio.get_running_loop().create_task(self._send())
        await asyncio.shield(waiter)

    async def _send(self) -> None:
        try:
            while self._next is not None and not self._next.done():
                batch, reasons = self._next, self._reasons
                self._next, self._reasons = None, []
                summary = reasons[0] if len(reasons) == 1 else f"{reasons[0]} (+{len(reasons) - 1} more)"
                try:
                    await self._client.start_workflow(
                        ADMISSION_WORKFLOW, AdmissionInput(), id=admission_id(self._task_queue),
                        task_queue=system_queue(self._task_queue), start_signal="wake", start_signal_args=[summary],
                        static_summary="fabric admission loop")
                except Exception as error:  # every caller of this batch sees the failure (and retries)
                    batch.set_exception(error)
                else:
                    batch.set_result(None)
        finally:
            self._sending = False


_batchers: dict[tuple[int, str], _WakeBatcher] = {}


class _GroupCommit:
    """Group commit for enqueues: the ones that arrive while a batch is being written go together in
    the next transaction. A failover re-queues hundreds of workloads within a second; one commit
    (and one turn of the store's write lock) each made the last of them wait over a second. A batch
    that fails is written again one item at a time, so one bad item fails only its own caller."""

    MAX_BATCH = 500

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: list[tuple[queue_store.Enqueue, asyncio.Future[bool]]] = []
        self._writing = False

    async def submit(self, item: queue_store.Enqueue) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._writing:
            self._writing = True
            asyncio.get_running_loop().create_task(self._write())
        return await asyncio.shield(future)

    async def _write(self) -> None:
        batch: list[tuple[queue_store.Enqueue, asyncio.Future[bool]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending[:self.MAX_BATCH], self._pending[self.MAX_BATCH:]
                await self._write_batch(batch)
        except BaseException:  # the worker is stopping: no caller may wait for ever (each one retries)
            for _, future in batch + self._pending:
                _settle(future, error=RuntimeError("the enqueue was interrupted; it is retried"))
            self._pending = []
            raise
        finally:
            self._writing = False

    async def _write_batch(self, batch: list[tuple[queue_store.Enqueue, asyncio.Future[bool]]]) -> None:
        try:
            results = await in_store(queue_store.enqueue_many, self._store, [item for item, _ in batch])
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0][1], error=error)
                return
            for one in batch:  # find the bad one: each on its own
                await self._write_batch([one])
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)


def _settle(future: asyncio.Future[bool], result: bool | None = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(bool(result))


async def wake_from_activity(reason: str) -> None:
    """Wake the admission loop of the fabric this activity runs for (its worker's client and task queue)."""
    await wake_admission(activity.client(), activity.info().task_queue, reason)


class AdmissionActivities:
    def __init__(self, store_url: str | None = None) -> None:
        self._store_url = store_url
        self._cache = SpecCache()
        self._enqueues: _GroupCommit | None = None

    @property
    def store(self) -> Store:
        return get_store(self._store_url)

    @activity.defn(name="enqueue_workload")
    @typed_errors
    async def enqueue_workload(self, request: EnqueueInput) -> bool:
        """Join the queue and wake the loop. False: that attempt was admitted already (a retry)."""
        item = queue_store.Enqueue(
            request.workload_id, request.attempt, request.seq, request.spec.team, request.spec.model_dump_json(),
            {pool: [why, request.exclude_until.get(pool)] for pool, why in request.exclude.items()},
            request.failed_pool_health.value if request.failed_pool_health else None, request.release_attempt)
        if self._enqueues is None:
            self._enqueues = _GroupCommit(self.store)
        waiting = await self._enqueues.submit(item)
        await wake_from_activity(f"enqueued {request.workload_id}")
        return waiting

    @activity.defn(name="dequeue_workload")
    @typed_errors
    async def dequeue_workload(self, request: DequeueInput) -> int:
        released = await in_store(queue_store.dequeue, self.store, request.workload_id, request.attempt)
        await wake_from_activity(f"dequeued {request.workload_id}")
        return released

    @activity.defn(name="set_priority_class")
    @typed_errors
    async def set_priority_class(self, request: PriorityClassInput) -> bool:
        workload_id, priority_class = request.workload_id, request.priority_class
        policy = await in_store(compiled_policy, self.store)
        policy.policy.priority_class(priority_class)  # an unknown class is a one-line InvalidInput
        changed = await in_store(queue_store.set_priority_class, self.store, workload_id, priority_class)
        if changed:
            await wake_from_activity(f"priority of {workload_id}")
        return changed

    @activity.defn(name="set_approval")
    @typed_errors
    async def set_approval(self, request: ApprovalInput) -> bool:
        """A person's answer to a placement that waits for approval; False when it does not wait for one."""
        workload_id, answer = request.workload_id, request.answer
        from inferofabric.store.budget import approval_of, set_approval

        found = await in_store(approval_of, self.store, workload_id)
        if found is None or found[1] is None:
            return False
        changed = await in_store(set_approval, self.store, workload_id, answer)
        if changed:
            await wake_from_activity(f"approval of {workload_id}")
        return changed

    @activity.defn(name="admission_cycle")
    @typed_errors
    async def admission_cycle(self, clock: float | None = None) -> CycleSummary:
        """`clock`: the loop's workflow time (epoch s), against which pool exclusions expire."""
        started = time.perf_counter()
        store = self.store
        policy = await in_store(compiled_policy, store)
        half_life = policy.policy.fair_share.half_life_seconds
        planner = make_planner(self._cache, policy, explain=REASON_UPDATES_PER_CYCLE)
        outcome = await in_store(queue_store.run_cycle, store, planner, half_life, False, clock,
                                          self._cache.rows)
        plan = outcome.plan
        post_alerts(policy.policy.cost.alert_webhook, outcome.alerts)
        client = activity.client()
        specs: dict[str, PoolSpec] = {}
        for name in {w.decision.pool for w in outcome.wake if w.decision.pool}:
            specs[name] = await in_store(store.pool_spec, name)
        limit = asyncio.Semaphore(SIGNAL_CONCURRENCY)

        async def admit(wake: queue_store.Wake) -> tuple[str, int] | None:
            async with limit:
                try:
                    pool = specs[wake.decision.pool or ""]
                    await client.get_workflow_handle(wake.workload_id).signal(
                        "admitted", AdmittedSignal(attempt=wake.attempt, decision=wake.decision, pool=pool))
                except RPCError as error:
                    if error.status != RPCStatusCode.NOT_FOUND:
                        return None  # retried by the next cycle
                    # The workload is gone (terminated): its reservation must not leak.
                    await in_store(store.release, wake.workload_id, wake.attempt)
                return (wake.workload_id, wake.attempt)

        async def preempt(workload_id: str, attempt: int, reason: str, by: str) -> None:
            async with limit:
                try:
                    await client.get_workflow_handle(workload_id).signal(
                        "preempt", PreemptSignal(attempt=attempt, reason=reason, by=by))
                except RPCError as error:
                    if error.status == RPCStatusCode.NOT_FOUND:
                        await in_store(store.release, workload_id, attempt)

        woken = await asyncio.gather(*(admit(w) for w in outcome.wake))
        done = [w for w in woken if w is not None]
        await in_store(queue_store.woken, store, done)
        await asyncio.gather(*(preempt(p.victim.workload_id, p.victim.attempt, p.reason, p.preemptor)
                               for p in plan.preemptions))
        await self._tell_waiting(client, plan)
        return CycleSummary(
            admitted=len(plan.admitted), woken=len(done), preempted=len(plan.preemptions), waiting=plan.waiting_total,
            evaluations=plan.evaluations, skipped=plan.skipped, unwoken=len(outcome.wake) - len(done),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            head=[f"{w.workload_id}: {w.reason}"[:200] for w in plan.waiting[:5]],
            next_expiry=outcome.next_expiry,
        )

    async def _tell_waiting(self, client: Client, plan: CyclePlan) -> None:
        """Tell the head of the queue why it waits, when that changed (current details, `explain`)."""
        head = plan.waiting[:REASON_UPDATES_PER_CYCLE]
        if not head:
            return
        # Only work that has waited a moment: what the next cycles admit anyway needs no update (under
        # a drain that would be one more signal and workflow task per workload).
        known = await in_store(queue_store.reasons, self.store, [w.workload_id for w in head],
                                        REASON_AFTER_S)
        changed = [w for w in head if w.workload_id in known and known[w.workload_id][0] != w.reason]
        if not changed:
            return

        async def tell(workload_id: str, reason: str, position: int) -> None:
            with contextlib.suppress(RPCError):
                await client.get_workflow_handle(workload_id).signal(
                    "waiting", WaitingSignal(attempt=known[workload_id][1], reason=reason, position=position))

        await asyncio.gather(*(tell(w.workload_id, w.reason, w.position) for w in changed))
        await in_store(queue_store.record_reasons, self.store, {w.workload_id: w.reason for w in changed})

    def all(self) -> list[Any]:
        return [self.enqueue_workload, self.dequeue_workload, self.set_priority_class, self.set_approval,
                self.admission_cycle]
