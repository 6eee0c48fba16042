"""Azure Batch back end: one Azure Batch job (with one container task, `main`) per workload attempt.

The pool's `azure:` sub-document names the Batch account endpoint and the Batch pool the jobs run on;
the fabric does not create or size Batch pools, it only places jobs on one. Calls go through the
official `azure-batch` 15.x client with short timeouts and at most a couple of retries, so an outage
surfaces quickly as BackendUnavailable and Temporal (not the SDK) does the patient retrying.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import shlex
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from azure.batch import BatchClient
from azure.batch import models as batch_models
from azure.batch.models import _models as batch_internal_models
from azure.core.credentials import AzureNamedKeyCredential, TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from pydantic import Field, ValidationError, model_validator

from inferofabric.backends.base import (
    LOST_NODE,
    Backend,
    BackendConfigError,
    BackendError,
    BackendThrottled,
    BackendUnavailable,
    JobRejected,
    JobRequest,
    JobState,
    JobStatus,
    PoolProbe,
    checked_job_id,
)
from inferofabric.models.common import Health, StrictModel, validation_message
from inferofabric.models.pool import PoolSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

TASK_ID = "main"
STDOUT_FILE = "stdout.txt"
CANCEL_REASON = "cancelled by inferofabric"
# Job metadata keys: they mark the jobs the fabric owns (list_jobs) and say which attempt a job is.
WORKLOAD_KEY = "inferofabric-workload"
TEAM_KEY = "inferofabric-team"
ATTEMPT_KEY = "inferofabric-attempt"
JOB_ID_KEY = "inferofabric-job-id"
SECRET_ENV_PREFIX = "FABRIC_SECRET_"
SECRETS_REFUSED = "secrets are not supported on this azure pool unless allow_secret_env is set"

_INVALID_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_MAX_ID_LENGTH = 64


# ---- configuration -------------------------------------------------------------------------------
class SharedKeyCredentials(StrictModel):
    """Batch account shared key; the key itself is a secret looked up by name, never in the pool file."""

    account_name: str = Field(min_length=1)
    account_key_secret: str = Field(min_length=1)


class EntraSettings(StrictModel):
    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret_secret: str = Field(
        min_length=1, description="name of the secret holding the client secret"
    )


class EntraCredentials(StrictModel):
    """A Microsoft Entra service principal (client secret)."""

    entra: EntraSettings


class DefaultCredentials(StrictModel):
    """azure.identity.DefaultAzureCredential: managed identity, workload identity, az login, env vars."""

    default: Literal[True]


class AzureBatchConfig(StrictModel):
    """The `azure:` sub-document of an azure-batch pool file."""

    account_url: str = Field(
        min_length=1, description="Batch account endpoint, https://ACCOUNT.REGION.batch.azure.com"
    )
    pool_id: str = Field(
        min_length=1, description="the Azure Batch pool the jobs run on (created outside the fabric)"
    )
    credentials: SharedKeyCredentials | EntraCredentials | DefaultCredentials
    allow_secret_env: bool = Field(
        default=False, description="send secret env vars as plain task environment settings (see docs)"
    )
    timeout_seconds: float = Field(default=5.0, gt=0, le=60, description="connect and read timeout per call")
    retries: int = Field(default=1, ge=0, le=2, description="SDK retries per call; Temporal retries the rest")

    @model_validator(mode="after")
    def _tokens_need_tls(self) -> AzureBatchConfig:
        # azure-core refuses bearer tokens over plain http; say so when the pool file is loaded.
        if not self.account_url.startswith(("https://", "http://")):
            raise ValueError("account_url must start with https://")
        if not isinstance(self.credentials, SharedKeyCredentials) and not self.account_url.startswith(
            "https://"
        ):
            raise ValueError("entra and default credentials need an https:// account_url")
        return self


# ---- helpers -------------------------------------------------------------------------------------
def env_secret(name: str) -> str | None:
    """Default secret resolver: the value of env var FABRIC_SECRET_<NAME> (upper case, '-' -> '_')."""
    return os.environ.get(secret_env_var(name))


def secret_env_var(name: str) -> str:
    return SECRET_ENV_PREFIX + name.upper().replace("-", "_")


def azure_job_id(job_id: str) -> str:
    """The Azure Batch job id for a fabric job id: letters, digits, '-' and '_', at most 64 characters.

    Over-long ids are cut and given a hash suffix, so two long ids that share a prefix stay distinct
    and the mapping stays deterministic (a retried launch finds the same job).
    """
    cleaned = _INVALID_ID_CHARS.sub("-", job_id) or "job"
    if len(cleaned) <= _MAX_ID_LENGTH:
        return cleaned
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:10]
    return f"{cleaned[: _MAX_ID_LENGTH - len(digest) - 1]}-{digest}"


def command_line(command: list[str], args: list[str]) -> str:
    """The task command line, shell-quoted so each argument reaches the container intact.

    For a container task Batch passes the command line to the container as its command (after the
    image's ENTRYPOINT), so an empty command runs the image's default.
    """
    return shlex.join([*command, *args])


def tail_lines(text: str, tail: int) -> str:
    if tail <= 0:
        return ""
    return "".join(text.splitlines(keepends=True)[-tail:])


def _error_code(error: HttpResponseError) -> str:
    details = getattr(error, "error", None)
    return str(getattr(details, "code", None) or "")


def translate_error(error: AzureError, action: str) -> BackendError:
    """Map an SDK error to the fabric's: refusals are final, outages and throttling are retryable."""
    if isinstance(error, ClientAuthenticationError):
        return JobRejected(f"azure batch {action}: authentication failed: {error.message}")
    if isinstance(error, HttpResponseError) and error.status_code is not None:
        status, code = error.status_code, _error_code(error)
        if status == 429:
            return BackendThrottled(f"azure batch {action}: throttled: HTTP 429 {code}".rstrip())
        if status == 408 or status >= 500:
            return BackendUnavailable(f"azure batch {action}: HTTP {status} {code}".rstrip())
        if status in (401, 403):
            return JobRejected(
                f"azure batch {action}: access denied ({code or status}): check the credentials"
            )
        return JobRejected(f"azure batch {action}: HTTP {status} {code}: {error.message}")
    return BackendUnavailable(f"azure batch {action}: {type(error).__name__}: {error.message}")


def _text(value: Any) -> str:
    """An SDK enum or plain string as its wire value ("active", not "BatchPoolState.ACTIVE")."""
    return str(getattr(value, "value", value))


def _metadata(job: batch_models.BatchJob) -> dict[str, str]:
    return {item.name: item.value for item in job.metadata or []}


# ---- the back end --------------------------------------------------------------------------------
class AzureBatchBackend(Backend):
    """Runs each workload attempt as an Azure Batch job on the configured Batch pool."""

    kind: ClassVar[str] = "azure-batch"
    config_model = AzureBatchConfig
    config: AzureBatchConfig

    def __init__(
        self, pool: PoolSpec, home: Path, secret_resolver: Callable[[str], str | None] | None = None
    ) -> None:
        super().__init__(pool, home)
        # Tests and the worker may swap the resolver; the client is built lazily, after that.
        self.secret_resolver: Callable[[str], str | None] = secret_resolver or env_secret

    @classmethod
    def parse_config(cls, pool: PoolSpec) -> AzureBatchConfig:
        """Validate `azure:`; a bad pool file is a config error, never retried."""
        try:
            return AzureBatchConfig.model_validate(pool.backend_config)
        except ValidationError as error:
            raise BackendConfigError(
                f"pool {pool.name!r}: invalid azure: settings: {validation_message(error)}") from None

    # ---- client ------------------------------------------------------------------------------
    @cached_property
    def client(self) -> BatchClient:
        """One client per back end, failing fast: short timeouts, few retries, small back-off."""
        timeout = self.config.timeout_seconds
        return BatchClient(
            endpoint=self.config.account_url.rstrip("/"),
            credential=self._credential(),
            connection_timeout=timeout,
            read_timeout=timeout,
            retry_total=self.config.retries,
            retry_backoff_factor=0.2,
            retry_backoff_max=1,
            timeout=timeout * (self.config.retries + 1) + 2,
        )

    def _credential(self) -> AzureNamedKeyCredential | TokenCredential:
        creds = self.config.credentials
        if isinstance(creds, SharedKeyCredentials):
            return AzureNamedKeyCredential(creds.account_name, self._shared_key(creds.account_key_secret))
        if isinstance(creds, EntraCredentials):
            from azure.identity import ClientSecretCredential

            entra = creds.entra
            secret = self._secret(entra.client_secret_secret)
            return ClientSecretCredential(entra.tenant_id, entra.client_id, secret)
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    def _secret(self, name: str) -> str:
        value = self.secret_resolver(name)
        if not value:
            raise BackendConfigError(
                f"pool {self.pool.name!r}: secret {name!r} is not set "
                f"(the default resolver reads {secret_env_var(name)})"
            )
        return value

    def _shared_key(self, name: str) -> str:
        """The account key, checked to be base64 now (the SDK would fail obscurely mid-request)."""
        key = self._secret(name)
        try:
            base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise BackendConfigError(
                f"pool {self.pool.name!r}: secret {name!r} is not a base64 account key"
            ) from None
        return key

    def _call(self, action: str, operation: Callable[[], T]) -> T:
        """Run one SDK call; not-found and already-exists pass through for the caller to judge."""
        try:
            return operation()
        except (ResourceNotFoundError, ResourceExistsError):
            raise
        except AzureError as error:
            raise translate_error(error, action) from None

    # ---- launch --------------------------------------------------------------------------------
    def launch(self, request: JobRequest) -> JobStatus:
        """Create the job, then its task; either one already existing means a retried launch."""
        if request.secret_env and not self.config.allow_secret_env:
            raise JobRejected(SECRETS_REFUSED)
        job_id = azure_job_id(request.job_id)
        job_existed = self._create_job(job_id, request)
        task_existed = self._create_task(job_id, request)
        log.info(
            "azure batch job %s on pool %s launched (existing=%s)", job_id, self.config.pool_id, job_existed
        )
        if job_existed or task_existed:
            return self.status(request.job_id)
        return JobStatus(job_id=request.job_id, state=JobState.PENDING, details={"azure_job_id": job_id})

    def _create_job(self, job_id: str, request: JobRequest) -> bool:
        """Create the job; True when it already existed (HTTP 409 JobExists)."""
        try:
            self._call("create job", lambda: self.client.create_job(self._job_options(job_id, request)))
        except ResourceExistsError as error:
            if _error_code(error) == "JobExists":
                return True
            raise JobRejected(
                f"azure batch create job {job_id}: {_error_code(error)}: {error.message}"
            ) from None
        return False

    def _create_task(self, job_id: str, request: JobRequest) -> bool:
        """Add task `main`; True when it exists already or the job no longer takes tasks (it has run)."""
        try:
            self._call("create task", lambda: self.client.create_task(job_id, self._task_options(request)))
        except ResourceExistsError:
            return True  # TaskExists, or the job completed/is going away: status() reports which
        except ResourceNotFoundError:
            raise BackendUnavailable(f"azure batch job {job_id} vanished while adding its task") from None
        return False

    def _job_options(self, job_id: str, request: JobRequest) -> batch_models.BatchJobCreateOptions:
        spec = request.spec
        wall_clock = timedelta(seconds=spec.max_runtime_seconds) if spec.max_runtime_seconds else None
        metadata = {
            WORKLOAD_KEY: request.workload_id,
            TEAM_KEY: spec.team,
            ATTEMPT_KEY: str(request.attempt),
            JOB_ID_KEY: request.job_id,
        }
        return batch_models.BatchJobCreateOptions(
            id=job_id,
            display_name=f"{request.workload_id} attempt {request.attempt}"[:1024],
            pool_info=batch_models.BatchPoolInfo(pool_id=self.config.pool_id),
            priority=min(1000, spec.priority),
            constraints=batch_models.BatchJobConstraints(
                max_wall_clock_time=wall_clock, max_task_retry_count=spec.max_retries
            ),
            all_tasks_complete_mode=batch_models.BatchAllTasksCompleteMode.TERMINATE_JOB,
            metadata=[batch_models.BatchMetadataItem(name=k, value=v) for k, v in metadata.items()],
        )

    def _task_options(self, request: JobRequest) -> batch_models.BatchTaskCreateOptions:
        spec = request.spec
        return batch_models.BatchTaskCreateOptions(
            id=TASK_ID,
            command_line=command_line(spec.command, spec.args),
            container_settings=batch_models.BatchTaskContainerSettings(
                image_name=spec.image,
                container_run_options="--gpus all" if request.gpus > 0 else None,
                registry=self._registry(request),
                working_directory=batch_models.ContainerWorkingDirectory.CONTAINER_IMAGE_DEFAULT,
            ),
            environment_settings=self._environment(request),
            constraints=batch_models.BatchTaskConstraints(max_task_retry_count=spec.max_retries),
        )

    def _environment(self, request: JobRequest) -> list[batch_models.EnvironmentSetting]:
        """Plain env vars; secret ones only when the pool opted in (Batch has no secret references)."""
        secret = set(request.secret_env)
        return [
            batch_models.EnvironmentSetting(name=name, value=value)
            for name, value in request.env.items()
            if name not in secret or self.config.allow_secret_env
        ]

    @staticmethod
    def _registry(request: JobRequest) -> batch_models.ContainerRegistryReference | None:
        creds = request.image_pull_credentials
        if not creds:
            return None
        return batch_models.ContainerRegistryReference(
            registry_server=creds.get("server") or creds.get("registry"),
            username=creds.get("username"),
            password=creds.get("password"),
        )

    # ---- status --------------------------------------------------------------------------------
    def status(self, job_id: str) -> JobStatus:
        """The task's state, unless the fabric cancelled the job or the job is gone."""
        azure_id = azure_job_id(job_id)
        try:
            job = self._call("get job", lambda: self.client.get_job(azure_id))
        except ResourceNotFoundError:
            return JobStatus(job_id=job_id, state=JobState.LOST, message="azure batch job not found")
        reason = job.execution_info.termination_reason if job.execution_info else None
        details: dict[str, Any] = {"azure_job_id": azure_id, "job_state": _text(job.state)}
        if reason == CANCEL_REASON:
            return JobStatus(job_id=job_id, state=JobState.CANCELLED, message=reason, details=details)
        try:
            task = self._call("get task", lambda: self.client.get_task(azure_id, TASK_ID))
        except ResourceNotFoundError:
            return JobStatus(
                job_id=job_id, state=JobState.LOST, message="azure batch task not found", details=details
            )
        return self._task_status(job_id, job, task, details)

    def _task_status(
        self, job_id: str, job: batch_models.BatchJob, task: batch_models.BatchTask, details: dict[str, Any]
    ) -> JobStatus:
        info = task.execution_info
        details.update(task_state=_text(task.state), retry_count=info.retry_count if info else 0)
        started: datetime | None = info.start_time if info else None
        finished: datetime | None = info.end_time if info else None
        state, message, exit_code = self._task_outcome(task)
        failure = info.failure_info if info else None
        if state == JobState.FAILED and failure is not None and _text(failure.category).lower() == "servererror":
            # The node, not the task, failed (a lost or preempted node, a service fault).
            state, details["class"] = JobState.LOST, LOST_NODE
        if not state.terminal and job.state in ("completed", "terminating", "deleting"):
            reason = job.execution_info.termination_reason if job.execution_info else None
            state, message = (
                JobState.FAILED,
                f"azure batch job {_text(job.state)}: {reason or 'no reason given'}",
            )
        return JobStatus(
            job_id=job_id,
            state=state,
            message=message,
            exit_code=exit_code,
            started_at=started,
            finished_at=finished,
            details=details,
        )

    @staticmethod
    def _task_outcome(task: batch_models.BatchTask) -> tuple[JobState, str, int | None]:
        if task.state in ("active", "preparing"):
            return JobState.PENDING, "", None
        if task.state == "running":
            return JobState.RUNNING, "", None
        info = task.execution_info
        exit_code = info.exit_code if info else None
        failure = info.failure_info if info else None
        if failure is None and exit_code == 0:
            return JobState.SUCCEEDED, "", exit_code
        parts = [f"exit code {exit_code}"] if exit_code is not None else []
        if failure is not None:
            parts.append(f"{failure.code}: {failure.message}")
        return JobState.FAILED, "; ".join(parts) or "task failed without an exit code", exit_code

    # ---- cancel, logs, list ---------------------------------------------------------------------
    def cancel(self, job_id: str) -> None:
        """Terminate with the fabric's reason (so status says cancelled), then delete the job."""
        azure_id = azure_job_id(job_id)
        options = batch_internal_models.BatchJobTerminateOptions(termination_reason=CANCEL_REASON)
        try:
            self._call("terminate job", lambda: self.client.begin_terminate_job(azure_id, options))
        except ResourceNotFoundError:
            return
        except ResourceExistsError:
            pass  # already completed, terminating or being deleted: still delete it
        try:
            self._call("delete job", lambda: self.client.begin_delete_job(azure_id))
        except (ResourceNotFoundError, ResourceExistsError):
            return  # gone already, or already being deleted
        log.info("azure batch job %s cancelled", azure_id)

    def logs(self, job_id: str, tail: int = 200) -> str:
        """The last `tail` lines of the task's stdout.txt; "" until the task has written one."""
        azure_id = azure_job_id(checked_job_id(job_id))

        def read() -> bytes:
            return b"".join(self.client.download_task_file(azure_id, TASK_ID, STDOUT_FILE))

        try:
            data = self._call("get task file", read)
        except (ResourceNotFoundError, ResourceExistsError):
            return ""
        return tail_lines(data.decode("utf-8", errors="replace"), tail)

    def list_jobs(self) -> list[str]:
        """Fabric jobs (marked by metadata) on this Batch pool that are not completed or being deleted."""
        jobs = self._call("list jobs", lambda: list(self.client.list_jobs()))
        found: list[str] = []
        for job in jobs:
            metadata = _metadata(job)
            on_this_pool = job.pool_info is not None and job.pool_info.pool_id == self.config.pool_id
            if WORKLOAD_KEY in metadata and on_this_pool and job.state not in ("completed", "deleting"):
                found.append(metadata.get(JOB_ID_KEY, job.id))
        return found

    # ---- probe ----------------------------------------------------------------------------------
    def probe(self) -> PoolProbe:
        """Health of the Batch pool; capacity is not discovered (gpus=None: the declared inventory)."""
        pool_id = self.config.pool_id
        try:
            pool = self._call("get pool", lambda: self.client.get_pool(pool_id))
        except ResourceNotFoundError:
            return PoolProbe(health=Health.UNHEALTHY, reason=f"azure batch pool {pool_id!r} not found")
        except JobRejected as error:
            return PoolProbe(health=Health.UNHEALTHY, reason=str(error))
        details = {
            "state": _text(pool.state),
            "allocation_state": _text(pool.allocation_state),
            "vm_size": pool.vm_size,
            "current_dedicated_nodes": pool.current_dedicated_nodes,
            "current_low_priority_nodes": pool.current_low_priority_nodes,
            "target_dedicated_nodes": pool.target_dedicated_nodes,
            "target_low_priority_nodes": pool.target_low_priority_nodes,
        }
        health, reason = self._pool_health(pool)
        return PoolProbe(health=health, reason=reason, gpus=None, details=details)

    @staticmethod
    def _pool_health(pool: batch_models.BatchPool) -> tuple[Health, str]:
        if pool.state != "active":
            return Health.UNHEALTHY, f"azure batch pool {pool.id!r} is {_text(pool.state)}"
        if pool.allocation_state == "steady":
            return Health.HEALTHY, ""
        return Health.DEGRADED, f"azure batch pool {pool.id!r} is {_text(pool.allocation_state)}"
