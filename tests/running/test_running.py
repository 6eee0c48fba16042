"""The running path on the real dev server and worker: the pool watcher, failure classes, the
reconciler, launch timeouts and the launch-vs-cancel race — judged from the simulated back ends' own
job records (what actually ran), not from the fabric's bookkeeping."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import EventType

from inferofabric.backends.simulated import SimulatedBackend
from inferofabric.models import WorkloadSpec, WorkloadState
from inferofabric.models.workload import SIM_DURATION_ANNOTATION, SIM_OUTCOME_ANNOTATION
from inferofabric.store.tables import ReservationRow


def pool(name: str, gpus: int = 4, location: str = "on-prem", **extra: Any) -> dict[str, Any]:
    return {"name": name, "location": location, "backend": "simulated", "region": name, "gpus": {"A100": gpus},
            "price_per_gpu_hour": {"A100": 1.0}, **extra}


def job(name: str, duration: str = "2s", **annotations: str) -> WorkloadSpec:
    return WorkloadSpec.model_validate({
        "name": name, "team": "ads", "image": "img", "resources": {"gpu": {"type": "A100", "count": 1}},
        "annotations": {SIM_DURATION_ANNOTATION: duration, **annotations}})


async def until(predicate, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := await predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.2)
    return value


def records(fabric: Any, pool_name: str) -> list[dict[str, Any]]:
    return SimulatedBackend(fabric.store.pool_spec(pool_name), fabric.home).job_records()


async def test_a_reclaimed_spot_job_moves_without_using_an_attempt(fabric: Any) -> None:
    client = fabric.client
    await client.register_pool(pool("spot", spot=True))
    handle = await client.submit(job("trainer", duration="1s", **{SIM_OUTCOME_ANNOTATION: "reclaimed"}),
                                 max_attempts=1)
    first = await until(lambda: _attempts_on(fabric, "spot", "trainer", 1))
    assert first[0]["attempt"] == 1
    # The pool reclaims every attempt (the annotation travels with the spec): a second attempt that
    # started at all proves the first loss was not charged to max_attempts=1.
    second = await until(lambda: _attempts_on(fabric, "spot", "trainer", 2))
    assert second[1]["attempt"] == 2
    await client.get("trainer").cancel()
    final = await handle.status()
    moved = [a for a in final.history if a.outcome.startswith("moved: job reclaimed")]
    assert moved, final.history


async def _attempts_on(fabric: Any, pool_name: str, workload: str, count: int) -> list[dict[str, Any]] | None:
    found = sorted((r for r in records(fabric, pool_name) if r["workload_id"] == workload), key=lambda r: r["attempt"])
    return found if len(found) >= count else None


async def test_exit_code_one_fails_the_workload(fabric: Any) -> None:
    client = fabric.client
    await client.register_pool(pool("dc1"))
    handle = await client.submit(job("broken", duration="1s", **{SIM_OUTCOME_ANNOTATION: "failed"}))
    final = await asyncio.wait_for(handle.result(), 30)
    assert final.state == WorkloadState.FAILED and final.attempts == 1
    assert len(records(fabric, "dc1")) == 1  # failed on its own: not moved, not run again


async def test_pool_reclaim_moves_running_jobs_and_hints_the_checkpoint(fabric: Any) -> None:
    client = fabric.client
    await client.register_pool(pool("spot", spot=True))
    await client.register_pool(pool("steady"))
    await client.cordon("steady")
    handle = await client.submit(job("resumable", duration="600s"))
    await until(lambda: _running(handle))
    await client.uncordon("steady")
    said = await client.reclaim_pool("spot")
    assert said == "reclaimed 1 jobs"
    status = await until(lambda: _running_attempt(handle, 2))
    assert status.pool in ("spot", "steady")
    assert status.history[0].outcome.startswith("moved: job reclaimed on spot")
    again = [r for p in ("spot", "steady") for r in records(fabric, p) if r["attempt"] == 2]
    assert len(again) == 1
    await handle.cancel()


async def _running(handle: Any) -> bool:
    return (await handle.status()).state == WorkloadState.RUNNING


async def _running_attempt(handle: Any, attempt: int) -> Any:
    status = await handle.status()
    return status if status.state == WorkloadState.RUNNING and status.attempts == attempt else None


async def test_a_job_pending_past_its_launch_timeout_moves(fabric: Any) -> None:
    client = fabric.client
    await client.register_pool(pool("slow", launch_timeout_seconds=2))
    await client.register_pool(pool("other", location="cloud"))
    await client.set_policy({"placement": {"default": "on-prem", "failover": {"when": "pool_health != healthy",
                                                                             "target": "cloud"}}})
    spec = job("stuck", duration="1s", **{"sim.inferofabric.io/pending": "3600s"})
    handle = await client.submit(spec)
    status = await until(lambda: _attempts(handle, 2), timeout=40)
    assert "after the launch timeout of 2s" in status.history[0].outcome, status.history
    await handle.cancel()


async def _attempts(handle: Any, count: int) -> Any:
    status = await handle.status()
    return status if status.attempts >= count else None


async def test_a_cancel_racing_the_launch_leaves_no_job(fabric: Any) -> None:
    client = fabric.client
    await client.register_pool(pool("dc1"))
    handle = await client.submit(job("raced", duration="600s", **{"sim.inferofabric.io/launch-delay": "2s"}))
    await until(lambda: _state(handle, WorkloadState.LAUNCHING))
    final = await handle.cancel()
    assert final.state == WorkloadState.CANCELLED
    created = records(fabric, "dc1")
    assert len(created) == 1 and created[0]["cancelled"], created  # launched after all, then removed
    assert not fabric.store.active_reservations("dc1")


async def _state(handle: Any, state: WorkloadState) -> bool:
    return (await handle.status()).state == state


async def test_reconciler_frees_a_leaked_reservation_and_removes_an_orphan_on_a_drained_pool(fabric: Any) -> None:
    client = fabric.client
    await client.register_pool(pool("dc1"))
    spec = fabric.store.pool_spec("dc1")
    backend = SimulatedBackend(spec, fabric.home)
    from inferofabric.backends.base import JobRequest

    backend.launch(JobRequest(job_id="ghost-a1", workload_id="ghost", attempt=1, spec=job("ghost", "600s"),
                              gpu_type="A100", gpus=1))
    with fabric.store.session(write=True) as session:  # an attempt that died between reserve and release
        from datetime import UTC, datetime

        session.add(ReservationRow(workload_id="vanished", attempt=1, pool="dc1", gpu_type="A100", gpus=2,
                                   created_at=datetime.now(UTC) - timedelta(minutes=5)))
        session.commit()
    await client.drain("dc1")
    report = await client.reconcile_pool("dc1")
    assert report.released == ["vanished attempt 1: its workflow has ended"]
    assert report.cancelled == ["ghost-a1"]
    assert next(r for r in backend.job_records() if r["job_id"] == "ghost-a1")["cancelled"]
    assert not fabric.store.active_reservations("dc1")


async def test_running_jobs_hold_no_activity(fabric: Any) -> None:
    """A running workload's history shows its launch and nothing in flight: the pool watcher follows it."""
    client = fabric.client
    await client.register_pool(pool("dc1"))
    handle = await client.submit(job("quiet", duration="3s"))
    final = await asyncio.wait_for(handle.result(), 30)
    assert final.state == WorkloadState.SUCCEEDED
    events = [e async for e in fabric.temporal.get_workflow_handle("quiet").fetch_history_events()]
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name for e in events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert scheduled == ["launch_job"], scheduled
    signals = [e.workflow_execution_signaled_event_attributes.signal_name for e in events
               if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    assert "job_state" in signals
