"""Back-end activities: launch, status, cancel, logs, probe (watching is activities/watch.py).

They run wherever the pool's back end is reachable: the control plane's worker for cloud, local
and simulated pools, or the pool's agent (task queue `pool.<name>`) for on-prem Kubernetes.
Launch is idempotent (deterministic job id; "already exists" is success), so Temporal's retries
never start a second copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from inferofabric.activities.errors import typed_errors
from inferofabric.backends.base import BackendConfigError, BackendThrottled, BackendUnavailable, JobRequest, JobStatus
from inferofabric.backends.registry import backend_for
from inferofabric.errors import FailureType
from inferofabric.models.common import Health
from inferofabric.models.messages import JobInput, LaunchInput, ProbeResult, StatusesInput
from inferofabric.models.pool import PoolSpec
from inferofabric.models.workload import SecretRef
from inferofabric.secrets import unseal
from inferofabric.threads import in_backend, in_monitor

CANCEL_CONCURRENCY = 16  # cancels in flight per batch: a pool's API may throttle more


def fabric_env(request: LaunchInput, home: Path) -> dict[str, str]:
    """What every job is told about itself: which attempt this is (a reclaimed or moved job runs
    again) and where to keep checkpoints so that the next attempt resumes instead of restarting."""
    pool = request.pool
    root = pool.checkpoint_root or (str(home / "checkpoints") if pool.backend in ("local", "simulated")
                                    else "/checkpoints")
    return {"FABRIC_WORKLOAD_ID": request.workload_id, "FABRIC_ATTEMPT": str(request.attempt),
            "FABRIC_JOB_ID": request.job_id, "FABRIC_POOL": pool.name, "FABRIC_SPOT": "1" if pool.spot else "0",
            "FABRIC_CHECKPOINT_DIR": f"{root.rstrip('/')}/{request.spec.team}/{request.workload_id}"}


def store_secret_resolver(store_url: str | None, pool: str, home: Path,
                          fallback: Callable[[str], str | None]) -> Callable[[str], str]:
    """A pool's credential secrets: its environment (`FABRIC_SECRET_<NAME>`) first, else the fabric's
    sealed secret store (`fabric secret set NAME [--pool POOL]`), opened with the pool's key."""

    def resolve(name: str) -> str:
        try:
            value = fallback(name)
        except BackendConfigError:
            value = None
        if value:
            return value
        from inferofabric.store.db import NotFound, get_store

        try:
            row = get_store(store_url).get_secret(name)
        except NotFound:
            raise BackendConfigError(f"pool {pool!r}: secret {name!r} is neither in the environment "
                                     "nor in the fabric's secret store (`fabric secret set`)") from None
        if row.team is not None:  # a team's secret is for its workloads, never a pool's credentials
            raise BackendConfigError(f"pool {pool!r}: secret {name!r} belongs to team {row.team!r}; a pool's "
                                     "credentials are the fabric's own (`fabric secret set NAME --fabric`)")
        return unseal(row.ciphertext, pool=row.pool, home=home)

    return resolve


def reading_backend(pool: PoolSpec, home: Path, store_url: str | None) -> Any:
    """The pool's back end as the control plane's worker builds it (credentials from the store too),
    for reads on the fabric's host that must not pass through a workflow (`fabric logs`)."""
    return JobActivities(home, store_url, store=True)._backend(pool)


class JobActivities:
    def __init__(self, home: Path, store_url: str | None = None, store: bool = False) -> None:
        self.home = home
        self.store_url = store_url
        self.has_store = store  # the control plane's worker (agents have no store)

    def _backend(self, pool: PoolSpec):  # type: ignore[no-untyped-def]
        backend: Any = backend_for(pool, self.home)
        wants = hasattr(backend, "secret_resolver") and not getattr(backend, "_resolver_from_store", False)
        if self.has_store and wants:
            backend.secret_resolver = store_secret_resolver(self.store_url, pool.name, self.home,
                                                            backend.secret_resolver)
            backend._resolver_from_store = True
        return backend

    @activity.defn(name="launch_job")
    @typed_errors
    async def launch_job(self, request: LaunchInput) -> JobStatus:
        plain = {k: v for k, v in request.spec.env.items() if not isinstance(v, SecretRef)}
        opened = {name: unseal(sealed, pool=request.pool.name, home=self.home)
                  for name, sealed in request.sealed_env.items()}
        job = JobRequest(
            job_id=request.job_id, workload_id=request.workload_id, attempt=request.attempt, spec=request.spec,
            gpu_type=request.gpu_type, gpus=request.gpus, env={**plain, **opened, **fabric_env(request, self.home)},
            secret_env=sorted(opened),
            labels={"inferofabric.io/workload": request.workload_id, "inferofabric.io/team": request.spec.team},
        )
        backend = self._backend(request.pool)
        status = await in_backend(backend.launch, job)
        backend.launched.add(request.job_id)
        return status

    @activity.defn(name="job_status")
    @typed_errors
    async def job_status(self, request: JobInput) -> JobStatus:
        return await in_backend(self._backend(request.pool).status, request.job_id)

    @activity.defn(name="job_statuses")
    @typed_errors
    async def job_statuses(self, request: StatusesInput) -> dict[str, JobStatus]:
        """Many jobs in one batched look (the reconciler's)."""
        return await in_backend(self._backend(request.pool).snapshot, request.job_ids)

    @activity.defn(name="pool_job_states")
    @typed_errors
    async def pool_job_states(self, pool: PoolSpec) -> dict[str, str]:
        """Every live fabric job on the pool and its state, compact (the reconciler's look)."""
        snapshot = await in_backend(self._backend(pool).snapshot, [])
        return {job_id: status.state.value for job_id, status in snapshot.items()}

    @activity.defn(name="cancel_job")
    @typed_errors
    async def cancel_job(self, request: JobInput) -> None:
        await in_backend(self._backend(request.pool).cancel, request.job_id)

    @activity.defn(name="cancel_jobs")
    @typed_errors
    async def cancel_jobs(self, request: StatusesInput) -> dict[str, str]:
        """Stop many jobs in one activity (the copies a failover left, a reconciliation's orphans):
        job id -> "" when stopped (or already gone), else why not. Never fails for a pool that does not
        answer: each job says so, and the reconciler tries again when the pool is back."""
        backend = self._backend(request.pool)
        gate = asyncio.Semaphore(CANCEL_CONCURRENCY)

        async def one(job_id: str) -> tuple[str, str]:
            async with gate:
                try:
                    await in_backend(backend.cancel, job_id)
                    return job_id, ""
                except Exception as error:  # reported per job: one bad answer must not hide the rest
                    return job_id, str(error) or type(error).__name__

        return dict(await asyncio.gather(*(one(job_id) for job_id in request.job_ids)))

    @activity.defn(name="job_logs")
    async def job_logs(self, request: JobInput) -> str:
        """Refused: an activity's result is kept in its workflow's history, and a job's output may hold
        anything it printed (a secret). `fabric logs` reads the pool from the caller's side."""
        raise ApplicationError("logs are not read through workflows (their text would stay in history): "
                               "`fabric logs` reads them from the pool on the fabric's host",
                               type=FailureType.INVALID_INPUT, non_retryable=True)

    @activity.defn(name="list_pool_jobs")
    @typed_errors
    async def list_pool_jobs(self, pool: PoolSpec) -> list[str]:
        return await in_backend(self._backend(pool).list_jobs)

    @activity.defn(name="probe_pool")
    async def probe_pool(self, pool: PoolSpec) -> ProbeResult:
        """Never fails for an unreachable pool: that is a probe result (the monitor counts it)."""
        try:
            probe = await in_monitor(self._backend(pool).probe)
        except BackendThrottled as error:
            # The pool answered "slow down": it is alive. Neither a failed nor a good probe.
            return ProbeResult(ok=True, throttled=True, health=Health.HEALTHY, reason=str(error))
        except BackendUnavailable as error:
            return ProbeResult(ok=False, health=Health.UNHEALTHY, reason=str(error))
        except Exception as error:  # a broken back end is an unhealthy pool, not a crashed monitor
            raise ApplicationError(f"probe failed: {error}", type=FailureType.PROBE_ERROR) from None
        return ProbeResult(ok=probe.health != Health.UNHEALTHY, health=probe.health, reason=probe.reason,
                           gpus=probe.gpus)
