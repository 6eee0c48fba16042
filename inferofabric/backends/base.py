"""The small interface every back end implements: capacity, health, launch, status, cancel, logs.

Back ends are synchronous (the official cloud SDKs are); activities call them in a thread. Each
back end lives in one module of this folder and is registered by name in `registry.py`, so adding a
back end touches this folder only.
"""

from __future__ import annotations

import abc
import re
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from inferofabric.models.common import Health

# The job data types live with the models (workflows use them without importing a back end); the back
# ends, activities and tests name them here as before.
from inferofabric.models.jobs import (  # noqa: F401
    LOST_EVICTED,
    LOST_GONE,
    LOST_MAINTENANCE,
    LOST_NODE,
    LOST_RECLAIMED,
    JobRequest,
    JobState,
    JobStatus,
    job_id_for,
    parse_job_id,
)
from inferofabric.models.pool import PoolSpec


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
