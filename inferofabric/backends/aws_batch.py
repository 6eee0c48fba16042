"""AWS Batch back end: one pool = one job queue in one account and region.

Why it looks the way it does:

* AWS Batch has no idempotency token, so the deterministic job id is used as the Batch *job name*
  and `launch` first looks for a job with that name in the queue. `submit_job` itself goes through a
  client that never retries: a read timeout must not silently submit a second copy; the activity's
  own retry comes back through the look-up instead.
* Job definitions are shared by content: the name is a hash of the container properties (image,
  command, vCPUs, memory, GPUs, role, secrets), so re-launching the same image reuses one revision.
* Secret environment values never reach Batch: each one is stored in Secrets Manager under
  `inferofabric/<job_id>/<VAR>` and only its ARN is put in the job definition. They are deleted by
  `cancel` and once `status` sees the job finished.
* Every API error is sorted into the fabric's vocabulary: transient (BackendUnavailable),
  refused for good (JobRejected) or misconfigured (BackendConfigError).

This module makes the API calls. What it sends and reads is pure and lives beside it, split along
the same seams as the Kubernetes back end: aws_batch_config.py (the pool's `aws:` settings),
aws_batch_jobs.py (job names, tags, job definitions and submit requests built from a JobRequest),
aws_batch_status.py (a described job into a JobStatus; a queue into the pool's health) and
aws_batch_errors.py (botocore errors sorted into the fabric's); aws_batch_session.py turns the
credentials into a boto3 session. The names other code imports from
here (`AwsBatchBackend`, `AwsBatchConfig`, `CANCEL_REASON`, ...) are re-exported: see `__all__`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import boto3
import botocore.exceptions
from pydantic import BaseModel

from inferofabric.backends.aws_batch_config import (
    DEFAULT_LOG_GROUP,
    AwsBatchConfig,
    AwsCredentials,
    env_secret_resolver,
)
from inferofabric.backends.aws_batch_errors import error_code, translate_error
from inferofabric.backends.aws_batch_jobs import (
    CANCEL_REASON,
    FABRIC_JOB_NAME_RE,
    SECRET_PREFIX,
    TAG_JOB,
    TAG_WORKLOAD,
    batch_job_name,
    container_properties,
    job_definition_name,
    secret_name,
    submit_request,
)
from inferofabric.backends.aws_batch_session import CLIENT_CONFIG, SUBMIT_CONFIG, build_session
from inferofabric.backends.aws_batch_status import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    RUNNABLE_PATIENCE_SECONDS,
    job_status,
    log_stream,
    logs_console_url,
    lost_class,
    map_job_state,
    pick_job,
    queue_probe,
)
from inferofabric.backends.base import (
    Backend,
    BackendConfigError,
    BackendError,
    JobRejected,
    JobRequest,
    JobState,
    JobStatus,
    PoolProbe,
    checked_job_id,
)
from inferofabric.models.common import Health
from inferofabric.models.pool import PoolSpec

# What other code imports from here, wherever it now lives (tests, docs, the e2e suite).
__all__ = [
    "ACTIVE_STATUSES", "CANCEL_REASON", "CLIENT_CONFIG", "DEFAULT_LOG_GROUP", "FINISHED_STATUSES",
    "RUNNABLE_PATIENCE_SECONDS", "SUBMIT_CONFIG", "AwsBatchBackend", "AwsBatchConfig", "AwsCredentials",
    "batch_job_name", "container_properties", "env_secret_resolver", "job_definition_name", "logs_console_url",
    "lost_class", "map_job_state", "secret_name", "translate_error",
]

log = logging.getLogger(__name__)


class AwsBatchBackend(Backend):
    """A pool backed by one AWS Batch job queue."""

    kind: ClassVar[str] = "aws-batch"
    config_model: ClassVar[type[BaseModel] | None] = AwsBatchConfig
    config: AwsBatchConfig

    def __init__(
        self, pool: PoolSpec, home: Path, secret_resolver: Callable[[str], str] | None = None
    ) -> None:
        super().__init__(pool, home)
        if pool.region in ("", "local"):
            raise BackendConfigError(f"pool {pool.name!r}: aws-batch needs `region:` (for example us-east-1)")
        # The control plane may also assign this attribute after construction: clients are built lazily.
        self.secret_resolver: Callable[[str], str] = secret_resolver or env_secret_resolver
        self._clients: dict[str, Any] = {}
        self._session: boto3.Session | None = None
        self._lock = threading.Lock()
        self._job_ids: dict[str, str] = {}  # Batch job name -> jobId seen last
        self._secrets_gone: set[str] = set()  # jobs whose Secrets Manager entries were removed

    # -- clients --

    @property
    def region(self) -> str:
        return self.pool.region

    def _client(self, service: str, *, submit: bool = False) -> Any:
        """One client per service per back end (the no-retry submit client is separate)."""
        key = f"{service}:submit" if submit else service
        with self._lock:
            if key not in self._clients:
                session = self._session_locked()
                self._clients[key] = session.client(
                    service,
                    region_name=self.region,
                    endpoint_url=self.config.endpoint_url,
                    config=SUBMIT_CONFIG if submit else CLIENT_CONFIG,
                )
            return self._clients[key]

    def _session_locked(self) -> boto3.Session:
        if self._session is None:
            self._session = self._build_session()
        return self._session

    def _build_session(self) -> boto3.Session:
        return build_session(self.pool.name, self.region, self.config, self.secret_resolver)

    @contextmanager
    def _calling(self, action: str, refused: type[BackendError] = BackendConfigError) -> Iterator[None]:
        """Run AWS calls, re-raising their errors as the fabric's error types."""
        try:
            yield
        except BackendError:
            raise
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise translate_error(error, action, refused) from None

    # -- job look-up --

    def _find_jobs(self, name: str) -> list[dict[str, Any]]:
        """Summaries of every job with this exact name in the queue, whatever their status.

        With `filters`, AWS ignores `jobStatus` and returns jobs in every status; the JOB_NAME
        filter is case-insensitive and treats a trailing `*` as a prefix, so matches are re-checked.
        """
        paginator = self._client("batch").get_paginator("list_jobs")
        pages = paginator.paginate(
            jobQueue=self.config.job_queue, filters=[{"name": "JOB_NAME", "values": [name]}]
        )
        return [job for page in pages for job in page.get("jobSummaryList", []) if job.get("jobName") == name]

    def _describe(self, job_id: str) -> dict[str, Any] | None:
        jobs = self._client("batch").describe_jobs(jobs=[job_id]).get("jobs", [])
        return jobs[0] if jobs else None

    def _lookup(self, name: str, *, use_cache: bool = False) -> dict[str, Any] | None:
        """Full description of the job that carries this name (see `pick_job`), or None.

        `use_cache` describes the job id seen last for this name directly (one call instead of two);
        `launch` never uses it, since it must see every job with the name.
        """
        if use_cache and name in self._job_ids:
            job = self._describe(self._job_ids[name])
            if job is not None:
                return job
        summary = pick_job(self._find_jobs(name))
        if summary is None:
            return None
        self._job_ids[name] = summary["jobId"]
        return self._describe(summary["jobId"])

    def _to_status(self, job_id: str, job: dict[str, Any]) -> JobStatus:
        return job_status(
            job_id, job, region=self.region, job_queue=self.config.job_queue, log_group=self.config.log_group
        )

    # -- launch --

    def launch(self, request: JobRequest) -> JobStatus:
        name = batch_job_name(request.job_id)
        with self._calling("launch: look-up", refused=JobRejected):
            existing = self._lookup(name)
        if existing is not None:
            log.info("aws-batch %s: job %s already exists (%s)", self.pool.name, name, existing.get("jobId"))
            return self._to_status(request.job_id, existing)
        with self._calling("launch", refused=JobRejected):
            secret_arns = self._store_secrets(request)
            definition = self._ensure_job_definition(container_properties(request, self.config, secret_arns))
            job_id = self._submit(request, name, definition)
            job = self._describe(job_id)
        log.info("aws-batch %s: submitted %s as %s", self.pool.name, name, job_id)
        if job is None:
            return JobStatus(job_id=request.job_id, state=JobState.PENDING, message="SUBMITTED",
                             details={"aws_job_id": job_id})
        return self._to_status(request.job_id, job)

    def _store_secrets(self, request: JobRequest) -> dict[str, str]:
        """Put each secret env value into Secrets Manager; return variable -> secret ARN."""
        arns: dict[str, str] = {}
        for variable in sorted(set(request.secret_env)):
            if variable not in request.env:
                raise JobRejected(f"secret variable {variable} has no resolved value")
            name = secret_name(request.job_id, variable)
            arns[variable] = self._put_secret(name, request.env[variable], request)
        return arns

    def _put_secret(self, name: str, value: str, request: JobRequest) -> str:
        """create_secret, or put_secret_value when it exists already (a retried launch)."""
        client = self._client("secretsmanager")
        try:
            answer = client.create_secret(
                Name=name,
                SecretString=value,
                Description=f"inferofabric job {request.job_id}",
                Tags=[
                    {"Key": TAG_WORKLOAD, "Value": request.workload_id},
                    {"Key": TAG_JOB, "Value": request.job_id},
                ],
            )
        except botocore.exceptions.ClientError as error:
            if error_code(error) != "ResourceExistsException":
                raise
            answer = client.put_secret_value(SecretId=name, SecretString=value)
        return str(answer["ARN"])

    def _ensure_job_definition(self, props: dict[str, Any]) -> str:
        """ARN of the ACTIVE job definition for these properties, registering it the first time."""
        client = self._client("batch")
        name = job_definition_name(props)
        answer = client.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")
        found = answer.get("jobDefinitions", [])
        if found:
            return str(max(found, key=lambda d: d.get("revision", 0))["jobDefinitionArn"])
        registered = client.register_job_definition(
            jobDefinitionName=name,
            type="container",
            containerProperties=props,
            propagateTags=True,
            tags={"inferofabric:managed": "true"},
        )
        return str(registered["jobDefinitionArn"])

    def _submit(self, request: JobRequest, name: str, definition: str) -> str:
        kwargs = submit_request(request, name, definition, self.config.job_queue)
        return str(self._client("batch", submit=True).submit_job(**kwargs)["jobId"])

    # -- status / cancel / logs --

    def status(self, job_id: str) -> JobStatus:
        name = batch_job_name(job_id)
        with self._calling("status"):
            job = self._lookup(name, use_cache=True)
        if job is None:
            message = f"no job named {name} in {self.config.job_queue}"
            return JobStatus(job_id=job_id, state=JobState.LOST, message=message)
        status = self._to_status(job_id, job)
        if status.state.terminal:
            self._delete_secrets_quietly(job_id)
        return status

    def cancel(self, job_id: str) -> None:
        name = batch_job_name(job_id)
        with self._calling("cancel"):
            batch = self._client("batch")
            for job in self._find_jobs(name):
                if job.get("status") not in FINISHED_STATUSES:
                    batch.terminate_job(jobId=job["jobId"], reason=CANCEL_REASON)
                    log.info("aws-batch %s: terminated %s (%s)", self.pool.name, name, job["jobId"])
            self._delete_secrets(job_id)

    def _delete_secrets(self, job_id: str) -> None:
        """Remove every `inferofabric/<job_id>/...` secret, immediately (no recovery window)."""
        client = self._client("secretsmanager")
        prefix = f"{SECRET_PREFIX}/{job_id}/"
        pages = client.get_paginator("list_secrets").paginate(Filters=[{"Key": "name", "Values": [prefix]}])
        for page in pages:
            for secret in page.get("SecretList", []):
                if not str(secret.get("Name", "")).startswith(prefix):
                    continue
                try:
                    client.delete_secret(SecretId=secret["ARN"], ForceDeleteWithoutRecovery=True)
                except botocore.exceptions.ClientError as error:
                    if error_code(error) != "ResourceNotFoundException":
                        raise

    def _delete_secrets_quietly(self, job_id: str) -> None:
        """Best-effort clean-up from `status`: a failure here must not hide the job's state."""
        try:
            self._delete_secrets(job_id)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            log.warning("aws-batch %s: could not delete secrets of %s: %s", self.pool.name, job_id, error)

    def logs(self, job_id: str, tail: int = 200) -> str:
        name = batch_job_name(checked_job_id(job_id))
        with self._calling("logs"):
            job = self._lookup(name, use_cache=True)
            stream = log_stream(job) if job else None
            if not stream:
                return "logs are not available yet (the job has no CloudWatch log stream)"
            try:
                answer = self._client("logs").get_log_events(
                    logGroupName=self.config.log_group, logStreamName=stream, limit=max(1, min(tail, 10_000)),
                    startFromHead=False,
                )
            except botocore.exceptions.ClientError as error:
                if error_code(error) == "ResourceNotFoundException":
                    return f"logs are not available yet (no log stream {stream} in {self.config.log_group})"
                raise
        return "\n".join(str(event.get("message", "")).rstrip("\n") for event in answer.get("events", []))

    # -- pool-level --

    def probe(self) -> PoolProbe:
        batch = self._client("batch")  # a wrong credentials reference raises BackendConfigError here
        try:
            with self._calling("probe"):
                queues = batch.describe_job_queues(jobQueues=[self.config.job_queue])
                queue = next(iter(queues.get("jobQueues", [])), None)
                environment = self._describe_compute_environment()
        except BackendConfigError as error:
            # The API refused us (bad keys, missing permission): a pool problem for the health
            # monitor to show, not a crash of the probe.
            return PoolProbe(health=Health.UNHEALTHY, reason=str(error))
        return queue_probe(self.config.job_queue, self.config.compute_environment, queue, environment)

    def _describe_compute_environment(self) -> dict[str, Any] | None:
        if not self.config.compute_environment:
            return None
        answer = self._client("batch").describe_compute_environments(
            computeEnvironments=[self.config.compute_environment]
        )
        return next(iter(answer.get("computeEnvironments", [])), None)

    def list_jobs(self) -> list[str]:
        with self._calling("list jobs"):
            summaries = self._active_jobs()
            names = {s["jobName"] for s in summaries if FABRIC_JOB_NAME_RE.match(s["jobName"])}
            others = [s["jobId"] for s in summaries if s["jobName"] not in names]
            names.update(self._tagged_names(others))
        return sorted(names)

    def snapshot(self, known: list[str]) -> dict[str, JobStatus]:
        """Every fabric job of the queue in few calls: list the live ones (per status, paged), then
        describe them and the known ones that finished, 100 ids per describe_jobs."""
        found: dict[str, JobStatus] = {}
        by_name = {batch_job_name(job_id): job_id for job_id in known}
        with self._calling("watch jobs"):
            batch_ids = {s["jobId"] for s in self._active_jobs()}
            batch_ids |= {cached for job_id in known if (cached := self._job_ids.get(batch_job_name(job_id)))}
            ordered = sorted(batch_ids)
            for start in range(0, len(ordered), 100):
                for job in self._client("batch").describe_jobs(jobs=ordered[start : start + 100]).get("jobs", []):
                    name = str(job.get("jobName", ""))
                    # The fabric's tag names the job; a fabric id is its own name (DNS labels pass
                    # batch_job_name unchanged) when tags are not returned.
                    job_id = (job.get("tags") or {}).get(TAG_JOB) or by_name.get(name) or (
                        name if FABRIC_JOB_NAME_RE.match(name) else None)
                    if not job_id:
                        continue
                    self._job_ids[job["jobName"]] = job["jobId"]
                    status = self._to_status(job_id, job)
                    previous = found.get(job_id)
                    if previous is None or (previous.state.terminal and not status.state.terminal):
                        found[job_id] = status
        for job_id in known:
            if job_id not in found:
                found[job_id] = self.status(job_id)  # not seen before by this process: look it up by name
        for job_id, status in found.items():
            if status.state.terminal and job_id not in self._secrets_gone:
                self._delete_secrets_quietly(job_id)
                self._secrets_gone.add(job_id)
        return found

    def _active_jobs(self) -> list[dict[str, Any]]:
        """Summaries of the queue's live jobs, one paged list_jobs per live status. (The paging is
        done by hand: botocore's list_jobs paginator came back empty against moto's server.)"""
        batch = self._client("batch")
        jobs: list[dict[str, Any]] = []
        for status in ACTIVE_STATUSES:
            kwargs: dict[str, Any] = {"jobQueue": self.config.job_queue, "jobStatus": status}
            while True:
                page = batch.list_jobs(**kwargs)
                jobs += page.get("jobSummaryList", [])
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
        return jobs

    def _tagged_names(self, job_ids: list[str]) -> set[str]:
        """Names of the jobs (by id) that carry the fabric's tag: describe_jobs takes 100 at a time."""
        names: set[str] = set()
        for start in range(0, len(job_ids), 100):
            for job in self._client("batch").describe_jobs(jobs=job_ids[start : start + 100]).get("jobs", []):
                if TAG_WORKLOAD in (job.get("tags") or {}):
                    names.add(job["jobName"])
        return names
