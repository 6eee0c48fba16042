"""Every step of a workload failing for good ends the workload cleanly: a final state that status,
result and search attributes agree on, a reason that names the step, and no GPUs left reserved.

Runs the real WorkloadWorkflow and admission (loop, activities, store) on the time-skipping server;
one activity at a time is replaced by one that fails non-retryably (a secret that does not exist
goes through the real seal_secrets)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from inferofabric.backends.base import JobState
from inferofabric.models import WorkloadState
from inferofabric.models.messages import WorkloadRequest
from inferofabric.models.status import WorkloadStatus

from . import test_time_skipping as ts
from .util import job


def failing(name: str) -> Any:
    @activity.defn(name=name)
    async def fails(*_: Any) -> None:
        raise ApplicationError(f"{name} broke for good", type="Boom", non_retryable=True)

    return fails


def with_failing(activities: list[Any], name: str) -> list[Any]:
    kept = [a for a in activities if activity._Definition.must_from_callable(a).name != name]
    assert len(kept) == len(activities) - 1, name
    return [*kept, failing(name)]


Outcome = tuple[WorkloadStatus, WorkloadStatus, ts.WorkloadStubs]  # result, status query, stubs


async def run_to_the_end(env: WorkflowEnvironment, tmp_path: Path, broken: str | None, spec: Any,
                         watcher_says: JobState | None = None) -> Outcome:
    stubs = ts.WorkloadStubs(env, [ts.pool_spec("p1")], f"sqlite:///{tmp_path / 'f.db'}")
    activities = [*stubs.activities(), stubs.placement.seal_secrets]
    if broken is not None:
        activities = with_failing(activities, broken)
    queue = f"sf-{uuid.uuid4().hex[:8]}"
    async with ts.fabric_workers(env, queue, activities):
        handle = await env.client.start_workflow(
            "WorkloadWorkflow", WorkloadRequest(spec=spec, max_attempts=2).model_dump(mode="json"), id=spec.name,
            task_queue=queue)
        if watcher_says is not None:
            await ts.launched(stubs, f"{spec.name}-a1")
            await ts.job_ended(handle, 1, watcher_says)
        final = WorkloadStatus.model_validate(await asyncio.wait_for(handle.result(), 60))
        queried = await handle.query("status", result_type=WorkloadStatus)
    return final, queried, stubs


@pytest.mark.parametrize(("broken", "watcher_says", "expected"), [
    ("enqueue_workload", None, "enqueue_workload broke for good"),
    ("seal_secrets", None, "secrets could not be prepared for p1: seal_secrets broke for good"),
    ("release_capacity", JobState.SUCCEEDED, "release_capacity broke for good"),
    ("launch_job", None, "gave up after 2 attempts"),
])
async def test_a_step_that_fails_for_good_ends_the_workload(time_env: WorkflowEnvironment, tmp_path: Path,
                                                            broken: str, watcher_says: JobState | None,
                                                            expected: str) -> None:
    env = {"DB": {"secret": "db-password"}} if broken == "seal_secrets" else {}
    spec = job(f"broken-{broken.replace('_', '-')}-{uuid.uuid4().hex[:4]}", gpus=4, env=env)
    final, queried, stubs = await run_to_the_end(time_env, tmp_path, broken, spec, watcher_says)
    assert final.state == WorkloadState.FAILED and expected in final.message, final.message
    assert queried.state == WorkloadState.FAILED and queried.message == final.message  # `fabric status` agrees
    active = stubs.store.active_reservations()
    if broken == "release_capacity":
        # The release itself is what broke: the reservation is left for the reconciler, and it says so.
        assert [r.workload_id for r in active] == [spec.name]
    else:
        assert not active, active


async def test_a_secret_that_does_not_exist_fails_the_workload_at_once(time_env: WorkflowEnvironment,
                                                                       tmp_path: Path) -> None:
    """The first-hour wedge: a 4-GPU workload naming a secret nobody stored."""
    spec = job(f"wedge-{uuid.uuid4().hex[:4]}", gpus=4, env={"PW": {"secret": "no-such-secret"}})
    final, queried, stubs = await run_to_the_end(time_env, tmp_path, None, spec)
    assert final.state == WorkloadState.FAILED and queried.state == WorkloadState.FAILED
    assert "no secret named 'no-such-secret'" in final.message
    assert final.history[-1].outcome == "failed"
    assert not stubs.store.active_reservations()
    assert not stubs.launched  # nothing was started on the pool


async def test_cancel_and_status_failing_do_not_wedge_a_finished_job(time_env: WorkflowEnvironment,
                                                                     tmp_path: Path) -> None:
    """The job's own status look and the stop of a job are best effort: the workload still ends as
    its job did."""
    spec = job(f"looks-{uuid.uuid4().hex[:4]}")
    stubs = ts.WorkloadStubs(time_env, [ts.pool_spec("p1")], f"sqlite:///{tmp_path / 'f.db'}")
    activities = with_failing(with_failing(stubs.activities(), "job_status"), "cancel_job")
    queue = f"sf-{uuid.uuid4().hex[:8]}"
    async with ts.fabric_workers(time_env, queue, activities):
        handle = await time_env.client.start_workflow(
            "WorkloadWorkflow", WorkloadRequest(spec=spec).model_dump(mode="json"), id=spec.name, task_queue=queue)
        await ts.launched(stubs, f"{spec.name}-a1")
        await ts.job_ended(handle, 1, JobState.SUCCEEDED)
        final = WorkloadStatus.model_validate(await asyncio.wait_for(handle.result(), 60))
    assert final.state == WorkloadState.SUCCEEDED
    assert not stubs.store.active_reservations()
