"""The small interface every back end implements: capacity, health, launch, status, cancel, logs.

Back ends are synchronous (the official cloud SDKs are); activities call them in a thread. Each
back end lives in one module of this folder and is registered by name in `registry.py`, so adding a
back end touches this folder only.
"""

from __future__ import annotations

import abc
import re
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from inferofabric.models.common import Health
from inferofabric.models.pool import PoolSpec
from inferofabric.models.workload import WorkloadSpec


class JobState(StrEnum):
    PENDING = "pending"  # accepted, waiting for resources / image pull
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"  # the back end no longer knows the job (node lost, spot reclaimed, deleted)

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.LOST)


class JobRequest(BaseModel):
    """Everything a back end needs to launch one attempt of a workload.

    `job_id` is deterministic (workload id + attempt): a retried launch finds the job it already
    started instead of starting a second copy. `env` holds resolved values and `secret_env` the
    names of the variables whose values are secrets (never logged, never put in history: the
    activity resolves them just before calling the back end).
    """

    job_id: str
    workload_id: str
    attempt: int
    spec: WorkloadSpec
    gpu_type: str | None = None
    gpus: int = 0
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: list[str] = Field(default_factory=list)
    image_pull_credentials: dict[str, str] | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class JobStatus(BaseModel):
    job_id: str
    state: JobState
    message: str = ""
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    logs_url: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class PoolProbe(BaseModel):
    """One look at a pool: its health now and, where the back end can tell, its GPU capacity."""

    health: Health
    reason: str = ""
    gpus: dict[str, int] | None = None  # discovered capacity by GPU type; None = use the declared inventory
    details: dict[str, Any] = Field(default_factory=dict)


class BackendError(Exception):
    """Base of back-end errors. `retryable` tells the activity layer whether Temporal should retry."""

    retryable: ClassVar[bool] = True


class BackendUnavailable(BackendError):
    """The pool's API did not answer or answered 5xx: transient, retry (and let health monitoring judge)."""


class BackendThrottled(BackendUnavailable):
    """The pool's API answered "slow down" (HTTP 429, ThrottlingException, RESOURCE_EXHAUSTED).

    The pool is alive: health monitoring counts this as slowness, never as a failed probe, and the
    callers back off (a retry of the activity, a longer period for the pool's watcher)."""


class JobRejected(BackendError):
    """The back end refused the job for a reason a retry will not fix (bad image spec, permission denied)."""

    retryable = False


class BackendConfigError(BackendError):
    """The pool's back-end configuration is wrong (missing field, bad credentials reference)."""

    retryable = False


class Backend(abc.ABC):
    """One pool's back end. Instances are cheap; activities create one per call from the pool spec."""

    kind: ClassVar[str]
    config_model: ClassVar[type[BaseModel] | None] = None

    def __init__(self, pool: PoolSpec, home: Path) -> None:
        self.pool = pool
        self.home = home
        self.config = self.parse_config(pool)
        # Jobs this process launched on the pool that its watcher has not reported yet: the watcher
        # asks about them by id, so a job that ends before it shows in a list is still seen.
        self.launched: set[str] = set()

    @classmethod
    def parse_config(cls, pool: PoolSpec) -> Any:
        if cls.config_model is None:
            return pool.backend_config
        return cls.config_model.model_validate(pool.backend_config)

    @abc.abstractmethod
    def probe(self) -> PoolProbe:
        """Health and (optionally) capacity. Raise BackendUnavailable when the pool cannot be reached."""

    @abc.abstractmethod
    def launch(self, request: JobRequest) -> JobStatus:
        """Start the job, or return the status of the job with the same id if it already exists."""

    @abc.abstractmethod
    def status(self, job_id: str) -> JobStatus:
        """Current state; JobState.LOST when the back end does not know the job."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> None:
        """Stop and remove the job. A job that does not exist is already cancelled (no error)."""

    @abc.abstractmethod
    def logs(self, job_id: str, tail: int = 200) -> str:
        """The last lines of the job's output (or a link to where they are)."""

    @abc.abstractmethod
    def list_jobs(self) -> list[str]:
        """Ids of the jobs the fabric started on this pool that still exist (for orphan clean-up)."""

    def statuses(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """The states of many jobs. Back ends with a batched call (describe_jobs of 100 ids, one
        filtered list) override this; the default asks job by job."""
        return {job_id: self.status(job_id) for job_id in job_ids}

    def snapshot(self, known: list[str]) -> dict[str, JobStatus]:
        """One look at every fabric job on the pool: the jobs it lists plus `known` (jobs the caller
        saw before: one that is gone comes back LOST). The pool watcher's one call per period."""
        ids = sorted(set(self.list_jobs()) | set(known))
        return self.statuses(ids)


JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def checked_job_id(job_id: str) -> str:
    """`job_id` when it is a plain id (letters, digits, '.', '_', '-'; no '/', no '..'), else JobRejected:
    back ends that read files by job id (local, simulated) must never be led out of their folder."""
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id) or ".." in job_id:
        shown = job_id[:80] if isinstance(job_id, str) else type(job_id).__name__
        raise JobRejected(f"not a job id: {shown!r} (a job id is letters, digits, '.', '_' and '-')")
    return job_id


def job_id_for(workload_id: str, attempt: int) -> str:
    """Deterministic job id: the same workload attempt always maps to the same back-end job."""
    return f"{workload_id}-a{attempt}"


def parse_job_id(job_id: str) -> tuple[str, int] | None:
    """(workload id, attempt) of a fabric job id; None for an id the fabric did not make."""
    workload_id, sep, attempt = job_id.rpartition("-a")
    if not sep or not workload_id or not attempt.isdigit():
        return None
    return workload_id, int(attempt)


# Why a job was lost (JobStatus.details["class"]): the pool took it away, the workload did nothing
# wrong. The workflow moves such a job and does not count it against the workload's attempts.
LOST_RECLAIMED = "reclaimed"  # spot / preemptible capacity taken back
LOST_EVICTED = "evicted"  # the cluster evicted or preempted the pod
LOST_NODE = "node-lost"  # the node or VM died or went away
LOST_MAINTENANCE = "maintenance"  # host maintenance stopped it
LOST_GONE = "gone"  # the back end no longer knows the job
