"""GCP Batch back end: one pool = one project + location of Google Cloud Batch.

Uses the official `google-cloud-batch` client over its REST transport (plain HTTPS, so it works
through proxies and against a local fake). Every call carries a short timeout and no client-side
retry: Temporal's activity retries are the single retry loop, so a dead endpoint fails fast with
BackendUnavailable instead of blocking a worker thread for the client's default 60 s.

Secrets never travel in the Job: variables named in `JobRequest.secret_env` are sent as
`Environment.secret_variables` references to Secret Manager secrets named
`inferofabric-<variable lower-cased>` (latest version), which the control plane must have created.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote

import google.auth
import requests
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth import aws, identity_pool, pluggable
from google.auth import credentials as gcreds
from google.auth import exceptions as auth_exc
from google.cloud import batch_v1, secretmanager_v1
from google.oauth2 import service_account
from google.protobuf import duration_pb2
from pydantic import Field, ValidationError, model_validator

from inferofabric.backends.base import (
    LOST_GONE,
    LOST_MAINTENANCE,
    LOST_NODE,
    LOST_RECLAIMED,
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

REQUEST_TIMEOUT_S = 5.0
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
JOB_ID_ENV = "INFEROFABRIC_JOB_ID"  # the fabric's own job id, readable back by list_jobs
WORKLOAD_LABEL = "inferofabric-workload"
TEAM_LABEL = "inferofabric-team"
ATTEMPT_LABEL = "inferofabric-attempt"
SECRET_PREFIX = "inferofabric-"

DEFAULT_MACHINE_TYPES: dict[str, str] = {
    "A100": "a2-highgpu-1g",
    "H100": "a3-highgpu-8g",
    "L4": "g2-standard-8",
    "T4": "n1-standard-8",
}
DEFAULT_ACCELERATOR_TYPES: dict[str, str] = {
    "A100": "nvidia-tesla-a100",
    "H100": "nvidia-h100-80gb",
    "L4": "nvidia-l4",
    "T4": "nvidia-tesla-t4",
}

_State = batch_v1.JobStatus.State
_STATES: dict[int, JobState] = {
    _State.STATE_UNSPECIFIED: JobState.PENDING,
    _State.QUEUED: JobState.PENDING,
    _State.SCHEDULED: JobState.PENDING,
    _State.RUNNING: JobState.RUNNING,
    _State.SUCCEEDED: JobState.SUCCEEDED,
    _State.FAILED: JobState.FAILED,
    _State.DELETION_IN_PROGRESS: JobState.CANCELLED,
}
_JOB_ID_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_EXIT_CODE_RE = re.compile(r"exit code (-?\d+)")
# GCP Batch's reserved exit codes: the VM, not the task, ended the run.
# https://cloud.google.com/batch/docs/troubleshooting#reserved-exit-codes
LOST_EXIT_CODES = {50001: LOST_RECLAIMED, 50002: LOST_NODE, 50003: LOST_NODE, 50004: LOST_NODE,
                   50006: LOST_MAINTENANCE}


class GcpCredentials(StrictModel):
    """Which credentials to use; at most one source. None set = application default credentials."""

    service_account_file: str | None = None
    workload_identity_config: str | None = Field(
        default=None, description="external-account (workload identity federation / OIDC) JSON file"
    )
    anonymous: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> GcpCredentials:
        paths = [self.service_account_file, self.workload_identity_config]
        if sum(path is not None for path in paths) + self.anonymous > 1:
            raise ValueError("set only one of service_account_file, workload_identity_config, anonymous")
        return self


class GcpBatchConfig(StrictModel):
    """The pool file's `gcp:` block. Machine/accelerator maps are merged over the defaults."""

    project: str = Field(min_length=1)
    location: str = Field(min_length=1)
    credentials: GcpCredentials | None = None
    endpoint: str | None = None
    machine_type: dict[str, str] = Field(default_factory=dict)
    accelerator_type: dict[str, str] = Field(default_factory=dict)
    service_account_email: str | None = None
    network: str | None = None

    @model_validator(mode="after")
    def _merge_defaults(self) -> GcpBatchConfig:
        self.machine_type = {**DEFAULT_MACHINE_TYPES, **self.machine_type}
        self.accelerator_type = {**DEFAULT_ACCELERATOR_TYPES, **self.accelerator_type}
        return self

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"


# ---- naming rules -----------------------------------------------------------------------------------


def batch_job_id(job_id: str) -> str:
    """The fabric job id made valid for Batch (`^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$`).

    Idempotent (a valid id is unchanged) so ids read back from Batch map to themselves. Ids that
    must be shortened get a hash suffix so two long ids differing only at the end stay distinct.
    """
    if _JOB_ID_RE.match(job_id):
        return job_id
    cleaned = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"j-{cleaned}".rstrip("-")
    if len(cleaned) > 63 or cleaned != job_id.lower():
        digest = hashlib.sha256(job_id.encode()).hexdigest()[:8]
        cleaned = f"{cleaned[:54].rstrip('-')}-{digest}"
    return cleaned


def label_value(value: str) -> str:
    """GCP label values: up to 63 lower-case letters, digits, '_' and '-'."""
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


def label_key(key: str) -> str:
    """GCP label keys: as values, but must start with a lower-case letter."""
    cleaned = label_value(key)
    return cleaned if cleaned[:1].isalpha() else f"l-{cleaned}"[:63]


def attempt_secret_id(job_id: str, variable: str) -> str:
    """The Secret Manager secret that holds one variable's value for one job attempt: created by the
    fabric at launch from its own sealed value, deleted when the job ends. Never shared across
    attempts, workloads or teams (a secret per variable name would be every team's at once)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{SECRET_PREFIX}{batch_job_id(job_id)}-{variable.lower()}")[:255]


# ---- error mapping --------------------------------------------------------------------------------


def _map_error(error: Exception, action: str) -> BackendError:
    """Translate client errors: refusals are JobRejected, anything transient is BackendUnavailable."""
    refusals = gexc.Forbidden | gexc.BadRequest | gexc.Unauthorized | gexc.FailedPrecondition | gexc.NotFound
    if isinstance(error, refusals):
        return JobRejected(f"GCP Batch refused {action}: {error}")
    if isinstance(error, gexc.TooManyRequests | gexc.ResourceExhausted):
        return BackendThrottled(f"GCP Batch throttled {action}: {error}")
    if isinstance(error, auth_exc.RefreshError) and not getattr(error, "retryable", False):
        return BackendConfigError(f"GCP credentials could not be refreshed for {action}: {error}")
    return BackendUnavailable(f"GCP Batch unavailable during {action}: {error}")


_TRANSIENT = (
    gexc.GoogleAPIError,
    requests.RequestException,
    auth_exc.TransportError,
    auth_exc.RefreshError,
    TimeoutError,
    ConnectionError,
)
# Every call: a short timeout and no client-side retry (Temporal's activity retry is the only loop).
_CALL: dict[str, Any] = {"retry": None, "timeout": REQUEST_TIMEOUT_S}


class GcpBatchBackend(Backend):
    kind = "gcp-batch"
    config_model = GcpBatchConfig
    config: GcpBatchConfig

    def __init__(self, pool: PoolSpec, home: Path) -> None:
        super().__init__(pool, home)
        self._secrets_gone: set[str] = set()  # Batch job names whose attempt secrets were deleted

    @classmethod
    def parse_config(cls, pool: PoolSpec) -> GcpBatchConfig:
        """The `gcp:` block, with `location` defaulting to the pool's region."""
        raw = {"location": pool.region, **pool.backend_config}
        try:
            return GcpBatchConfig.model_validate(raw)
        except ValidationError as error:
            raise BackendConfigError(f"pool {pool.name!r}: invalid gcp: block: {validation_message(error)}") from None

    # ---- client -----------------------------------------------------------------------------------

    @cached_property
    def client(self) -> batch_v1.BatchServiceClient:
        """Created on first use (instances stay cheap) and reused for every call of this backend."""
        options = ClientOptions(api_endpoint=self.config.endpoint) if self.config.endpoint else None
        return batch_v1.BatchServiceClient(
            credentials=self._credentials(), transport="rest", client_options=options
        )

    def _credentials(self) -> gcreds.Credentials:
        """Resolve the configured credential source; a bad reference is a configuration error."""
        source = self.config.credentials or GcpCredentials()
        try:
            if source.anonymous:
                return gcreds.AnonymousCredentials()
            if source.service_account_file is not None:
                return service_account.Credentials.from_service_account_file(
                    source.service_account_file, scopes=SCOPES
                )
            if source.workload_identity_config is not None:
                return _external_account(source.workload_identity_config)
            creds, _ = google.auth.default(scopes=SCOPES)
            return creds  # type: ignore[no-any-return]
        except (auth_exc.DefaultCredentialsError, OSError, ValueError, KeyError) as error:
            raise BackendConfigError(f"pool {self.pool.name!r}: GCP credentials: {error}") from None

    def _job_name(self, job_id: str) -> str:
        return f"{self.config.parent}/jobs/{batch_job_id(job_id)}"

    # ---- Backend interface ----------------------------------------------------------------------------

    def probe(self) -> PoolProbe:
        """List one job: proves the API answers and the credentials may read this project/location.

        Capacity is not discoverable from Batch (quota lives elsewhere), so the declared inventory is
        authoritative (`gpus=None`).
        """
        try:
            self.client.list_jobs(
                request=batch_v1.ListJobsRequest(parent=self.config.parent, page_size=1), **_CALL
            )
        except (gexc.Forbidden, gexc.Unauthorized, gexc.NotFound, gexc.BadRequest) as error:
            return PoolProbe(health=Health.UNHEALTHY, reason=f"GCP Batch refused list_jobs: {error.message}")
        except BackendConfigError as error:  # credentials missing or unusable: reachable but unusable
            return PoolProbe(health=Health.UNHEALTHY, reason=str(error))
        except _TRANSIENT as error:
            mapped = _map_error(error, "probe")
            if isinstance(mapped, BackendConfigError):
                return PoolProbe(health=Health.UNHEALTHY, reason=str(mapped))
            raise mapped from error
        return PoolProbe(health=Health.HEALTHY, details={"parent": self.config.parent})

    def launch(self, request: JobRequest) -> JobStatus:
        """Create the job; an existing job with the same id (a retried launch) counts as success."""
        if request.secret_env:
            self._store_secrets(request)
        job = self.build_job(request)
        try:
            created = self.client.create_job(
                parent=self.config.parent, job_id=batch_job_id(request.job_id), job=job, **_CALL
            )
        except gexc.Conflict:  # ALREADY_EXISTS: an earlier attempt of this launch got through
            return self.status(request.job_id)
        except _TRANSIENT as error:
            raise _map_error(error, "create_job") from error
        return self._to_status(request.job_id, created)

    def status(self, job_id: str) -> JobStatus:
        try:
            job = self.client.get_job(name=self._job_name(job_id), **_CALL)
        except gexc.NotFound:
            return JobStatus(job_id=job_id, state=JobState.LOST, message="GCP Batch does not know this job")
        except _TRANSIENT as error:
            raise _map_error(error, "get_job") from error
        return self._ended_cleanly(self._to_status(job_id, job), job)

    def _ended_cleanly(self, status: JobStatus, job: batch_v1.Job) -> JobStatus:
        """A job that ended gives its secrets back (once)."""
        if status.state.terminal and job.name not in self._secrets_gone and any(
                g.task_spec.environment.secret_variables for g in job.task_groups):
            self._delete_secrets(job)
        return status

    def cancel(self, job_id: str) -> None:
        """Start deleting the job (Batch stops its tasks). The long-running operation is not awaited:
        the job shows DELETION_IN_PROGRESS (cancelled) at once and then disappears (lost)."""
        try:
            job = self.client.get_job(name=self._job_name(job_id), **_CALL)
            self._delete_secrets(job)
            self.client.delete_job(name=self._job_name(job_id), **_CALL)
        except gexc.NotFound:
            return
        except _TRANSIENT as error:
            raise _map_error(error, "delete_job") from error

    def logs(self, job_id: str, tail: int = 200) -> str:
        """A Cloud Logging console link, not the lines themselves.

        Batch writes task output to Cloud Logging (logs policy CLOUD_LOGGING); reading it needs the
        Logging API, which this back end does not call (and the test fake does not serve), so the
        caller gets the link filtered on the job's uid. `tail` is ignored.
        """
        status = self.status(checked_job_id(job_id))
        if status.logs_url is None:
            return f"GCP Batch job {job_id} not found; no logs link available."
        return f"Logs of GCP Batch job {job_id} are in Cloud Logging: {status.logs_url}"

    def list_jobs(self) -> list[str]:
        """Unfinished jobs in this project/location carrying the fabric's workload label.

        Filtering is client-side (the server-side filter syntax is not relied on). Ids are the
        fabric's own job ids, read back from the job's environment.
        """
        try:
            request = batch_v1.ListJobsRequest(parent=self.config.parent)
            jobs = list(self.client.list_jobs(request=request, **_CALL))
        except _TRANSIENT as error:
            raise _map_error(error, "list_jobs") from error
        return [_fabric_job_id(job) for job in jobs if _is_live_fabric_job(job)]

    # ---- job construction ---------------------------------------------------------------------------

    def snapshot(self, known: list[str]) -> dict[str, JobStatus]:
        """Every fabric job of the project/location from one (paged) list call."""
        try:
            jobs = list(self.client.list_jobs(request=batch_v1.ListJobsRequest(parent=self.config.parent), **_CALL))
        except _TRANSIENT as error:
            raise _map_error(error, "list_jobs") from error
        wanted = set(known)
        found: dict[str, JobStatus] = {}
        for job in jobs:
            if WORKLOAD_LABEL not in job.labels:
                continue
            job_id = _fabric_job_id(job)
            if job_id in wanted or _is_live_fabric_job(job):
                found[job_id] = self._ended_cleanly(self._to_status(job_id, job), job)
        for job_id in wanted - found.keys():
            found[job_id] = JobStatus(job_id=job_id, state=JobState.LOST, message="GCP Batch job not found",
                                      details={"class": LOST_GONE})
        return found

    def build_job(self, request: JobRequest) -> batch_v1.Job:
        """The Batch Job for one attempt: a single task running the container on GPU instances."""
        spec = request.spec
        task = batch_v1.TaskSpec(
            runnables=[batch_v1.Runnable(container=_container(request))],
            compute_resource=batch_v1.ComputeResource(
                cpu_milli=int(spec.resources.cpu * 1000),
                memory_mib=spec.resources.memory_bytes // 2**20,
            ),
            max_retry_count=spec.max_retries,
            environment=self._environment(request),
        )
        if spec.max_runtime_seconds is not None:
            task.max_run_duration = duration_pb2.Duration(seconds=spec.max_runtime_seconds)
        return batch_v1.Job(
            task_groups=[batch_v1.TaskGroup(task_spec=task, task_count=1, parallelism=1)],
            allocation_policy=self._allocation_policy(request),
            labels=_labels(request),
            logs_policy=batch_v1.LogsPolicy(destination=batch_v1.LogsPolicy.Destination.CLOUD_LOGGING),
        )

    def _environment(self, request: JobRequest, references: dict[str, str] | None = None) -> batch_v1.Environment:
        """Plain variables by value; secret variables only as references to this attempt's secrets."""
        secret = set(request.secret_env)
        variables = {k: v for k, v in request.env.items() if k not in secret}
        variables[JOB_ID_ENV] = request.job_id
        if references is None:
            references = {name: f"projects/{self.config.project}/secrets/{attempt_secret_id(request.job_id, name)}"
                                f"/versions/latest" for name in request.secret_env}
        return batch_v1.Environment(variables=variables, secret_variables=references)

    @cached_property
    def secret_manager(self) -> secretmanager_v1.SecretManagerServiceClient:
        options = ClientOptions(api_endpoint=self.config.endpoint) if self.config.endpoint else None
        return secretmanager_v1.SecretManagerServiceClient(
            credentials=self._credentials(), transport="rest", client_options=options
        )

    def _store_secrets(self, request: JobRequest) -> None:
        """Put each secret variable's (unsealed) value in a Secret Manager secret of this attempt's own.
        A retried launch finds the secret and adds the value again as its latest version."""
        parent = f"projects/{self.config.project}"
        labels = {"inferofabric-job": label_value(batch_job_id(request.job_id)),
                  "inferofabric-team": label_value(request.spec.team)}
        for name in request.secret_env:
            secret_id = attempt_secret_id(request.job_id, name)
            try:
                with contextlib.suppress(gexc.Conflict):  # a retried launch: the secret is there
                    self.secret_manager.create_secret(
                        parent=parent, secret_id=secret_id,
                        secret=secretmanager_v1.Secret(
                            replication=secretmanager_v1.Replication(
                                automatic=secretmanager_v1.Replication.Automatic()),
                            labels=labels),
                        **_CALL)
                payload = secretmanager_v1.SecretPayload(data=request.env[name].encode())
                self.secret_manager.add_secret_version(parent=f"{parent}/secrets/{secret_id}", payload=payload, **_CALL)
            except _TRANSIENT as error:
                raise _map_error(error, "store a secret in Secret Manager") from error

    def _delete_secrets(self, job: batch_v1.Job) -> None:
        """Remove the attempt's secrets (best effort: a failure is retried at the next look)."""
        for group in job.task_groups:
            for reference in group.task_spec.environment.secret_variables.values():
                name = str(reference).split("/versions/", 1)[0]
                try:
                    self.secret_manager.delete_secret(name=name, **_CALL)
                except gexc.NotFound:
                    continue
                except _TRANSIENT as error:
                    log.warning("gcp pool %s: could not delete secret %s: %s", self.pool.name, name, error)
                    return
        self._secrets_gone.add(job.name)

    def _allocation_policy(self, request: JobRequest) -> batch_v1.AllocationPolicy:
        """GPU instances (machine type + accelerators, drivers installed) in the configured location."""
        policy = batch_v1.AllocationPolicy()
        if request.gpus > 0:
            policy.instances = [
                batch_v1.AllocationPolicy.InstancePolicyOrTemplate(
                    policy=self._instance_policy(request), install_gpu_drivers=True
                )
            ]
        if self.config.service_account_email:
            policy.service_account = batch_v1.ServiceAccount(email=self.config.service_account_email)
        if self.config.network:
            interface = batch_v1.AllocationPolicy.NetworkInterface(network=self.config.network)
            policy.network = batch_v1.AllocationPolicy.NetworkPolicy(network_interfaces=[interface])
        return policy

    def _instance_policy(self, request: JobRequest) -> batch_v1.AllocationPolicy.InstancePolicy:
        gpu_type = request.gpu_type or ""
        if gpu_type not in self.config.machine_type or gpu_type not in self.config.accelerator_type:
            raise JobRejected(f"pool {self.pool.name!r} has no machine/accelerator type for GPU {gpu_type!r}")
        accelerator = batch_v1.AllocationPolicy.Accelerator(
            type_=self.config.accelerator_type[gpu_type], count=request.gpus
        )
        return batch_v1.AllocationPolicy.InstancePolicy(
            machine_type=self.config.machine_type[gpu_type], accelerators=[accelerator]
        )

    # ---- status ---------------------------------------------------------------------------------------

    def _to_status(self, job_id: str, job: batch_v1.Job) -> JobStatus:
        """Map a Batch job to JobStatus; the message is the latest status event (why it waits/failed)."""
        state = _STATES.get(int(job.status.state), JobState.PENDING)
        message = job.status.status_events[-1].description if job.status.status_events else ""
        found = _EXIT_CODE_RE.search(message) if state is JobState.FAILED else None
        exit_code = int(found.group(1)) if found else None
        details: dict[str, Any] = {"name": job.name, "uid": job.uid, "batch_state": _State(job.status.state).name}
        if exit_code in LOST_EXIT_CODES:
            state, details["class"] = JobState.LOST, LOST_EXIT_CODES[exit_code]
        return JobStatus(
            job_id=job_id,
            state=state,
            message=message,
            exit_code=exit_code,
            finished_at=_as_datetime(job.update_time) if state.terminal else None,
            logs_url=self.logs_url(job.uid),
            details=details,
        )

    def logs_url(self, uid: str) -> str:
        """Cloud Logging console query for the job's task logs (Batch labels them with job_uid)."""
        query = quote(f'labels.job_uid="{uid}"', safe="")
        return f"https://console.cloud.google.com/logs/query;query={query}?project={self.config.project}"


def _external_account(path: str) -> gcreds.Credentials:
    """Workload identity federation (OIDC/SAML file or URL, AWS, executable) from its JSON config.

    The type-specific loaders are used rather than `google.auth.load_credentials_from_file`, which is
    deprecated for unvalidated configs and calls STS at load time (no fast failure offline).
    """
    with open(path, encoding="utf-8") as handle:
        info = json.load(handle)
    if info.get("type") != "external_account":
        raise ValueError(f"{path}: expected an external_account credential configuration")
    source = info.get("credential_source", {})
    kind: Any = identity_pool.Credentials
    if str(source.get("environment_id", "")).startswith("aws"):
        kind = aws.Credentials
    elif "executable" in source:
        kind = pluggable.Credentials
    return kind.from_info(info, scopes=SCOPES)  # type: ignore[no-any-return]


def _container(request: JobRequest) -> batch_v1.Runnable.Container:
    """`command[0]` replaces the image ENTRYPOINT; the rest of command plus args are its arguments."""
    spec = request.spec
    container = batch_v1.Runnable.Container(image_uri=spec.image)
    if spec.command:
        container.entrypoint = spec.command[0]
        container.commands = [*spec.command[1:], *spec.args]
    else:
        container.commands = list(spec.args)
    return container


def _labels(request: JobRequest) -> dict[str, str]:
    """Request labels plus the fabric's own (which win), all made valid for GCP."""
    labels = {label_key(k): label_value(v) for k, v in request.labels.items()}
    labels[WORKLOAD_LABEL] = label_value(request.workload_id)
    labels[TEAM_LABEL] = label_value(request.spec.team)
    labels[ATTEMPT_LABEL] = label_value(str(request.attempt))
    return labels


def _as_datetime(value: Any) -> datetime | None:
    """proto-plus hands back timestamps as DatetimeWithNanoseconds (typed as Timestamp in the stubs);
    a plain datetime keeps JobStatus simple to serialize."""
    return datetime.fromtimestamp(value.timestamp(), UTC) if isinstance(value, datetime) else None


def _is_live_fabric_job(job: batch_v1.Job) -> bool:
    finished = {_State.SUCCEEDED, _State.FAILED, _State.DELETION_IN_PROGRESS}
    return WORKLOAD_LABEL in job.labels and job.status.state not in finished


def _fabric_job_id(job: batch_v1.Job) -> str:
    """The fabric's job id from the job's environment, else the Batch job id."""
    for group in job.task_groups:
        fabric_id = group.task_spec.environment.variables.get(JOB_ID_ENV)
        if fabric_id:
            return str(fabric_id)
    return str(job.name.rsplit("/", 1)[-1])
