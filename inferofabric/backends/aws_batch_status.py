"""How the AWS Batch back end reads what Batch answers (pure: no API calls).

A described Batch job into the fabric's JobStatus (state, message, exit code, times, CloudWatch link,
and the lost class when AWS took the host away), which of several jobs sharing a name matters, and
a job queue with its compute environment into the pool's health. aws_batch.py fetches the
documents; these functions only read them, as kubernetes_status.py does for Jobs and pods.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from inferofabric.backends.base import LOST_NODE, LOST_RECLAIMED, JobState, JobStatus, PoolProbe
from inferofabric.models.common import Health

ACTIVE_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
FINISHED_STATUSES = ("SUCCEEDED", "FAILED")
RUNNABLE_PATIENCE_SECONDS = 120  # RUNNABLE longer than this usually means "no capacity"

_HOST_LOST_RE = re.compile(r"Host EC2 \(instance [^)]*\) terminated|host EC2.*terminated", re.I)


def logs_console_url(region: str, log_group: str, log_stream: str) -> str:
    """CloudWatch console link; the console wants each path part URL-encoded twice with `%` as `$`."""

    def enc(value: str) -> str:
        return quote(quote(value, safe=""), safe="").replace("%", "$")

    return (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#logsV2:log-groups/log-group/{enc(log_group)}/log-events/{enc(log_stream)}"
    )


def _ms_to_datetime(value: Any) -> datetime | None:
    if not isinstance(value, int | float) or value <= 0:
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def _is_fabric_cancel(reason: str) -> bool:
    lowered = reason.lower()
    return "inferofabric" in lowered and ("cancel" in lowered or "terminat" in lowered)


def log_stream(job: dict[str, Any]) -> str | None:
    stream = job.get("container", {}).get("logStreamName")
    if not stream:
        attempts = job.get("attempts") or []
        stream = attempts[-1].get("container", {}).get("logStreamName") if attempts else None
    return stream or None


def _exit_code(job: dict[str, Any]) -> int | None:
    code = job.get("container", {}).get("exitCode")
    if code is None and job.get("attempts"):
        code = job["attempts"][-1].get("container", {}).get("exitCode")
    return code if isinstance(code, int) else None


def lost_class(job: dict[str, Any]) -> str | None:
    """Why AWS took a FAILED job away (None: the job itself failed).

    Batch reports an instance that went away (Spot interruption, a terminated or failed host) as
    "Host EC2 (instance i-...) terminated." on the job or its last attempt; a Spot job's lost host is
    a reclaim, an on-demand one a lost node."""
    reasons = [str(job.get("statusReason", ""))]
    reasons += [str(a.get("statusReason", "")) for a in (job.get("attempts") or [])[-1:]]
    if not any(_HOST_LOST_RE.search(r) for r in reasons):
        return None
    text = " ".join(reasons).lower()
    return LOST_RECLAIMED if "spot" in text or job.get("tags", {}).get("inferofabric:spot") == "true" else LOST_NODE


def pick_job(summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Of several jobs sharing a name, the live one if any, else the newest: the one that matters."""
    if not summaries:
        return None
    live = [s for s in summaries if s.get("status") in ACTIVE_STATUSES]
    return max(live or summaries, key=lambda s: s.get("createdAt", 0))


def map_job_state(aws_status: str, reason: str, created_at: datetime | None) -> tuple[JobState, str]:
    """AWS Batch status (and its reason) -> the fabric's JobState and a human message."""
    now = datetime.now(UTC)
    if aws_status == "RUNNABLE":
        waited = (now - created_at).total_seconds() if created_at else 0
        if waited > RUNNABLE_PATIENCE_SECONDS:
            return JobState.PENDING, f"waiting for capacity (RUNNABLE for {int(waited)}s)"
        return JobState.PENDING, "RUNNABLE"
    if aws_status in ("SUBMITTED", "PENDING", "STARTING"):
        return JobState.PENDING, aws_status
    if aws_status == "RUNNING":
        return JobState.RUNNING, ""
    if aws_status == "SUCCEEDED":
        return JobState.SUCCEEDED, reason
    if aws_status == "FAILED":
        return (JobState.CANCELLED if _is_fabric_cancel(reason) else JobState.FAILED), reason
    return JobState.PENDING, f"unknown AWS Batch status {aws_status}"


def job_status(job_id: str, job: dict[str, Any], *, region: str, job_queue: str, log_group: str) -> JobStatus:
    """A describe_jobs entry as the fabric's JobStatus of `job_id`."""
    aws_status = str(job.get("status", ""))
    created = _ms_to_datetime(job.get("createdAt"))
    state, message = map_job_state(aws_status, str(job.get("statusReason", "")), created)
    lost = lost_class(job) if state == JobState.FAILED else None
    if lost:
        state = JobState.LOST
    stream = log_stream(job)
    return JobStatus(
        job_id=job_id,
        state=state,
        message=message,
        exit_code=_exit_code(job),
        started_at=_ms_to_datetime(job.get("startedAt")),
        finished_at=_ms_to_datetime(job.get("stoppedAt")),
        logs_url=logs_console_url(region, log_group, stream) if stream else None,
        details={
            "aws_status": aws_status,
            "aws_job_id": job.get("jobId"),
            "job_queue": job_queue,
            "log_stream": stream,
            "attempts": len(job.get("attempts") or []),
            **({"class": lost} if lost else {}),
        },
    )


def queue_probe(
    job_queue: str,
    compute_environment: str | None,
    queue: dict[str, Any] | None,
    environment: dict[str, Any] | None,
) -> PoolProbe:
    """Health from the queue (must be ENABLED+VALID) and the named compute environment."""
    details: dict[str, Any] = {"job_queue": job_queue}
    if queue is None:
        return PoolProbe(health=Health.UNHEALTHY, reason=f"job queue {job_queue} not found", details=details)
    details.update(queue_state=queue.get("state"), queue_status=queue.get("status"))
    if queue.get("state") != "ENABLED" or queue.get("status") != "VALID":
        reason = f"job queue {queue.get('state')}/{queue.get('status')}: {queue.get('statusReason', '')}"
        return PoolProbe(health=Health.UNHEALTHY, reason=reason.rstrip(": "), details=details)
    if not compute_environment:
        return PoolProbe(health=Health.HEALTHY, details=details)
    if environment is None:
        return PoolProbe(health=Health.UNHEALTHY, details=details,
                         reason=f"compute environment {compute_environment} not found")
    details.update(_environment_details(environment))
    if environment.get("state") != "ENABLED" or environment.get("status") != "VALID":
        reason = f"compute environment {environment.get('state')}/{environment.get('status')}"
        if environment.get("statusReason"):
            reason += f": {environment['statusReason']}"
        return PoolProbe(health=Health.DEGRADED, reason=reason, details=details)
    return PoolProbe(health=Health.HEALTHY, details=details)


def _environment_details(environment: dict[str, Any]) -> dict[str, Any]:
    resources = environment.get("computeResources") or {}
    details: dict[str, Any] = {
        "compute_environment": environment.get("computeEnvironmentName"),
        "compute_environment_state": environment.get("state"),
        "compute_environment_status": environment.get("status"),
        "compute_environment_type": environment.get("type"),
    }
    for key in ("maxvCpus", "minvCpus", "desiredvCpus", "instanceTypes", "type"):
        if key in resources:
            details["compute_resources_" + key if key == "type" else key] = resources[key]
    return details
