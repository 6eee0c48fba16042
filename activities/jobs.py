"""Back-end activities: launch, watch, status, cancel, logs, probe.

They run wherever the pool's back end is reachable: the control plane's worker for cloud, local
and simulated pools, or the pool's agent (task queue `pool.<name>`) for on-prem Kubernetes.
Launch is idempotent (deterministic job id; "already exists" is success), so Temporal's retries
never start a second copy.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from inferofabric.activities.errors import typed_errors
from inferofabric.backends.base import BackendUnavailable, JobRequest, JobState, JobStatus
from inferofabric.backends.registry import backend_for
from inferofabric.models.common import Health
from inferofabric.models.messages import JobInput, LaunchInput, ProbeResult, WatchInput
from inferofabric.models.pool import PoolSpec
from inferofabric.models.workload import SecretRef
from inferofabric.secrets import unseal


class JobActivities:
    def __init__(self, home: Path) -> None:
        self.home = home

    def _backend(self, pool: PoolSpec):  # type: ignore[no-untyped-def]
        return backend_for(pool, self.home)

    @activity.defn(name="launch_job")
    @typed_errors
    async def launch_job(self, request: LaunchInput) -> JobStatus:
        plain = {k: v for k, v in request.spec.env.items() if not isinstance(v, SecretRef)}
        opened = {name: unseal(sealed, pool=request.pool.name, home=self.home)
                  for name, sealed in request.sealed_env.items()}
        job = JobRequest(
            job_id=request.job_id, workload_id=request.workload_id, attempt=request.attempt, spec=request.spec,
            gpu_type=request.gpu_type, gpus=request.gpus, env={**plain, **opened}, secret_env=sorted(opened),
            labels={"inferofabric.io/workload": request.workload_id, "inferofabric.io/team": request.spec.team},
        )
        backend = self._backend(request.pool)
        return await asyncio.to_thread(backend.launch, job)

    @activity.defn(name="watch_job")
    @typed_errors
    async def watch_job(self, request: WatchInput) -> JobStatus:
        """Poll until the job ends, heartbeating; a retry after a worker crash re-attaches to the job."""
        backend = self._backend(request.pool)
        while True:
            try:
                status = await asyncio.to_thread(backend.status, request.job_id)
            except BackendUnavailable as error:
                # Keep watching: health monitoring decides whether the pool has failed.
                activity.heartbeat({"unreachable": str(error)})
                await asyncio.sleep(request.interval_seconds)
                continue
            if status.state.terminal or (request.until_running and status.state == JobState.RUNNING):
                return status
            activity.heartbeat({"state": status.state.value, "message": status.message})
            await asyncio.sleep(request.interval_seconds)

    @activity.defn(name="job_status")
    @typed_errors
    async def job_status(self, request: JobInput) -> JobStatus:
        return await asyncio.to_thread(self._backend(request.pool).status, request.job_id)

    @activity.defn(name="cancel_job")
    @typed_errors
    async def cancel_job(self, request: JobInput) -> None:
        await asyncio.to_thread(self._backend(request.pool).cancel, request.job_id)

    @activity.defn(name="job_logs")
    @typed_errors
    async def job_logs(self, request: JobInput) -> str:
        return await asyncio.to_thread(self._backend(request.pool).logs, request.job_id, request.tail)

    @activity.defn(name="list_pool_jobs")
    @typed_errors
    async def list_pool_jobs(self, pool: PoolSpec) -> list[str]:
        return await asyncio.to_thread(self._backend(pool).list_jobs)

    @activity.defn(name="probe_pool")
    async def probe_pool(self, pool: PoolSpec) -> ProbeResult:
        """Never fails for an unreachable pool: that is a probe result (the monitor counts it)."""
        try:
            probe = await asyncio.to_thread(self._backend(pool).probe)
        except BackendUnavailable as error:
            return ProbeResult(ok=False, health=Health.UNHEALTHY, reason=str(error))
        except Exception as error:  # a broken back end is an unhealthy pool, not a crashed monitor
            raise ApplicationError(f"probe failed: {error}", type="ProbeError") from None
        return ProbeResult(ok=probe.health != Health.UNHEALTHY, health=probe.health, reason=probe.reason,
                           gpus=probe.gpus)
