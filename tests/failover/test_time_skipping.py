"""Slow paths on the time-skipping test server, with stub activities standing in for the fabric.

The stubs have the real activities' names, so the real workflows run unchanged: hysteresis over long
probe periods, continue-as-new, a silent agent, backoff and exclusion between attempts, and a job
that runs for hours of workflow time.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from inferofabric.activities.admission import AdmissionActivities, admission_id
from inferofabric.activities.placement import PlacementActivities
from inferofabric.backends.base import JobState, JobStatus
from inferofabric.backends.registry import system_queue
from inferofabric.models import Health, PoolSpec, WorkloadState
from inferofabric.models.messages import (
    JobInput,
    JobUpdate,
    LaunchInput,
    MonitorInput,
    MonitorSettings,
    MoveOffInput,
    ProbeResult,
    ReconcileInput,
    ReconcileReport,
    RecordHealthInput,
    RelocateInput,
    RelocateSignal,
    StatusesInput,
    WorkloadRequest,
)
from inferofabric.models.status import Explanation, HealthEvent, WorkloadStatus
from inferofabric.store.db import get_store
from inferofabric.worker.main import workflow_runner
from inferofabric.workflows.admission import AdmissionWorkflow
from inferofabric.workflows.monitor import PoolMonitorWorkflow, next_health
from inferofabric.workflows.workload import WorkloadWorkflow

from .util import job

# Workflow time is exact, but each probe/attempt takes some real time (activities run for real and
# time does not skip meanwhile): compare times with this much slack, in seconds.
SLACK = 1.5
OK = ProbeResult(ok=True, health=Health.HEALTHY, reason="answering")
FAIL = ProbeResult(ok=False, health=Health.UNHEALTHY, reason="connection refused")
ERROR = "error"  # the probe activity itself fails
DEGRADED = ProbeResult(ok=True, health=Health.DEGRADED, reason="2 nodes NotReady")


def pool_spec(name: str, backend: str = "simulated", location: str = "on-prem") -> PoolSpec:
    extra: dict[str, Any] = {"kubernetes": {}} if backend == "kubernetes" else {}
    return PoolSpec.model_validate({"name": name, "location": location, "backend": backend,
                                    "gpus": {"A100": 8}, **extra})


# -- next_health, the pure hysteresis rule --------------------------------------------------------------
@pytest.mark.parametrize(("current", "probe", "failures", "successes", "expected"), [
    (None, OK, 0, 1, Health.HEALTHY),                    # first good probe: healthy at once
    (None, FAIL, 1, 0, None),                            # unknown stays unknown until the threshold
    (None, FAIL, 3, 0, Health.UNHEALTHY),
    (Health.HEALTHY, FAIL, 1, 0, Health.HEALTHY),        # one or two failures are a blip
    (Health.HEALTHY, FAIL, 2, 0, Health.HEALTHY),
    (Health.HEALTHY, FAIL, 3, 0, Health.UNHEALTHY),      # the third in a row is an outage
    (Health.UNHEALTHY, FAIL, 7, 0, Health.UNHEALTHY),
    (Health.UNHEALTHY, OK, 0, 1, Health.UNHEALTHY),      # recovering: not yet trusted
    (Health.UNHEALTHY, OK, 0, 2, Health.UNHEALTHY),
    (Health.UNHEALTHY, OK, 0, 3, Health.HEALTHY),
    (Health.UNHEALTHY, DEGRADED, 0, 3, Health.DEGRADED),
    (Health.HEALTHY, DEGRADED, 0, 1, Health.DEGRADED),   # a degraded report is taken as is
    (Health.DEGRADED, OK, 0, 1, Health.HEALTHY),
])
def test_next_health(current: Health | None, probe: ProbeResult, failures: int, successes: int,
                     expected: Health | None) -> None:
    assert next_health(current, probe, failures, successes, unhealthy_after=3, healthy_after=3) == expected


def test_next_health_thresholds_of_one() -> None:
    assert next_health(Health.HEALTHY, FAIL, 1, 0, 1, 1) == Health.UNHEALTHY
    assert next_health(Health.UNHEALTHY, OK, 0, 1, 1, 1) == Health.HEALTHY


# -- stub activities ----------------------------------------------------------------------------------------
class MonitorStubs:
    """The monitor's activities, scripted: probe i answers script[i] (the last entry repeats)."""

    def __init__(self, env: WorkflowEnvironment, pool: PoolSpec, script: list[Any]) -> None:
        self.env = env
        self.pool = pool
        self.script = script
        self.probes: list[datetime] = []
        self.transitions: list[tuple[float, Health, str]] = []
        self.cancelled: list[str] = []
        self.start: datetime | None = None
        self.removed = False
        self.moving: list[dict[str, Any]] = []  # workloads on the pool while it is failing
        self.after_recovery: list[dict[str, Any]] = []
        self.live_jobs: list[str] = []

    async def _now(self) -> datetime:
        return await self.env.get_current_time()

    async def _elapsed(self) -> float:
        assert self.start is not None
        return (await self._now() - self.start).total_seconds()

    def activities(self) -> list[Any]:
        @activity.defn(name="control_pool_spec")
        async def control_pool_spec(name: str) -> PoolSpec:
            if self.removed:
                raise ApplicationError(f"no pool named {name!r}", type="NotFound", non_retryable=True)
            return self.pool

        @activity.defn(name="probe_pool")
        async def probe_pool(pool: PoolSpec) -> ProbeResult:
            index = len(self.probes)
            self.probes.append(await self._now())
            answer = self.script[min(index, len(self.script) - 1)]
            if answer == ERROR:
                raise ApplicationError("kube API: 500 Internal Server Error", type="ProbeError")
            return answer  # type: ignore[no-any-return]

        @activity.defn(name="control_record_health")
        async def control_record_health(request: RecordHealthInput) -> HealthEvent | None:
            self.transitions.append((await self._elapsed(), request.health, request.reason))
            return HealthEvent(pool=request.pool, from_health=None, to_health=request.health, reason=request.reason,
                               at=await self._now())

        @activity.defn(name="control_workloads_on_pool")
        async def control_workloads_on_pool(name: str) -> list[dict[str, Any]]:
            unhealthy = bool(self.transitions) and self.transitions[-1][1] == Health.UNHEALTHY
            return self.moving if unhealthy else self.after_recovery

        @activity.defn(name="control_relocate")
        async def control_relocate(request: RelocateInput) -> list[str]:
            return await self._tell(request.pool, RelocateSignal(pool=request.pool, reason=request.reason,
                                                                 health=request.health))

        @activity.defn(name="control_move_off")
        async def control_move_off(request: MoveOffInput) -> list[str]:
            name, reason, health = request.pool, request.reason, request.health
            rows = {row["workload_id"]: row["attempt"] for row in await control_workloads_on_pool(name)}
            told = []
            for workload_id in await self._tell(name, RelocateSignal(pool=name, reason=reason, health=health,
                                                                     copies_stopped_by_sender=True)):
                told.append(f"{workload_id}-a{rows[workload_id]}")
            return told

        @activity.defn(name="pool_job_states")
        async def pool_job_states(pool: PoolSpec) -> dict[str, str]:
            return {job_id: "running" for job_id in self.live_jobs}

        @activity.defn(name="control_reconcile")
        async def control_reconcile(request: ReconcileInput) -> ReconcileReport:
            name, states = request.pool, request.states
            owned = {f"{row['workload_id']}-a{row['attempt']}" for row in await control_workloads_on_pool(name)}
            return ReconcileReport(pool=name, jobs_seen=len(states), orphans=sorted(set(states) - owned))

        @activity.defn(name="cancel_job")
        async def cancel_job(request: JobInput) -> None:
            self.cancelled.append(request.job_id)
            self.live_jobs = [job for job in self.live_jobs if job != request.job_id]

        @activity.defn(name="cancel_jobs")
        async def cancel_jobs(request: StatusesInput) -> dict[str, str]:
            for job_id in request.job_ids:
                await cancel_job(JobInput(pool=request.pool, job_id=job_id))
            return {job_id: "" for job_id in request.job_ids}

        return [control_pool_spec, probe_pool, control_record_health, control_workloads_on_pool,
                control_relocate, control_move_off, pool_job_states, control_reconcile, cancel_job, cancel_jobs]

    async def _tell(self, name: str, signal: RelocateSignal) -> list[str]:
        told = []
        for row in self.moving if self.transitions and self.transitions[-1][1] == Health.UNHEALTHY \
                else self.after_recovery:
            try:
                await self.env.client.get_workflow_handle(row["workload_id"]).signal("relocate", signal)
                told.append(row["workload_id"])
            except RPCError:
                continue  # finished long ago
        return told


@workflow.defn(name="RelocateRecorder", sandboxed=False)
class RelocateRecorder:
    """Stands in for a workload: records the relocate signals the monitor sends it."""

    def __init__(self) -> None:
        self.signals: list[RelocateSignal] = []

    @workflow.signal(name="relocate")
    def relocate(self, signal: RelocateSignal) -> None:
        self.signals.append(signal)

    @workflow.query(name="signals")
    def received(self) -> list[RelocateSignal]:
        return self.signals

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


@contextlib.asynccontextmanager
async def monitor_workers(env: WorkflowEnvironment, queue: str, stubs: MonitorStubs,
                          extra: list[Any] | None = None) -> AsyncIterator[None]:
    """The monitor on `queue` (its workflows and control calls) and its probes on `<queue>.monitor`."""
    async with Worker(env.client, task_queue=queue, workflows=[PoolMonitorWorkflow, *(extra or [])],
                      activities=stubs.activities(), workflow_runner=workflow_runner()), \
            Worker(env.client, task_queue=f"{queue}.monitor", activities=stubs.activities()):
        yield


async def start_monitor(env: WorkflowEnvironment, queue: str, stubs: MonitorStubs,
                        settings: MonitorSettings) -> WorkflowHandle[Any, Any]:
    stubs.start = await env.get_current_time()
    return await env.client.start_workflow(
        "PoolMonitorWorkflow", MonitorInput(pool=stubs.pool.name, settings=settings),
        id=f"pool-monitor-{stubs.pool.name}", task_queue=queue)


# -- PoolMonitorWorkflow -----------------------------------------------------------------------------------
async def test_hysteresis_over_long_periods_records_only_real_transitions(
        time_env: WorkflowEnvironment) -> None:
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    script = ([OK] * 4 + [FAIL, FAIL, OK]  # a blip of two failures: no transition
              + [FAIL, ERROR, FAIL]         # third failure in a row (an erroring probe counts): unhealthy
              + [FAIL, FAIL, OK, OK, FAIL]  # recovering, then failing again: still unhealthy
              + [OK, OK, OK]                # third good probe in a row: healthy
              + [OK])
    stubs = MonitorStubs(time_env, pool_spec(f"p-{uuid.uuid4().hex[:6]}"), script)
    recorder_id = f"w-{uuid.uuid4().hex[:6]}"
    stubs.moving = [{"workload_id": recorder_id, "attempt": 1},
                    {"workload_id": "finished-long-ago", "attempt": 1}]
    stubs.after_recovery = [{"workload_id": "kept", "attempt": 2}]
    stubs.live_jobs = [f"{recorder_id}-a1", "kept-a2"]
    settings = MonitorSettings(period_seconds=30, probe_timeout_seconds=5, unhealthy_after=3, healthy_after=3)
    async with monitor_workers(time_env, queue, stubs, extra=[RelocateRecorder]):
        recorder = await time_env.client.start_workflow(RelocateRecorder.run, id=recorder_id,
                                                        task_queue=queue)
        handle = await start_monitor(time_env, queue, stubs, settings)
        await time_env.sleep(timedelta(seconds=30 * 19 + 5))
        state: MonitorInput = await handle.query("state", result_type=MonitorInput)
        signals = await recorder.query("signals", result_type=list[RelocateSignal])
        await handle.terminate()
        await recorder.terminate()

    # Probe i runs at i * 30 s: unhealthy at the 10th probe (index 9), healthy again at index 17.
    assert [h for _, h, _ in stubs.transitions] == [Health.HEALTHY, Health.UNHEALTHY, Health.HEALTHY]
    assert [t for t, _, _ in stubs.transitions] == pytest.approx([0, 270, 510], abs=SLACK)
    assert stubs.transitions[1][2] == "connection refused"
    gaps = [(b - a).total_seconds() for a, b in zip(stubs.probes, stubs.probes[1:], strict=False)]
    assert all(gap == pytest.approx(30, abs=SLACK) for gap in gaps), gaps
    # On the outage the workloads on the pool are told to move (a finished one is skipped)...
    assert [(s.pool, s.health) for s in signals] == [(stubs.pool.name, Health.UNHEALTHY)]
    assert signals[0].reason == "became unhealthy: connection refused"
    # ...the copy they left behind is stopped by the monitor, in one batch, not by each workload;
    # on recovery the reconciler finds nothing more to remove and keeps the owned job.
    assert signals[0].copies_stopped_by_sender
    assert stubs.cancelled == [f"{recorder_id}-a1"]
    assert stubs.live_jobs == ["kept-a2"]
    assert state.health == Health.HEALTHY and state.failures == 0 and state.successes >= 3


async def test_a_transition_is_confirmed_at_the_fast_cadence(time_env: WorkflowEnvironment) -> None:
    """Once a probe disagrees with the pool's health, the next ones come after the transition period
    (5 s here), not the period (60 s): an outage is confirmed in seconds, a blip still is a blip, and
    recovery is confirmed as fast; agreeing probes go back to the period."""
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    script = [OK, OK,              # 0, 60: healthy
              FAIL, OK,            # 120, 125: a blip, re-checked 5 s later: still healthy
              FAIL, FAIL, FAIL,    # 185, 190, 195: unhealthy at the third failure in a row
              FAIL, OK, OK, OK,    # 255, 315, 320, 325: healthy again at the third good probe
              OK]                  # 385
    stubs = MonitorStubs(time_env, pool_spec(f"p-{uuid.uuid4().hex[:6]}"), script)
    settings = MonitorSettings(period_seconds=60, probe_timeout_seconds=5, unhealthy_after=3, healthy_after=3,
                               transition_period_seconds=5)
    async with monitor_workers(time_env, queue, stubs):
        handle = await start_monitor(time_env, queue, stubs, settings)
        await time_env.sleep(timedelta(seconds=390))
        await handle.terminate()
    probes = [(at - stubs.start).total_seconds() for at in stubs.probes]
    assert probes[:12] == pytest.approx([0, 60, 120, 125, 185, 190, 195, 255, 315, 320, 325, 385], abs=SLACK * 3)
    assert [h for _, h, _ in stubs.transitions] == [Health.HEALTHY, Health.UNHEALTHY, Health.HEALTHY]
    assert [t for t, _, _ in stubs.transitions] == pytest.approx([0, 195, 325], abs=SLACK * 3)


async def test_continue_as_new_keeps_health_and_counters(time_env: WorkflowEnvironment) -> None:
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    # Failures 2 and 3 of the outage straddle the end of the first run (4 probes per run).
    stubs = MonitorStubs(time_env, pool_spec(f"p-{uuid.uuid4().hex[:6]}"), [OK, OK, FAIL, FAIL, FAIL, FAIL])
    settings = MonitorSettings(period_seconds=10, unhealthy_after=3, healthy_after=2, iterations_per_run=4)
    async with monitor_workers(time_env, queue, stubs):
        handle = await start_monitor(time_env, queue, stubs, settings)
        first_run = (await handle.describe()).run_id
        await time_env.sleep(timedelta(seconds=10 * 9 + 5))
        current = time_env.client.get_workflow_handle(handle.id)
        state: MonitorInput = await current.query("state", result_type=MonitorInput)
        runs = [first_run]  # follow the chain of runs: each ends in continue-as-new
        while True:
            history = await time_env.client.get_workflow_handle(handle.id, run_id=runs[-1]).fetch_history()
            last = history.events[-1]
            if last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
                break
            runs.append(last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id)
        await current.terminate()

    assert len(runs) == 3  # 10 probes, 4 per run: the third run is the current one
    assert [h for _, h, _ in stubs.transitions] == [Health.HEALTHY, Health.UNHEALTHY]
    assert [t for t, _, _ in stubs.transitions] == pytest.approx([0, 40], abs=SLACK)
    assert state.health == Health.UNHEALTHY and state.failures >= 3 and state.settings == settings


async def test_silent_agent_probe_timeouts_make_the_pool_unhealthy(time_env: WorkflowEnvironment) -> None:
    """A Kubernetes pool's probe goes to `pool.<name>`, which nobody polls: each probe times out."""
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    stubs = MonitorStubs(time_env, pool_spec(f"k-{uuid.uuid4().hex[:6]}", backend="kubernetes"), [OK])
    settings = MonitorSettings(period_seconds=30, probe_timeout_seconds=2, unhealthy_after=3)
    async with monitor_workers(time_env, queue, stubs):
        handle = await start_monitor(time_env, queue, stubs, settings)
        await time_env.sleep(timedelta(seconds=200))
        await handle.terminate()
    assert stubs.probes == []  # the stub never ran: nothing polls the agent's queue
    # Three probes of 2 s each, 30 s apart: unhealthy at 2 * (2 + 30) + 2 = 66 s.
    assert [(h, r) for _, h, r in stubs.transitions] == [(Health.UNHEALTHY, "no answer from the pool's agent")]
    assert stubs.transitions[0][0] == pytest.approx(66, abs=SLACK)


async def test_monitor_ends_when_its_pool_is_removed(time_env: WorkflowEnvironment) -> None:
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    stubs = MonitorStubs(time_env, pool_spec(f"p-{uuid.uuid4().hex[:6]}"), [OK])
    async with monitor_workers(time_env, queue, stubs):
        handle = await start_monitor(time_env, queue, stubs, MonitorSettings(period_seconds=60))
        await time_env.sleep(timedelta(seconds=150))
        stubs.removed = True
        await handle.result()
    assert len(stubs.probes) == 3


# -- WorkloadWorkflow ----------------------------------------------------------------------------------------
class WorkloadStubs:
    """The real admission (loop, activities, store) over pools p1, p2; launch/cancel scripted, and the
    pool watcher's news (signal `job_state`) sent by the test (`job_ended`)."""

    def __init__(self, env: WorkflowEnvironment, pools: list[PoolSpec], store_url: str, *,
                 launch_fails: bool = False, runtime: timedelta = timedelta(hours=3)) -> None:
        self.env = env
        self.store = get_store(store_url)
        for spec in pools:
            self.store.upsert_pool(spec)
        self.admission = AdmissionActivities(store_url)
        self.placement = PlacementActivities(store_url)
        self.launch_fails = launch_fails
        self.runtime = runtime
        self.start: datetime | None = None
        self.launched: dict[str, datetime] = {}
        self.cancelled: list[str] = []

    def activities(self) -> list[Any]:
        @activity.defn(name="launch_job")
        async def launch_job(request: LaunchInput) -> JobStatus:
            if self.launch_fails:
                raise ApplicationError(f"pool {request.pool.name} is not answering", type="PoolDown",
                                       non_retryable=True)
            self.launched.setdefault(request.job_id, await self.env.get_current_time())
            return JobStatus(job_id=request.job_id, state=JobState.RUNNING)

        @activity.defn(name="cancel_job")
        async def cancel_job(request: JobInput) -> None:
            self.cancelled.append(request.job_id)

        @activity.defn(name="job_status")
        async def job_status(request: JobInput) -> JobStatus:
            # The workflow's own look while the (absent) watcher has said nothing: still running.
            return JobStatus(job_id=request.job_id, state=JobState.RUNNING)

        return [*self.admission.all(), self.placement.release_capacity, self.placement.ledger_started, launch_job,
                cancel_job, job_status]

    def worker(self, queue: str) -> contextlib.AbstractAsyncContextManager[Any]:
        return fabric_workers(self.env, queue, self.activities())


@contextlib.asynccontextmanager
async def fabric_workers(env: WorkflowEnvironment, queue: str, activities: list[Any]) -> AsyncIterator[None]:
    """Workloads on the fabric's queue, the admission loop on its system queue (as build_worker has them)."""
    async with Worker(env.client, task_queue=queue, workflows=[WorkloadWorkflow], activities=activities,
                      workflow_runner=workflow_runner()), \
            Worker(env.client, task_queue=system_queue(queue), workflows=[AdmissionWorkflow], activities=activities,
                   workflow_runner=workflow_runner()):
        yield


async def job_ended(handle: WorkflowHandle[Any, Any], attempt: int, state: JobState = JobState.SUCCEEDED) -> None:
    """What the pool's watcher tells the workload when its job ends (or, RUNNING, at its first look)."""
    await handle.signal("job_state", JobUpdate(attempt=attempt, status=JobStatus(
        job_id=f"{handle.id}-a{attempt}", state=state, message="completed" if state.terminal else "running")))


async def launched(stubs: WorkloadStubs, job_id: str) -> None:
    while job_id not in stubs.launched:
        await asyncio.sleep(0.05)


async def start_workload(env: WorkflowEnvironment, queue: str, stubs: WorkloadStubs, name: str,
                         max_attempts: int = 5, classification: str = "internal") -> WorkflowHandle[Any, Any]:
    stubs.start = await env.get_current_time()
    spec = type(job(name)).model_validate({**job(name).model_dump(), "data_classification": classification})
    request = WorkloadRequest(spec=spec, max_attempts=max_attempts)
    return await env.client.start_workflow("WorkloadWorkflow", request.model_dump(mode="json"), id=name,
                                           task_queue=queue)


async def test_backoff_and_expiring_exclusion_between_attempts(time_env: WorkflowEnvironment, tmp_path: Path) -> None:
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    stubs = WorkloadStubs(time_env, [pool_spec("p1"), pool_spec("p2")], f"sqlite:///{tmp_path / 'f.db'}",
                          launch_fails=True)
    async with stubs.worker(queue):
        handle = await start_workload(time_env, queue, stubs, f"backoff-{uuid.uuid4().hex[:6]}")
        final = WorkloadStatus.model_validate(await handle.result())

    assert final.state == WorkloadState.FAILED and final.message == "gave up after 5 attempts"
    starts = [(a.started_at - stubs.start).total_seconds() for a in final.history]  # type: ignore[operator]
    # Attempt k waits 2^(k-1) - 1 s after a move (0, 1, 3, 7); a pool a launch failed on stays
    # excluded for 30 s, and the admission loop looks again the moment an exclusion ends:
    #   a1 p1 @0, a2 p2 @0, a3 @1: both excluded -> p1 at 30; a4 p2 @33 (30 + 3);
    #   a5 @40 (33 + 7): p1 excluded until 60, p2 until 63 -> p1 @60.
    assert [a.pool for a in final.history] == ["p1", "p2", "p1", "p2", "p1"]
    assert starts == pytest.approx([0, 0, 30, 33, 60], abs=SLACK)
    assert all(a.outcome.startswith("moved: launch failed on p") for a in final.history)
    rows = stubs.store.all_reservations()
    assert [r.attempt for r in rows] == [1, 2, 3, 4, 5] and not any(r.active for r in rows)


async def test_job_running_for_hours_then_moved_and_finished(time_env: WorkflowEnvironment, tmp_path: Path) -> None:
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    stubs = WorkloadStubs(time_env, [pool_spec("p1"), pool_spec("p2", location="cloud")],
                          f"sqlite:///{tmp_path / 'f.db'}", runtime=timedelta(hours=3))
    name = f"long-{uuid.uuid4().hex[:6]}"
    async with stubs.worker(queue):
        handle = await start_workload(time_env, queue, stubs, name)
        await launched(stubs, f"{name}-a1")
        await job_ended(handle, 1, JobState.RUNNING)  # the watcher's first look
        await time_env.sleep(timedelta(hours=2))
        running: WorkloadStatus = await handle.query("status", result_type=WorkloadStatus)
        stubs.store.set_health("p1", Health.UNHEALTHY, "node lost")  # what the monitor records before it signals
        await handle.signal("relocate", RelocateSignal(pool="p1", reason="became unhealthy: node lost"))
        await launched(stubs, f"{name}-a2")
        await job_ended(handle, 2, JobState.RUNNING)
        await time_env.sleep(timedelta(hours=3))
        await job_ended(handle, 2)
        final = WorkloadStatus.model_validate(await handle.result())
        events = [e async for e in handle.fetch_history_events()]

    assert running.state == WorkloadState.RUNNING and running.pool == "p1"
    assert final.state == WorkloadState.SUCCEEDED and final.attempts == 2 and final.pool == "p2"
    first, second = final.history
    assert first.outcome == "moved: pool p1 became unhealthy: node lost"
    assert round((first.ended_at - first.started_at).total_seconds() / 3600, 1) == 2.0  # type: ignore[operator]
    assert round((second.ended_at - second.started_at).total_seconds() / 3600, 1) == 3.0  # type: ignore[operator]
    assert stubs.cancelled == [f"{name}-a1"]  # the copy on p1 is stopped (best effort)
    # Five hours of running held no activity: launch twice, cancel the moved copy, nothing else.
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name for e in events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert sorted(scheduled) == ["cancel_job", "launch_job", "launch_job"]


async def reserved(stubs: WorkloadStubs, workload_id: str, attempt: int) -> str:
    """Wait until the admission loop has placed the attempt; the pool it holds GPUs on."""
    while True:
        rows = [r for r in stubs.store.active_reservations() if (r.workload_id, r.attempt) == (workload_id, attempt)]
        if rows:
            return rows[0].pool
        await asyncio.sleep(0.05)


async def running_on_p1(time_env: WorkflowEnvironment, queue: str, stubs: WorkloadStubs,
                        name: str) -> WorkflowHandle[Any, Any]:
    handle = await start_workload(time_env, queue, stubs, name)
    await launched(stubs, f"{name}-a1")
    await job_ended(handle, 1, JobState.RUNNING)
    return handle


async def failover_placed_the_next_attempt(time_env: WorkflowEnvironment, queue: str, stubs: WorkloadStubs,
                                           name: str) -> tuple[WorkflowHandle[Any, Any], list[Any], str]:
    """The workload runs on p1; p1 fails and the store re-queues its work (as the monitor's failover
    does) and the loop places the next attempt, all before the workload is told. Returns the
    workload, what the store re-queued, and the pool attempt 2 holds GPUs on."""
    from inferofabric.store.admission import requeue_off_pool

    handle = await running_on_p1(time_env, queue, stubs, name)
    stubs.store.set_health("p1", Health.UNHEALTHY, "node lost")
    moved = requeue_off_pool(stubs.store, "p1", Health.UNHEALTHY.value)
    await time_env.client.get_workflow_handle(admission_id(queue)).signal("wake", "re-queued off p1")
    return handle, moved, await reserved(stubs, name, 2)


async def test_a_failover_requeued_by_the_store_and_admitted_before_the_workload_heard(
        time_env: WorkflowEnvironment, tmp_path: Path) -> None:
    """The monitor's failover re-queues the pool's work in one store write and wakes the loop; the
    loop may place the next attempt before the workload has taken in the move. The workload keeps
    that admission, sends no enqueue of its own and launches where it was placed."""
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    stubs = WorkloadStubs(time_env, [pool_spec("p1"), pool_spec("p2")], f"sqlite:///{tmp_path / 'f.db'}")
    name = f"moved-{uuid.uuid4().hex[:6]}"
    async with stubs.worker(queue):
        handle, moved, placed_on = await failover_placed_the_next_attempt(time_env, queue, stubs, name)
        assert [(m.workload_id, m.attempt, m.next_attempt) for m in moved] == [(name, 1, 2)]
        assert placed_on == "p2"  # placed, and told, before the workload heard
        await handle.signal("relocate", RelocateSignal(pool="p1", reason="became unhealthy: node lost", attempt=1,
                                                       requeued_attempt=2, copies_stopped_by_sender=True))
        await launched(stubs, f"{name}-a2")
        await job_ended(handle, 2)
        final = WorkloadStatus.model_validate(await handle.result())
        events = (await handle.query("explain", result_type=Explanation)).events
        history = [e async for e in handle.fetch_history_events()]

    assert final.state == WorkloadState.SUCCEEDED and final.attempts == 2 and final.pool == "p2"
    assert final.history[0].outcome == "moved: pool p1 became unhealthy: node lost"
    assert any("attempt 2: queued by the failover" in e for e in events), events
    assert stubs.cancelled == []  # the monitor stops the copy on p1, with every other one there
    # One enqueue (attempt 1's): attempt 2 was written by the failover.
    markers = [e for e in history if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
               and b"enqueue_workload" in e.SerializeToString()]
    assert len(markers) == 1
    assert not [r for r in stubs.store.active_reservations()]


async def test_a_workload_cancelled_after_a_failover_requeued_it_holds_nothing(
        time_env: WorkflowEnvironment, tmp_path: Path) -> None:
    """Cancelled after the failover placed its next attempt but before it took in the move: the
    workload ends cancelled and takes that attempt, and its GPUs, out of the queue."""
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    stubs = WorkloadStubs(time_env, [pool_spec("p1"), pool_spec("p2")], f"sqlite:///{tmp_path / 'f.db'}")
    name = f"cancelled-{uuid.uuid4().hex[:6]}"
    async with stubs.worker(queue):
        handle, _, _ = await failover_placed_the_next_attempt(time_env, queue, stubs, name)
        await handle.signal("request_cancel")
        final = WorkloadStatus.model_validate(await handle.result())

    assert final.state == WorkloadState.CANCELLED
    assert f"{name}-a2" not in stubs.launched
    assert not stubs.store.active_reservations()


WAITING_HISTORY_BOUND = 60  # events of a workload that waited a day (docs/admission.md)


async def test_a_day_of_waiting_stays_under_its_history_bound(time_env: WorkflowEnvironment, tmp_path: Path) -> None:
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    # pii may not go to the cloud, and the only on-prem pool arrives a day later.
    stubs = WorkloadStubs(time_env, [pool_spec("c1", location="cloud")], f"sqlite:///{tmp_path / 'f.db'}",
                          runtime=timedelta(minutes=10))
    name = f"patient-{uuid.uuid4().hex[:6]}"
    async with stubs.worker(queue):
        handle = await start_workload(time_env, queue, stubs, name, classification="pii")
        await time_env.sleep(timedelta(hours=24))
        waiting: WorkloadStatus = await handle.query("status", result_type=WorkloadStatus)
        events = [e async for e in handle.fetch_history_events()]
        stubs.store.upsert_pool(pool_spec("onprem"))
        await time_env.client.get_workflow_handle(admission_id(queue)).signal("wake", "pool onprem registered")
        while not stubs.launched:
            await asyncio.sleep(0.1)
        await job_ended(handle, 1)
        final = WorkloadStatus.model_validate(await handle.result())
        loop_events = [e async for e in time_env.client.get_workflow_handle(admission_id(queue))
                       .fetch_history_events()]

    assert waiting.state == WorkloadState.QUEUED
    assert len(events) < WAITING_HISTORY_BOUND, [EventType.Name(e.event_type) for e in events]
    assert not [e for e in events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]  # no polling
    assert final.state == WorkloadState.SUCCEEDED and final.pool == "onprem"
    assert len(loop_events) < 100  # the loop slept the day through too
