"""Jobs: one attempt of a workload on a back end, as the fabric's workflows and back ends both see it.

The data the back ends hand back (`JobStatus`, `JobState`) and take (`JobRequest`), the job id of an
attempt, and why a job was lost. They travel in workflow and activity payloads (models/messages.py),
so they live with the models: workflows use them without importing a back end. `backends/base.py`
names them too, for the back ends.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

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
